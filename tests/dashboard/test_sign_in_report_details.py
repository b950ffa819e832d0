"""The customer view's last sign-in beyond the sign-in log's 30 days, through the functions against the sandbox and
Azurite (answers checked against the OpenAPI document by the client helper): the credential activity report's day,
labelled as from the report; a key the log saw is the log's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api.conftest import WAIT, Api, ids
from tests.dashboard.test_sign_in_details import READER_ROLES
from tests.rotation.conftest import ACCOUNT_SECRET, World


async def test_the_details_take_an_old_keys_last_sign_in_from_the_report_beyond_the_log(api: Api, world: World) -> None:
    world.seed_accounts()
    c = world.seed_customer("Longago", 10, roles=READER_ROLES)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "entraIdLicense": "P1", "signIns": [
        {"appId": c.app_id, "keyId": c.key_id, "createdDateTime": "-40d", "ipAddress": "192.0.2.80"}]}]})
    world.sb.control.set_sign_in_delay(0)
    doc = {"customer": "Longago", "destinations": [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": c.stack, "domain": c.domain, "account_secret": ACCOUNT_SECRET}}]}
    assert (await api.put(c, doc)).status == 201
    rotated = await api.call("rotations", "POST", body={**ids(c)}, params=WAIT)
    assert rotated.body["result"] == "rotated", rotated.text

    listed = await api.call("status", "GET")
    [status] = [t for t in listed.body["targets"] if t["tenantId"] == c.tenant_id]
    day = (datetime.now(UTC) - timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
    evidence = status["signInEvidence"]
    assert evidence["report"]["available"] is True
    assert {x["keyId"]: x["reportedLastSignIn"] for x in evidence["credentials"]}[c.key_id] == day.isoformat()
    details = await api.call("details", "GET", ids(c))
    credentials = {x["keyId"]: x for x in details.body["entra"]["credentials"]}
    assert credentials[c.key_id]["lastSignIn"] == day.isoformat()
    assert credentials[c.key_id]["lastSignInFrom"] == "report" and credentials[c.key_id]["lastSignInIp"] is None
    assert credentials[status["currentKeyId"]]["lastSignInFrom"] == "log"  # the rotator's own probe, in the log
