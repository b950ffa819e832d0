"""The sign-in evidence as the API shows it, through the functions against the sandbox and Azurite (every answer
checked against the OpenAPI document by the client helper): the status list's `signInEvidence` and `alerts`, the
details' per-credential first and last sign-in, and a policy's quiet period accepted or refused."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import WAIT, Api, Reply, ids
from tests.rotation.conftest import ACCOUNT_SECRET, ROTATOR_ROLE, Customer, World

READER_ROLES = (ROTATOR_ROLE, "AuditLog.Read.All", "Directory.Read.All")


async def rotated_once(api: Api, c: Customer, policy: dict[str, Any] | None = None) -> tuple[Reply, dict[str, Any]]:
    """The customer's target put with its Proofpoint destination (and policy) and rotated once: the status list and
    the target's row in it."""
    doc: dict[str, Any] = {"customer": c.name, "destinations": [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": c.stack, "domain": c.domain, "account_secret": ACCOUNT_SECRET}}]}
    if policy is not None:
        doc["policy"] = policy
    assert (await api.put(c, doc)).status == 201
    rotated = await api.call("rotations", "POST", body={**ids(c)}, params=WAIT)
    assert rotated.body["result"] == "rotated", rotated.text
    listed = await api.call("status", "GET")
    [status] = [t for t in listed.body["targets"] if t["tenantId"] == c.tenant_id]
    return listed, status


async def test_status_and_details_show_the_sign_in_evidence_per_credential(api: Api, world: World) -> None:
    world.seed_accounts()
    c = world.seed_customer("Evident", 10, roles=READER_ROLES)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "entraIdLicense": "P2"}]})
    world.sb.control.set_sign_in_delay(0)
    # Another client signed in with the current secret an hour ago, from its own address.
    assert world.sb.control.sign_in(c.tenant_id, c.app_id, c.secret, at="-1h", ip_address="192.0.2.77") is None
    listed, status = await rotated_once(api, c, policy={"retireQuietHours": 48})
    evidence = status["signInEvidence"]
    assert evidence["available"] is True and evidence["code"] is None and evidence["readAt"]
    signed = {x["keyId"]: x for x in evidence["credentials"]}
    assert signed[c.key_id]["lastSignInIp"] == "192.0.2.77"
    assert status["currentKeyId"] in signed  # the rotator's own verify probe, logged as Entra logs it
    assert status["alerts"] == []  # inside the grace period: the old key is kept, nothing to tell

    details = await api.call("details", "GET", ids(c))
    credentials = {x["keyId"]: x for x in details.body["entra"]["credentials"]}
    assert credentials[c.key_id]["lastSignInIp"] == "192.0.2.77"
    assert credentials[c.key_id]["firstSignIn"] == credentials[c.key_id]["lastSignIn"] is not None
    assert credentials[status["currentKeyId"]]["firstSignIn"] is not None
    target = await api.call("target", "GET", ids(c))
    assert target.body["policy"] == {"retireQuietHours": 48}
    assert c.secret not in details.text and c.secret not in listed.text


async def test_a_quiet_period_longer_than_the_logs_retention_is_refused(api: Api, world: World) -> None:
    c = world.seed_customer("Patient", 100)
    reply = await api.put(c, {"customer": "Patient", "policy": {"retireQuietHours": 721}})
    assert reply.status == 422 and reply.body["error"]["code"] == "InvalidTarget"
    assert "policy.retireQuietHours" in reply.body["error"]["message"]
