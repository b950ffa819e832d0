"""GET /api/targets/{tenantId}/{appId}/details and the status fields the dashboard reads (planned rotation, open
alerts), through the function against the sandbox and Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared import bootstrap
from shared.domain import Ack, DestinationConfig, Stage, Target
from shared.service import StatusPolicy, open_alerts, planned_rotation
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import ACCOUNT_SECRET, World


async def rotated_customer(api: Api, world: World):  # type: ignore[no-untyped-def]
    world.seed_accounts()
    c = world.seed_customer("Contoso", 10)
    doc = {"customer": "Contoso", "destinations": [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": c.stack, "domain": c.domain, "account_secret": ACCOUNT_SECRET}}]}
    assert (await api.put(c, doc)).status == 201
    rotated = await api.call("rotations", "POST", body={**ids(c)}, params=WAIT)
    assert rotated.body["result"] == "rotated", rotated.text
    return c


async def test_details_show_credentials_vault_versions_acknowledgements_and_audit(api: Api, world: World) -> None:
    c = await rotated_customer(api, world)
    reply = await api.call("details", "GET", ids(c))
    assert reply.status == 200, reply.text
    d = reply.body
    assert (d["customer"], d["status"], d["stage"]) == ("Contoso", "healthy", "idle")

    credentials = {x["keyId"]: x for x in d["entra"]["credentials"]}
    assert d["entra"]["error"] is None and set(credentials) == {x["keyId"] for x in world.credentials(c)}
    new = credentials[d["currentKeyId"]]
    assert new["madeByRotator"] is True and new["role"] == "current" and new["rotationId"]
    assert len(new["hint"]) == 3 and new["end"] and new["start"]
    old = credentials[c.key_id]
    assert old["madeByRotator"] is False and old["role"] == "superseded" and old["hint"] == c.secret[:3]

    versions = d["keyVault"]["versions"]
    assert d["keyVault"]["secretName"] == d["secretName"] and len(versions) == len(world.versions(c)) == 1
    assert versions[0]["tags"]["stage"] == "current" and versions[0]["tags"]["key-id"] == d["currentKeyId"]
    assert "value" not in versions[0]

    assert [x["name"] for x in d["destinations"]] == ["proofpoint"] and d["destinations"][0]["acknowledged"]
    assert d["destinations"][0]["acknowledgedAt"]
    steps = [e["step"] for e in d["events"]]
    assert steps and "create" in " ".join(steps) and d["events"][0]["at"] >= d["events"][-1]["at"]  # newest first
    assert all(e["actor"] for e in d["events"])

    # never a secret: neither the rotated value nor the old one, anywhere in the answer
    for version in world.versions(c):
        assert version["value"] not in reply.text
    assert c.secret not in reply.text


async def test_a_failing_graph_read_is_reported_in_its_section_not_as_a_failure(api: Api, world: World) -> None:
    c = world.seed_customer("Fabrikam", 100)
    await api.put(c)
    world.sb.control.add_fault("graph", method="GET", status=503, code="ServiceUnavailable", count=None)
    try:
        reply = await api.call("details", "GET", ids(c))
    finally:
        world.sb.control.clear_faults()
    assert reply.status == 200, reply.text
    assert reply.body["entra"]["credentials"] == [] and reply.body["entra"]["error"]["code"]
    assert reply.body["keyVault"] == {"secretName": reply.body["secretName"], "error": None, "versions": []}


async def test_details_of_an_unknown_target_or_a_bad_id_are_client_errors(api: Api, world: World) -> None:
    c = world.seed_customer("Nobody", 100)
    missing = await api.call("details", "GET", ids(c))
    assert (missing.status, missing.code) == (404, "TargetNotFound")
    bad = await api.call("details", "GET", {"tenantId": "not-a-guid", "appId": c.app_id})
    assert (bad.status, bad.code) == (400, "InvalidPath")
    wrong = await api.call("details", "POST", ids(c), {})
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET"


async def test_status_carries_the_planned_rotation_and_open_alerts(api: Api, world: World) -> None:
    due = world.seed_customer("Due", 10)
    expired = world.seed_customer("Expired", -2)
    await api.put(due, {"customer": "Due", "policy": {"renewBeforeDays": 20, "lifetimeDays": 90}})
    await api.put(expired)
    async with bootstrap.services() as svc:
        await svc.engine.run_pass(assess_only=True)  # observes every secret's expiry, rotates nothing
    docs = {d["customer"]: d for d in (await api.call("status")).body["targets"]}
    assert docs["Due"]["plannedRotation"], docs["Due"]
    planned = datetime.fromisoformat(docs["Due"]["plannedRotation"])
    assert planned == datetime.fromisoformat(docs["Due"]["expires"]) - timedelta(days=20)
    assert docs["Due"]["alerts"] == []
    assert docs["Expired"]["alerts"] == ["expired"]


def test_open_alerts_name_the_conditions_a_human_must_handle() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    policy = StatusPolicy(renew_before_days=30, stuck_after=timedelta(hours=24))
    helpdesk = DestinationConfig("helpdesk", "notify-only")
    target = Target("t", "a", "C", destinations=(helpdesk,))
    assert open_alerts(target, policy, now) == []
    waiting = target.with_state(stage=Stage.VERIFIED, new_key_id="k2", stage_since=now - timedelta(hours=1))
    assert open_alerts(waiting, policy, now) == ["notify-only-waiting"]
    acked = waiting.with_state(acks={"helpdesk": Ack("k2", now)})
    assert open_alerts(acked, policy, now) == []
    stale_ack = waiting.with_state(acks={"helpdesk": Ack("k1", now)})
    assert open_alerts(stale_ack, policy, now) == ["notify-only-waiting"]
    stuck = acked.with_state(stage_since=now - timedelta(hours=25))
    assert open_alerts(stuck, policy, now) == ["stuck"]
    failing = target.with_state(push_failures={"portal": 2}).with_observed(status="not-owner")
    assert open_alerts(failing, policy, now) == ["not-owner", "destination-failing"]
    refused = target.with_state(stage=Stage.PENDING, stage_since=now - timedelta(minutes=5)).with_observed(
        needs_human="verify-refused: Entra ID refused the new secret: AADSTS7000112: ...", error_code="AADSTS7000112")
    assert open_alerts(refused, policy, now) == ["verify-refused"]
    slow = refused.with_observed(needs_human="verify-timeout: the new secret still gets no token ...")
    assert open_alerts(slow.with_state(stage_since=now - timedelta(hours=25)), policy, now) == \
        ["stuck", "verify-timeout"]
    assert planned_rotation(target, policy) is None
    expiring = target.with_observed(expires=now + timedelta(days=40))
    assert planned_rotation(expiring, policy) == now + timedelta(days=10)
