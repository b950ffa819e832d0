"""Retirement on Entra's sign-in records, end to end: the real SDKs and the sign-in log adapter over HTTPS against the
sandbox (whose token endpoint logs every client-credentials sign-in, Proofpoint's syncs and the rotator's own probe
alike, visible after the log's delay), Azurite for the state. The old key goes only once the new key signed in after
the push; one still used by another client is kept and alerted, naming its address; a tenant without the licence
or the permission falls back to Proofpoint's own sync and says so."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor, SignInEvidence
from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts
from shared.sign_in_proof import EVIDENCE_UNAVAILABLE, OLD_KEY_STILL_USED
from tests.rotation.conftest import ROTATOR_ROLE, Customer, Rotator, World
from tests.rotation.test_push_retire import setup

READER_ROLES = (ROTATOR_ROLE, "AuditLog.Read.All", "Directory.Read.All")
HOUR = timedelta(hours=1)
DAY_AND_AN_HOUR = timedelta(hours=25)
GRACE_OVER = {"RETIRE_GRACE_HOURS": "0"}


def licensed(world: World, name: str, days_left: int = 12) -> Customer:
    """A customer whose tenant lets the rotator read its sign-in log (P1, both permissions consented)."""
    customer = world.seed_customer(name, days_left, roles=READER_ROLES)
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "entraIdLicense": "P1"}]})
    return customer


def live_key_ids(world: World, customer: Customer) -> set[str]:
    return {k["keyId"] for k in world.credentials(customer)}


async def status(rotator: Rotator, customer: Customer, at: timedelta) -> dict[str, Any]:
    async with rotator(at) as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    return status_document(target)


async def retire_details(rotator: Rotator, customer: Customer, at: timedelta) -> list[str]:
    async with rotator(at) as svc:
        events = await svc.state.events(customer.tenant_id, customer.app_id, 100)
    return [e.detail for e in events if e.step == "retire" and e.outcome == "superseded"]


async def run_pass(world: World, rotator: Rotator, at: timedelta, alerter: LogAlerter | None = None) -> None:
    world.sb.control.set_clock(at.total_seconds())
    async with rotator(at, alerter, **GRACE_OVER) as svc:
        await svc.engine.run_pass(Actor.TIMER)


async def test_the_old_key_waits_for_the_new_keys_sign_in_past_the_logs_delay(world: World, rotator: Rotator) -> None:
    due = licensed(world, "Evidenced")
    await setup(world, rotator, due)
    await run_pass(world, rotator, timedelta(0))
    # Rotated and pushed; the rotator's own probe signed in with the new key (logged, as Entra does): not proof.
    doc = await status(rotator, due, timedelta(0))
    new = doc["currentKeyId"]
    assert new != due.key_id and due.key_id in live_key_ids(world, due)
    assert doc["signInEvidence"]["available"] is True
    # Proofpoint's daily sync (24 h after the org was seeded) signs in with the new key; the log shows it 120 s
    # later (the default delay): a pass half a minute after the sync does not see it yet.
    sync = timedelta(hours=24, seconds=30)
    await run_pass(world, rotator, sync)
    assert due.key_id in live_key_ids(world, due), "the sync's sign-in is not in the log yet"
    await run_pass(world, rotator, sync + timedelta(minutes=3))
    assert live_key_ids(world, due) == {new}
    [detail] = await retire_details(rotator, due, sync + timedelta(minutes=3))
    assert f"key {due.key_id}" in detail and f"new key {new} signed in at" in detail and "quiet for 26 h" in detail
    doc = await status(rotator, due, sync + timedelta(minutes=3))
    signed = {c["keyId"]: c for c in doc["signInEvidence"]["credentials"]}
    assert signed[new]["lastSignInIp"] == "198.51.100.25"  # Proofpoint's stand-in's address


async def test_an_old_key_another_client_still_uses_is_kept_and_alerted_naming_its_address(
    world: World, rotator: Rotator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    due = licensed(world, "Forgotten")
    world.sb.control.set_sign_in_delay(0)
    await setup(world, rotator, due)
    alerter = LogAlerter()
    await run_pass(world, rotator, timedelta(0), alerter)
    world.sb.control.set_clock(DAY_AND_AN_HOUR.total_seconds())  # Proofpoint synced with the new key
    # A forgotten integration signs in with the old secret after the push.
    assert world.sb.control.sign_in(due.tenant_id, due.app_id, due.secret, ip_address="192.0.2.55",
                                    resource="Office 365 Exchange Online") is None
    for _ in range(2):  # alerted once, however many passes see it
        await run_pass(world, rotator, DAY_AND_AN_HOUR + timedelta(minutes=5), alerter)
    assert due.key_id in live_key_ids(world, due)
    used = [a for a in alerter.raised if a.condition == OLD_KEY_STILL_USED]
    assert len(used) == 1 and "192.0.2.55" in used[0].message and due.key_id in used[0].message
    async with rotator(DAY_AND_AN_HOUR + timedelta(minutes=5)) as svc:
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert OLD_KEY_STILL_USED in open_alerts(target, StatusPolicy(), svc.engine.clock.now())
    doc = status_document(target)
    signed = {c["keyId"]: c for c in doc["signInEvidence"]["credentials"]}
    assert signed[due.key_id]["lastSignInIp"] == "192.0.2.55"
    assert signed[due.key_id]["lastSignInResource"] == "Office 365 Exchange Online"
    # Quiet for the quiet period (26 h) plus the log's delay (the integration was fixed): the old key goes.
    later = DAY_AND_AN_HOUR + timedelta(hours=26, minutes=10)
    await run_pass(world, rotator, later, alerter)
    assert due.key_id not in live_key_ids(world, due)
    # Neither secret is in the rows (the evidence kept on the target's), the audit trail, the alerts or the log.
    new_secret = next(v["value"] for v in world.versions(due) if v["tags"].get("stage") == "current")
    async with rotator(later) as svc:
        stored = json.dumps(await svc.state.all_rows(), default=str)
        trail = json.dumps([vars(e) for e in await svc.state.events(due.tenant_id, due.app_id, 100)], default=str)
    told = json.dumps([vars(a) for a in alerter.raised], default=str) + caplog.text
    for secret in (due.secret, new_secret):
        assert secret not in stored and secret not in trail and secret not in told


@pytest.mark.parametrize(("roles", "licence", "code"), [
    (READER_ROLES, "free", "Authentication_RequestFromNonPremiumTenantOrB2CTenant"),  # consented, no P1/P2
    ((ROTATOR_ROLE,), "P1", "Authorization_RequestDenied"),  # licensed, AuditLog.Read.All not consented
], ids=["no-licence", "no-permission"])
async def test_a_tenant_that_refuses_the_log_falls_back_to_proofpoints_sync_and_says_so(
    world: World, rotator: Rotator, roles: tuple[str, ...], licence: str, code: str
) -> None:
    due = world.seed_customer("Unlicensed", 12, roles=roles)
    world.sb.control.seed({"tenants": [{"id": due.tenant_id, "entraIdLicense": licence}]})
    await setup(world, rotator, due)
    alerter = LogAlerter()
    await run_pass(world, rotator, timedelta(0), alerter)
    doc = (await status(rotator, due, timedelta(0)))["signInEvidence"]
    assert doc["available"] is False and doc["code"] == code
    assert doc["credentials"] == [] and doc["reason"]
    assert due.key_id in live_key_ids(world, due), "Proofpoint has not synced since the push"
    await run_pass(world, rotator, DAY_AND_AN_HOUR, alerter)
    assert due.key_id not in live_key_ids(world, due), "Proofpoint's own sync is the proof, as before"
    assert [a.condition for a in alerter.raised].count(EVIDENCE_UNAVAILABLE) == 1
    [detail] = await retire_details(rotator, due, DAY_AND_AN_HOUR)
    assert f"no sign-in evidence: the tenant refuses the sign-in log ({code})" in detail
    assert "proofpoint sync at" in detail


async def test_the_daily_scan_reads_the_log_only_for_a_target_whose_old_key_waits(
    world: World, rotator: Rotator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.adapters.signins import GraphSignInLog

    reads: list[str] = []
    real = GraphSignInLog.credential_sign_ins

    async def counted(self: GraphSignInLog, tenant_id: str, app_id: str, since: datetime,
                      probes: frozenset[str] = frozenset()) -> SignInEvidence:
        reads.append(tenant_id)
        return await real(self, tenant_id, app_id, since, probes)

    monkeypatch.setattr(GraphSignInLog, "credential_sign_ins", counted)
    healthy = [licensed(world, f"Healthy{i}", days_left=300) for i in range(3)]
    due = licensed(world, "Due")
    await setup(world, rotator, *healthy, due)
    await run_pass(world, rotator, timedelta(0))
    assert reads == [due.tenant_id], "the rotation's retire step only"
    await run_pass(world, rotator, HOUR)
    assert reads == [due.tenant_id] * 2, "the old key waits: read again; the healthy ones never"
