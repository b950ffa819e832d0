"""The customer view's last sign-in beyond the sign-in log's 30 days, through the functions against the sandbox and
Azurite (answers checked against the OpenAPI document by the client helper): the credential activity report's day,
labelled as from the report; a key the log saw is the log's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api.conftest import Api, ids
from tests.dashboard.test_sign_in_details import READER_ROLES, rotated_once
from tests.rotation.conftest import World


async def test_the_details_take_an_old_keys_last_sign_in_from_the_report_beyond_the_log(api: Api, world: World) -> None:
    world.seed_accounts()
    c = world.seed_customer("Longago", 10, roles=READER_ROLES)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "entraIdLicense": "P1", "signIns": [
        {"appId": c.app_id, "keyId": c.key_id, "createdDateTime": "-40d", "ipAddress": "192.0.2.80"}]}]})
    world.sb.control.set_sign_in_delay(0)
    _, status = await rotated_once(api, c)
    day = (datetime.now(UTC) - timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
    evidence = status["signInEvidence"]
    assert evidence["report"]["available"] is True
    assert {x["keyId"]: x["reportedLastSignIn"] for x in evidence["credentials"]}[c.key_id] == day.isoformat()
    details = await api.call("details", "GET", ids(c))
    credentials = {x["keyId"]: x for x in details.body["entra"]["credentials"]}
    assert credentials[c.key_id]["lastSignIn"] == day.isoformat()
    assert credentials[c.key_id]["lastSignInFrom"] == "report" and credentials[c.key_id]["lastSignInIp"] is None
    assert credentials[status["currentKeyId"]]["lastSignInFrom"] == "log"  # the rotator's own probe, in the log
