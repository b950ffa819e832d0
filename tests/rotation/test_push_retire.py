"""From verified to idle, then retirement: delivery to Proofpoint and the portal through the real adapters."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor, DestinationConfig, Secret, Stage
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_crash import TAKE_OVER, CrashPoint, kill_at

PORTAL_PATH = "/api/office365/azure-ad"


def destinations(world: World, customer: Customer) -> tuple[DestinationConfig, ...]:
    portal = DestinationConfig(
        "vircom-portal", "http", {"preset": "vircom-portal", "url": world.sb.endpoints["portal"] + PORTAL_PATH}
    )
    return (customer.proofpoint(), portal)


def org(world: World, customer: Customer) -> dict[str, Any]:
    return next(o for o in world.sb.control.state()["proofpoint"]["orgs"] if o["domain"] == customer.domain)


def portal_secrets(world: World, customer: Customer) -> list[str]:
    received = world.sb.control.state()["portal"]["received"]
    return [r["body"]["clientSecret"] for r in received if r["body"].get("tenantId") == customer.tenant_id]


async def setup(world: World, rotator: Rotator, *customers: Customer) -> None:
    world.seed_accounts()
    async with rotator() as svc:
        for c in customers:
            await svc.state.create_target(c.target(destinations(world, c)))


async def assert_delivered_everywhere(world: World, rotator: Rotator, customer: Customer) -> str:
    """The `current` Key Vault value is what Proofpoint and the portal hold, and it gets a token."""
    async with rotator() as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
        assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated"
        value = await svc.secrets.value(target, target.state.current_version)
        assert await svc.engine.probe.try_token(customer.tenant_id, customer.app_id, value) is None
    current = [v for v in world.versions(customer) if v["tags"].get("stage") == "current"]
    assert len(current) == 1 and current[0]["value"] == value.reveal()
    settings = org(world, customer)["settings"]
    assert settings["ad_key"] == value.reveal() and settings["application_id"] == customer.app_id
    assert portal_secrets(world, customer)[-1] == value.reveal()
    return target.state.current_key_id


DAY_AND_AN_HOUR = timedelta(hours=25)


async def after_proofpoints_sync(world: World, rotator: Rotator, at: timedelta | None = None, **settings: str) -> None:
    """A day and an hour later on both clocks (or at `at`): Proofpoint's daily sync ran with the key it holds,
    then a pass."""
    later = at or DAY_AND_AN_HOUR
    world.sb.control.set_clock(later.total_seconds())
    async with rotator(later, **settings) as svc:
        await svc.engine.run_pass(Actor.TIMER)


async def test_one_pass_delivers_everywhere_and_retires_after_the_grace_period(
    world: World, rotator: Rotator, put_semantics: str
) -> None:
    due = world.seed_customer("Fabrikam", 12)
    expired = world.seed_customer("Contoso", -10)
    healthy = world.seed_customer("Northwind", 300)
    await setup(world, rotator, due, expired, healthy)
    async with rotator() as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
    assert summary.by_result == {"rotated": 2, "healthy": 1}, summary.outcomes
    for c in (due, expired):
        await assert_delivered_everywhere(world, rotator, c)
        assert any(k["keyId"] == c.key_id for k in world.credentials(c)), "kept during the grace period"
    # Past the grace period, and Proofpoint's own daily sync ran with the new secrets.
    await after_proofpoints_sync(world, rotator)
    for c in (due, expired):
        assert org(world, c)["lastSyncStatus"] == "success"
        key_ids = [k["keyId"] for k in world.credentials(c)]
        assert c.key_id not in key_ids and len(key_ids) == 1
        await assert_delivered_everywhere(world, rotator, c)
    assert [k["keyId"] for k in world.credentials(healthy)] == [healthy.key_id]
    assert org(world, healthy)["settings"]["ad_key"] == healthy.secret
    assert portal_secrets(world, healthy) == []


async def test_pushing_the_same_version_twice_is_harmless(world: World, rotator: Rotator, put_semantics: str) -> None:
    due = world.seed_customer("Twice", 12)
    await setup(world, rotator, due)
    world.sb.control.add_fault("proofpoint", method="PUT", status=503, count=1)
    async with rotator() as svc:
        first = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        assert first.result == "push-incomplete"
        assert len(portal_secrets(world, due)) == 1
        again = await svc.engine.push_now(due.tenant_id, due.app_id)
        assert again.result == "rotated"
        twice = await svc.engine.push_now(due.tenant_id, due.app_id)
        assert twice.result == "nothing-to-push"
    assert len(portal_secrets(world, due)) == 1, "the acknowledged portal is not pushed again"
    await assert_delivered_everywhere(world, rotator, due)


@pytest.mark.parametrize("fault", [{"status": 502}, {"drop": True}], ids=["5xx", "dropped-connection"])
async def test_proofpoint_down_for_a_whole_run_retires_nothing_and_flags_the_target(
    world: World, rotator: Rotator, fault: dict[str, Any]
) -> None:
    due = world.seed_customer("Outage", 12)
    await setup(world, rotator, due)
    world.sb.control.add_fault("proofpoint", count=None, **fault)
    alerter = LogAlerter()
    for _ in range(2):
        async with rotator(alerter=alerter, PUSH_MAX_ATTEMPTS="2", RETIRE_GRACE_HOURS="0") as svc:
            outcome = await svc.engine.run_pass(Actor.TIMER)
            assert [o.result for o in outcome.outcomes] == ["push-incomplete"]
    async with rotator() as svc:
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert target.state.stage is Stage.VERIFIED
    assert target.state.acks["vircom-portal"].key_id == target.state.new_key_id, "the portal stays acknowledged"
    assert target.state.push_failures == {"proofpoint": 2}
    assert target.observed.needs_human.startswith("proofpoint")
    assert [a.condition for a in alerter.raised] == ["destination-failing"]
    assert any(k["keyId"] == due.key_id for k in world.credentials(due)), "the old secret stays live"
    assert org(world, due)["settings"]["ad_key"] == due.secret

    world.sb.control.clear_faults()
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
    assert [o.result for o in summary.outcomes] == ["rotated"]
    await assert_delivered_everywhere(world, rotator, due)
    await after_proofpoints_sync(world, rotator, RETIRE_GRACE_HOURS="0")
    assert due.key_id not in [k["keyId"] for k in world.credentials(due)]
    assert len(portal_secrets(world, due)) == 1


async def test_proofpoint_refusing_the_secret_flags_with_its_message_and_retires_nothing(
    world: World, rotator: Rotator
) -> None:
    due = world.seed_customer("Refused", 12)
    elsewhere = world.seed_customer("Elsewhere", 300)
    # Proofpoint's org is linked to another tenant: its Save cannot sign in with this app's secret.
    world.sb.control.seed({"proofpoint": {"orgs": [{"domain": due.domain, "stack": due.stack,
                                                    "tenantId": elsewhere.tenant_id, "settings": {}}]}})
    await setup(world, rotator, due)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert outcome.result == "push-incomplete"
    assert target.state.stage is Stage.VERIFIED
    assert "AADSTS" in target.observed.needs_human
    alert = next(a for a in alerter.raised if a.condition == "destination-failing")
    assert alert.details["error_code"] == "ProofpointRejected" and "AADSTS" in alert.message
    assert any(k["keyId"] == due.key_id for k in world.credentials(due))


RETIRE = CrashPoint("before removePassword", "graph", "POST", "/removePassword", "before")
PUSH_CRASH_POINTS = [
    CrashPoint("before the Proofpoint write", "proofpoint", "PUT", "/settings/azure", "before"),
    CrashPoint("after the Proofpoint write, before its answer", "proofpoint", "PUT", "/settings/azure", "after"),
    CrashPoint("before the portal write", "portal", "POST", PORTAL_PATH, "before"),
    CrashPoint("after the portal write, before its answer", "portal", "POST", PORTAL_PATH, "after"),
    CrashPoint("while moving Key Vault tags", "keyvault", "PATCH", "/secrets/ppsync-", "after"),
    RETIRE,
    CrashPoint("after removePassword, before its answer", "graph", "POST", "/removePassword", "after"),
]


@pytest.mark.parametrize("point", PUSH_CRASH_POINTS, ids=lambda p: p.name)
async def test_a_crash_from_verified_to_retired_converges_and_never_removes_a_used_secret(
    world: World, rotator: Rotator, point: CrashPoint
) -> None:
    due = world.seed_customer("Crashy", 12)
    await setup(world, rotator, due)
    world.env["RETIRE_GRACE_HOURS"] = "0"
    later = timedelta(0)
    if point.path == "/removePassword":
        # The old secret is removed only in a pass after Proofpoint's own sync ran with the new one: rotate, let a
        # day pass on both clocks, and kill the timer pass that retires.
        async with rotator() as svc:
            await svc.engine.run_pass(Actor.TIMER)
        assert due.key_id in [k["keyId"] for k in world.credentials(due)], "kept until Proofpoint's sync"
        later = DAY_AND_AN_HOUR
        world.sb.control.set_clock(later.total_seconds())
        await asyncio.to_thread(kill_at, world, due, point, "--clock-offset-seconds", str(later.total_seconds()),
                                "run")
    else:
        await asyncio.to_thread(kill_at, world, due, point)
    # Whatever the crash left, the secret Proofpoint holds is still a live credential.
    in_use = org(world, due)["settings"]["ad_key"]
    assert in_use in [k["secretText"] for k in world.credentials(due)]
    async with rotator(later + TAKE_OVER) as svc:
        await svc.engine.run_pass(Actor.TIMER)
    await after_proofpoints_sync(world, rotator, at=later + TAKE_OVER + DAY_AND_AN_HOUR if later else None)
    current_key = await assert_delivered_everywhere(world, rotator, due)
    assert [k["keyId"] for k in world.credentials(due)] == [current_key]


async def test_notify_only_waits_for_a_human_acknowledgement(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("ByHand", 12)
    world.seed_accounts()
    alerter = LogAlerter()
    async with rotator(alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await svc.state.create_target(due.target((DestinationConfig("paste", "notify-only", {}),)))
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        assert outcome.result == "push-incomplete"
        waiting = next(a for a in alerter.raised if a.condition == "notify-only-waiting")
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        assert target.secret_name in waiting.message
        value = await svc.secrets.value(target, target.state.new_version)
        assert value.reveal() not in waiting.message
        assert any(k["keyId"] == due.key_id for k in world.credentials(due)), "nothing retired while waiting"
        done = await svc.engine.acknowledge(due.tenant_id, due.app_id, "paste", target.state.new_key_id)
        assert done.result == "rotated"
    assert [k["keyId"] for k in world.credentials(due)] == [target.state.new_key_id]
    assert isinstance(value, Secret)
