"""While a replaced key waits for retirement, a pass reads Proofpoint's settings once: the drift check's read also
answers the retire step's sync check (both read `GET .../settings/azure`), counted at the sandbox."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import Actor
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import DAY_AND_AN_HOUR, setup

PLENTY = 1000


def count_settings_reads(world: World) -> str:
    """A fault that only lets the request through (no status, no latency), counting the settings GETs it matches
    (the only fault: the sandbox applies the first that matches)."""
    world.sb.control.clear_faults()
    return world.sb.control.add_fault("proofpoint", method="GET", path=r".*/settings/azure$", count=PLENTY)


def settings_reads(world: World, fault_id: str) -> int:
    left = next((f["count"] for f in world.sb.control.faults() if f["id"] == fault_id), 0)
    return PLENTY - int(left)


async def pass_at(world: World, rotator: Rotator, later: timedelta) -> None:
    world.sb.control.set_clock(later.total_seconds())
    async with rotator(later) as svc:
        await svc.engine.run_pass(Actor.TIMER)


async def rotated(world: World, rotator: Rotator, name: str) -> Customer:
    due = world.seed_customer(name, 12)
    await setup(world, rotator, due)
    async with rotator() as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
    assert summary.by_result == {"rotated": 1}, summary.outcomes
    return due


async def test_a_waiting_pass_before_proofpoints_sync_reads_its_settings_once(world: World, rotator: Rotator) -> None:
    due = await rotated(world, rotator, "WaitingOnce")
    counter = count_settings_reads(world)
    await pass_at(world, rotator, timedelta(hours=1))  # Proofpoint has not synced yet: the old key waits
    assert settings_reads(world, counter) == 1
    assert due.key_id in [k["keyId"] for k in world.credentials(due)], "kept until Proofpoint's sync"
    counter = count_settings_reads(world)
    await pass_at(world, rotator, timedelta(hours=2))  # and at every pass while it waits
    assert settings_reads(world, counter) == 1
    assert due.key_id in [k["keyId"] for k in world.credentials(due)]


async def test_the_one_read_confirms_proofpoints_sync_and_the_old_key_goes(world: World, rotator: Rotator) -> None:
    due = await rotated(world, rotator, "SyncedOnce")
    counter = count_settings_reads(world)
    await pass_at(world, rotator, DAY_AND_AN_HOUR)  # Proofpoint's daily sync ran with the new key; grace over
    assert settings_reads(world, counter) == 1
    assert due.key_id not in [k["keyId"] for k in world.credentials(due)], "retired on the sync the one read saw"
    async with rotator(DAY_AND_AN_HOUR) as svc:
        row, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert row.state.acks["proofpoint"].synced_at is not None, "the sync confirmed from the drift check's read"


async def test_a_healthy_target_reads_no_settings(world: World, rotator: Rotator) -> None:
    healthy = world.seed_customer("HealthyNone", 300)
    await setup(world, rotator, healthy)
    async with rotator() as svc:
        await svc.engine.run_pass(Actor.TIMER)  # its first assessment: its first drift check
    counter = count_settings_reads(world)
    await pass_at(world, rotator, timedelta(hours=1))
    assert settings_reads(world, counter) == 0, "its drift check is a period away"
