"""Detection and rotation through the real adapters (Graph, Key Vault, Entra, Tables) against the sandbox."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor, Secret, Stage, Target
from tests.rotation.conftest import Customer, Rotator, World


async def register(svc, *customers: Customer, destinations: bool = False) -> None:  # type: ignore[no-untyped-def]
    for c in customers:
        await svc.state.create_target(c.target((c.proofpoint(),) if destinations else ()))


def rotator_made(world: World, customer: Customer) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in world.credentials(customer) if "rotation" in (c["displayName"] or "")]


async def test_each_status_is_detected(world: World, svc) -> None:  # type: ignore[no-untyped-def]
    healthy = world.seed_customer("Healthy", 200)
    due = world.seed_customer("Due", 10)
    expired = world.seed_customer("Expired", -3)
    missing = world.seed_customer("Missing", None)
    no_consent = world.seed_customer("NoConsent", 100, consent=False, owned=False)
    no_role = world.seed_customer("NoRole", 100, roles=())
    not_owner = world.seed_customer("NotOwner", 100, owned=False)
    gone = world.seed_customer("Gone", 100)
    targets = [healthy, due, expired, missing, no_consent, no_role, not_owner]
    await register(svc, *targets)
    await svc.state.create_target(Target(gone.tenant_id, "0000aaaa-0000-4000-8000-000000000000", "Gone"))

    # A dry run assesses without changing anything; the statuses come from a real look at Graph.
    statuses = {}
    for c in [healthy, due, expired, missing]:
        outcome = await svc.engine.rotate_now(c.tenant_id, c.app_id, dry_run=True)
        statuses[c.name] = (outcome.status, outcome.days_left)
    assert statuses["Healthy"][0] == "healthy" and statuses["Healthy"][1] in (199, 200)
    assert statuses["Due"][0] == "due" and statuses["Due"][1] in (9, 10)
    assert statuses["Expired"][0] == "expired" and statuses["Expired"][1] < 0
    assert statuses["Missing"] == ("missing", None)
    assert not rotator_made(world, due), "a dry run must not create anything"

    for c in (no_consent, no_role):
        outcome = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
        assert outcome.result == "unreachable", (c.name, outcome)
    t, _ = await svc.state.get_target(no_consent.tenant_id, no_consent.app_id)
    assert t.observed.status == "unreachable" and t.observed.error_code == "AADSTS700016"
    t, _ = await svc.state.get_target(no_role.tenant_id, no_role.app_id)
    assert t.observed.error_code == "Authorization_RequestDenied"
    # OwnedBy reads every app of the tenant: an app the rotator does not own is found, and is `not-owner`.
    outcome = await svc.engine.advance(not_owner.tenant_id, not_owner.app_id, Actor.TIMER)
    assert outcome.result == "not-owner" and "owner" in outcome.message
    assert outcome.days_left in (99, 100), "the app is read: how soon an admin must add the owner is known"
    outcome = await svc.engine.advance(gone.tenant_id, "0000aaaa-0000-4000-8000-000000000000", Actor.TIMER)
    assert outcome.result == "app-not-found"


async def test_a_pass_rotates_expired_due_and_missing_and_leaves_healthy_alone(world: World, rotator: Rotator) -> None:
    healthy = world.seed_customer("Healthy", 200)
    due = world.seed_customer("Due", 10)
    expired = world.seed_customer("Expired", -3)
    missing = world.seed_customer("Missing", None)
    async with rotator() as svc:
        await register(svc, healthy, due, expired, missing)
        summary = await svc.engine.run_pass(Actor.TIMER)
        assert summary.by_result == {"rotated": 3, "healthy": 1}, summary.outcomes
        for c in (due, expired, missing):
            target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
            assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated"
            assert target.observed.status == "healthy" and target.observed.days_left in (179, 180)
            made = rotator_made(world, c)
            assert len(made) == 1 and made[0]["keyId"] == target.state.current_key_id
            value = await svc.secrets.value(target, target.state.current_version)
            assert value.reveal() == made[0]["secretText"]
            versions = world.versions(c)
            assert [v["tags"]["stage"] for v in versions] == ["current"]
            assert versions[0]["tags"]["key-id"] == target.state.current_key_id
            assert versions[0]["tags"]["tenant-id"] == c.tenant_id and versions[0]["tags"]["app-id"] == c.app_id
            # The audit log tells the rotation's story, newest first, every step with its rotation id and actor.
            events = list(reversed(await svc.state.events(c.tenant_id, c.app_id)))
            steps = [e.step for e in events]
            assert steps[:5] == ["reserve", "create", "store", "verify", "finish"], steps
            assert len({e.rotation_id for e in events[:5]}) == 1 and events[0].rotation_id
            assert {e.actor for e in events} == {"timer"} and all(e.outcome == "ok" for e in events[:5])
        # The old credential stays until the grace period is over.
        assert any(k["keyId"] == due.key_id for k in world.credentials(due))
        assert not rotator_made(world, healthy)
        assert world.versions(healthy) == []


async def test_a_tenant_policy_refusing_the_lifetime_gets_a_shorter_secret_at_once(
    world: World, rotator: Rotator
) -> None:
    """Issue 9.5: a refused lifetime is retried shorter in the same run (it used to fail the rotation)."""
    strict = world.seed_customer("Strict", 5, max_lifetime_days=90)
    async with rotator(SECRET_LIFETIME_DAYS="180") as svc:
        await register(svc, strict)
        outcome = await svc.engine.advance(strict.tenant_id, strict.app_id, Actor.TIMER)
        assert outcome.result == "rotated", outcome
        target, _ = await svc.state.get_target(strict.tenant_id, strict.app_id)
        assert target.state.stage is Stage.IDLE and target.observed.lifetime_cap_days == 90
        assert target.observed.days_left in (89, 90)
    assert len(rotator_made(world, strict)) == 1


async def test_verification_waits_out_propagation_delay(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("Slow", 3)
    world.sb.control.set_propagation_delay(2.0)
    async with rotator() as svc:
        await register(svc, due)
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    events = world.sb.control.state()
    assert events  # the sandbox answered throughout


async def test_throttling_on_add_password_is_waited_out_without_a_second_credential(
    world: World, rotator: Rotator
) -> None:
    due = world.seed_customer("Busy", 3)
    world.sb.control.add_fault("graph", method="POST", path=".*/addPassword", status=429, code="TooManyRequests",
                               retry_after=1, count=1)
    world.sb.control.add_fault("graph", method="POST", path=".*/addPassword", status=503,
                               code="Directory_ConcurrencyViolation", count=1)
    async with rotator() as svc:
        await register(svc, due)
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    assert len(rotator_made(world, due)) == 1


async def test_key_vault_failing_after_add_password_removes_the_new_credential(
    world: World, rotator: Rotator
) -> None:
    due = world.seed_customer("VaultDown", 3)
    world.sb.control.add_fault("keyvault", method="PUT", path="/secrets/ppsync-.*", status=500,
                               code="InternalServerError", count=None)
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await register(svc, due)
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        assert outcome.result == "failed" and outcome.error_code == "InternalServerError"
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        assert target.state.stage is Stage.IDLE and target.observed.error_code == "InternalServerError"
        events = await svc.state.events(due.tenant_id, due.app_id)
        assert any(e.step == "compensate" for e in events)
    credentials = world.credentials(due)
    assert [c["keyId"] for c in credentials] == [due.key_id], "only the old secret remains"
    assert credentials[0]["secretText"] == due.secret
    assert any(a.condition == "rotation-failed" for a in alerter.raised)


async def test_two_runs_at_once_create_one_credential(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("Twice", 3)
    hold = world.sb.control.add_hold("graph", method="POST", path=".*/addPassword", when="before")
    async with rotator() as timer_side, rotator() as manual_side:
        await register(timer_side, due)
        first = asyncio.create_task(timer_side.engine.run_pass(Actor.TIMER))
        await asyncio.to_thread(world.sb.control.wait_held, hold)
        with pytest.raises(Exception) as refused:
            await manual_side.engine.rotate_now(due.tenant_id, due.app_id, force=True)
        assert getattr(refused.value, "code", "") == "RotationInFlight"
        second = await manual_side.engine.advance(due.tenant_id, due.app_id, Actor.MANUAL, force=True)
        assert second.result == "busy"
        world.sb.control.release(hold)
        summary = await first
    assert summary.by_result == {"rotated": 1}
    assert len(rotator_made(world, due)) == 1


async def test_no_secret_value_reaches_logs_tables_or_errors(
    world: World, rotator: Rotator, caplog: pytest.LogCaptureFixture
) -> None:
    due = world.seed_customer("Quiet", 3)
    vault_down = world.seed_customer("Quiet2", 3)
    world.sb.control.add_fault("keyvault", method="PUT", path=f"/secrets/ppsync-{vault_down.tenant_id}.*",
                               status=503, code="ServiceUnavailable", count=None)
    caplog.set_level(logging.DEBUG)
    async with rotator() as svc:
        await register(svc, due, vault_down)
        summary = await svc.engine.run_pass(Actor.TIMER)
        rows = await svc.state.all_rows()
    values = [c["secretText"] for c in world.credentials(due) + world.credentials(vault_down)]
    values += [v["value"] for v in world.versions(due)]
    assert len(values) >= 3
    texts = [caplog.text, repr(rows), repr(summary.outcomes)]
    for value in values:
        for text in texts:
            assert value not in text
    assert repr(Secret(values[0])) == "Secret(***)"
