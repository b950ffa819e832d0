"""The whole protocol on the in-memory fakes: a rotation, its recovery from a crash at every port call."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import Actor, Stage
from tests.fakes import Crash, FakeWorld


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


async def test_a_healthy_target_is_assessed_without_a_lease_and_written_only_when_its_observation_changed() -> None:
    world = FakeWorld()
    target = world.seed(days_left=300)
    world.clock.advance(timedelta(hours=1))  # 299 days and 23 hours left: 299 days
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.faults.counts["state.replace_target"] == 1, "the observation, in one write: no lease, no release"
    assert world.row(target).observed.days_left == 299 and world.row(target).state.lease_owner == ""

    world.clock.advance(timedelta(hours=1))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.faults.counts["state.replace_target"] == 1, "nothing but the time of the check changed: no write"

    world.clock.advance(timedelta(days=1))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.faults.counts["state.replace_target"] == 2 and world.row(target).observed.days_left == 298


async def test_a_due_target_is_reserved_and_leased_in_one_write() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.crash("state.replace_target", when="after", nth=1)
    with pytest.raises(Crash):  # the process dies right after the write
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    row = world.row(target)
    assert row.state.stage is Stage.CREATING and row.state.lease_owner and row.state.rotation_id
