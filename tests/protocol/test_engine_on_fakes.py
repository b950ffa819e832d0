"""The whole protocol on the in-memory fakes: a rotation, its recovery from a crash at every port call."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import Actor, Stage
from tests.fakes import FakeWorld


async def test_a_due_target_is_rotated_delivered_and_its_old_secret_retired_after_grace() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    old = world.directory.live(target.tenant_id, target.app_id)[0]
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated"
    assert world.converged(target) == []
    assert old.key_id in world.live_values(target), "kept during the grace period"
    world.clock.advance(timedelta(hours=25))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old.key_id not in world.live_values(target)
    assert world.converged(target) == []


async def test_a_healthy_target_is_left_alone() -> None:
    world = FakeWorld()
    target = world.seed(days_left=300)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "healthy" and world.row(target).state.stage is Stage.IDLE
    assert world.secrets.of(target) == [] and world.faults.counts["directory.add_password"] == 0
