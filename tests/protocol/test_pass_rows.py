"""A pass advances each target from the row its listing returned (one Tables query for the whole pass, no read per
target), and a row changed after the listing is never overwritten: the target is advanced from its fresh row."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from shared.domain import Actor, Policy, Stage
from tests.fakes import Crash, FakeWorld


async def test_a_pass_lists_the_targets_once_and_reads_no_row_again() -> None:
    world = FakeWorld()
    # The fakes' destinations are shared by every target of a world: only the due one has any.
    healthy = [world.seed(days_left=300, destinations=()) for _ in range(3)]
    due = world.seed(days_left=10)
    summary = await world.engine().run_pass(Actor.TIMER)
    assert sorted(o.result for o in summary.outcomes) == ["healthy", "healthy", "healthy", "rotated"]
    assert world.faults.counts["state.list_targets"] == 1
    assert world.faults.counts["state.get_target"] == 0, "every target was advanced from its listed row"
    assert world.converged(due) == []
    assert all(world.row(t).state.stage is Stage.IDLE for t in healthy)


async def test_a_row_changed_after_the_listing_is_not_overwritten_and_the_target_is_advanced_from_the_new_row(
) -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    held = world.faults.hold("directory.get_application")  # the pass has listed the row and is assessing it
    engine = world.engine()
    running = asyncio.create_task(engine.run_pass(Actor.TIMER))
    await held.reached.wait()
    # An operator changes the target meanwhile (a new policy, through the API): a new row and a new ETag.
    changed = replace(world.row(target), customer="Contoso Ltd", policy=Policy(renew_before_days=45))
    world.state._write(changed)
    held.released.set()
    summary = await running

    (result,) = summary.outcomes
    assert result.result == "rotated", result
    row = world.row(target)
    assert (row.customer, row.policy.renew_before_days) == ("Contoso Ltd", 45), "the operator's change is kept"
    assert world.faults.counts["state.get_target"] == 1, "read again once, after its stale write was refused"
    assert len([c for c in world.directory.live(target.tenant_id, target.app_id) if c.rotation_id]) == 1
    assert world.converged(target) == []


async def test_a_resume_pass_takes_a_rotation_in_flight_from_its_listed_row() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.crash("probe.try_token")  # the process dies verifying its new secret: the row stays `pending`
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.row(target).state.stage is Stage.PENDING
    engine = world.restart()
    reads = world.faults.counts["state.get_target"]
    summary = await engine.resume_pass()
    assert [o.result for o in summary.outcomes] == ["rotated"]
    assert world.faults.counts["state.get_target"] == reads, "the lease was taken on the listed row"
    assert world.converged(target) == []
