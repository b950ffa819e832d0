"""The lease is renewed with every write of the row by the advance that holds it: a rotation longer than the lease
(5 minutes) stays its own while each step is shorter, and another runner is told busy rather than taking it over."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.domain import Actor, Stage
from tests.fakes import FakeWorld


async def test_a_rotation_longer_than_the_lease_is_not_taken_over_between_its_steps() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    first_push = world.faults.hold("destination.proofpoint")
    second_push = world.faults.hold("destination.portal")
    rotating = asyncio.create_task(world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER))

    await asyncio.wait_for(first_push.reached.wait(), 5)
    world.clock.advance(timedelta(minutes=4))  # a slow destination: still within the lease
    first_push.released.set()
    await asyncio.wait_for(second_push.reached.wait(), 5)
    world.clock.advance(timedelta(minutes=4))  # 8 minutes since the lease was taken, 4 since the last write

    row = world.row(target)
    assert row.state.stage is Stage.VERIFIED and row.state.lease_until is not None
    assert row.state.lease_until > world.clock.now(), "renewed by the acknowledgement's write"
    other = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert other.result == "busy", other

    second_push.released.set()
    assert (await rotating).result == "rotated"
    assert world.row(target).state.lease_owner == "", "released at the end"
    assert world.converged(target) == []
