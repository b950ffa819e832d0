"""Manual rotations: the in-flight and cool-down checks and the lease are one ETag-guarded decision."""

from __future__ import annotations

import asyncio

import pytest

from shared.domain import Actor
from shared.errors import Conflict
from tests.fakes import FakeWorld


async def test_two_manual_rotations_racing_around_a_finishing_rotation_make_one_credential() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    before = len(world.directory.app(target.tenant_id, target.app_id).credentials)
    # Both operators' checks read the row while it is idle and never rotated...
    first = world.faults.hold("state.get_target", when="after", nth=1)
    second = world.faults.hold("state.get_target", when="after", nth=2)
    manual = [asyncio.create_task(world.engine().rotate_now(target.tenant_id, target.app_id)) for _ in range(2)]
    await asyncio.wait_for(first.reached.wait(), 5)
    await asyncio.wait_for(second.reached.wait(), 5)
    # ...then the timer's rotation runs and finishes before either goes on.
    timer = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert timer.result == "rotated"
    first.released.set()
    second.released.set()
    results = await asyncio.gather(*manual, return_exceptions=True)
    assert [getattr(r, "code", r) for r in results] == ["CoolDown", "CoolDown"]
    app = world.directory.app(target.tenant_id, target.app_id)
    assert len(app.credentials) == before + 1, "exactly one new credential"
    assert len(world.secrets.of(target)) == 1, "exactly one new Key Vault version"
    assert world.converged(target) == []


async def test_a_manual_rotation_racing_another_makes_one_credential_and_the_loser_is_told() -> None:
    world = FakeWorld()
    target = world.seed(days_left=200)
    # Both read the row while it is idle and unleased; the winner goes on first and finishes its rotation.
    first = world.faults.hold("state.get_target", when="after", nth=1)
    hold = world.faults.hold("state.get_target", when="after", nth=2)
    winner_task = asyncio.create_task(world.engine().rotate_now(target.tenant_id, target.app_id))
    loser_task = asyncio.create_task(world.engine().rotate_now(target.tenant_id, target.app_id))
    await asyncio.wait_for(first.reached.wait(), 5)
    await asyncio.wait_for(hold.reached.wait(), 5)
    first.released.set()
    assert (await winner_task).result == "rotated"
    hold.released.set()
    with pytest.raises(Conflict) as refused:
        await loser_task
    assert refused.value.code == "CoolDown"
    assert len(world.secrets.of(target)) == 1


async def test_a_forced_manual_rotation_during_a_rotation_in_flight_is_refused() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    hold = world.faults.hold("probe.try_token")  # the timer's rotation waits in `pending`
    timer = asyncio.create_task(world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER))
    await asyncio.wait_for(hold.reached.wait(), 5)
    with pytest.raises(Conflict) as refused:
        await world.engine().rotate_now(target.tenant_id, target.app_id, force=True)
    assert refused.value.code == "RotationInFlight"
    hold.released.set()
    assert (await timer).result == "rotated"
    assert len(world.secrets.of(target)) == 1


async def test_within_the_cool_down_force_rotates_again() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    assert (await world.engine().rotate_now(target.tenant_id, target.app_id)).result == "rotated"
    with pytest.raises(Conflict):
        await world.engine().rotate_now(target.tenant_id, target.app_id)
    assert (await world.engine().rotate_now(target.tenant_id, target.app_id, force=True)).result == "rotated"
    assert len(world.secrets.of(target)) == 2 and world.converged(target) == []
