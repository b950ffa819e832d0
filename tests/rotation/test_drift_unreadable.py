"""A customer whose Proofpoint settings cannot be read at its drift checks (the admin login refused, Proofpoint
failing): no drift is claimed, the check is tried at every daily pass, and after two days a human is told
(drift-check-unreadable: in the alerts and the status) until a check reads the settings again. End to end: the real
Proofpoint adapter against the sandbox, whose fault answers the settings' GET."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.alerts import LogAlerter
from shared.domain import Actor
from shared.drift import DRIFT_UNREADABLE
from shared.service import StatusPolicy, open_alerts
from tests.rotation.conftest import Rotator, World
from tests.rotation.test_drift_at_assessment import ROTATION, credential, register, seed
from tests.rotation.test_push_retire import destinations


async def test_settings_unreadable_for_two_days_are_told_and_cleared_by_the_next_read(
    world: World, rotator: Rotator
) -> None:
    world.seed_accounts()
    mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
    c = seed(world, "Unreadable", credentials=[mine], held=mine["keyId"], expiry="+150d", nextSync="+200h")
    await register(world, rotator, c, current_key_id=mine["keyId"])
    world.sb.control.add_fault("proofpoint", method="GET", path=".*/settings/azure", status=401,
                               message="Invalid credentials", count=None)
    seen: list[list[str]] = []
    for day in range(3):
        later = timedelta(days=day, hours=1 if day else 0)
        world.sb.control.set_clock(later.total_seconds())
        alerter = LogAlerter()
        async with rotator(later, alerter=alerter) as svc:
            await svc.engine.run_pass(Actor.TIMER)
            row, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        assert row.observed.status == "healthy" and row.observed.drift == {}, "nothing claimed on a failed read"
        seen.append([a.condition for a in alerter.raised])
        now = datetime.now(UTC) + later
    assert seen[0] == seen[1] == [], "one or two failed reads are not yet a human's problem"
    assert seen[2] == [DRIFT_UNREADABLE]
    assert DRIFT_UNREADABLE in open_alerts(row, StatusPolicy(), now)
    [message] = [a.message for a in alerter.raised]
    assert "proofpoint" in message and world.proofpoint_password not in message and c.secret not in message

    # Proofpoint answers again: the next pass reads the settings, and the condition clears.
    world.sb.control.clear_faults()
    later = timedelta(days=3, hours=2)
    world.sb.control.set_clock(later.total_seconds())
    async with rotator(later, alerter=LogAlerter()) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        row, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert row.observed.drift_unreadable_since is None and row.observed.uses == {"proofpoint": mine["keyId"]}
    assert DRIFT_UNREADABLE not in open_alerts(row, StatusPolicy(), datetime.now(UTC) + later)


async def test_a_target_whose_last_check_failed_is_read_at_the_next_pass_even_off_its_schedule(
    world: World, rotator: Rotator
) -> None:
    """The check that failed was not a scheduled one (a replaced key waiting, a foreign key new): once nothing else
    makes it due, the failure alone still has it read at the next pass, so the condition cannot outlive Proofpoint's
    outage by weeks."""
    world.seed_accounts()
    mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
    c = seed(world, "OffSchedule", credentials=[mine], held=mine["keyId"], expiry="+150d", nextSync="+200h")
    now = datetime.now(UTC)
    async with rotator() as svc:
        target = c.target(destinations(world, c)).with_state(current_key_id=mine["keyId"])
        await svc.state.create_target(target.with_observed(
            drift_checked_at=now - timedelta(hours=1), drift_unreadable_since=now - timedelta(days=3)))
        await svc.engine.run_pass(Actor.TIMER)
        row, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert row.observed.drift_unreadable_since is None and row.observed.uses == {"proofpoint": mine["keyId"]}
