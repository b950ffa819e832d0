"""Issue 22, items 9 and 10, on the fakes, for the timer pass and for a queue worker.

9. A request that outlives the lease: addPassword (or the Key Vault write) is delayed past the 5-minute lease,
   another runner takes the rotation over and finishes it, then the late request lands. Nothing may stay behind:
   no second live credential, no `pending` version of a credential that is gone.
10. A kill between removePassword and the Key Vault tag move: the tags follow what Entra ID holds at the next pass
   (a version whose credential is gone is `retired`), while a healthy pass still reads nothing from Key Vault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.domain import Actor, Target, VersionStage
from shared.errors import Throttled
from shared.fanout import plan_pass, work_on
from shared.ports import Work
from tests.fakes import Crash, FakeWorld
from tests.protocol.test_crash_points import second_rotation, third_rotation


class ListQueue:
    """The work queue: what was enqueued, in order (delays ignored: the test decides when a worker runs)."""

    def __init__(self) -> None:
        self.sent: list[Work] = []

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        self.sent.append(work)


async def timer_pass(world: FakeWorld, target: Target) -> None:
    """The timer pass in process (the command line, a local run)."""
    await world.engine().run_pass(Actor.TIMER)


async def queue_worker(world: FakeWorld, target: Target) -> None:
    """The timer fans the work out; a queue worker (an engine of its own) takes the target's message."""
    queue = ListQueue()
    await plan_pass(world.engine(), queue)
    for work in [w for w in queue.sent if w.app_id == target.app_id]:
        await work_on(world.engine(), queue, work)


Runner = Callable[[FakeWorld, Target], Awaitable[None]]
RUNNERS = [pytest.param(timer_pass, id="timer-pass"), pytest.param(queue_worker, id="queue-worker")]


def dead_versions(world: FakeWorld, target: Target) -> list[str]:
    """Versions not tagged `retired` whose credential Entra ID no longer holds (live)."""
    live = world.live_values(target)
    return [f"{v.version} {v.stage}" for v in world.secrets.of(target)
            if v.stage is not VersionStage.RETIRED and v.key_id not in live]


# ---------------------------------------------------------------- 9: a request that outlives its lease


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_late_add_password_after_the_lease_was_lost_leaves_nothing_behind(runner: Runner) -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    late = world.faults.hold("directory.add_password")  # the first runner's request, delayed in flight
    first = asyncio.create_task(runner(world, target))
    await asyncio.wait_for(late.reached.wait(), 5)
    world.clock.advance(world.config.lease + timedelta(minutes=1))
    await runner(world, target)  # another runner takes the rotation over and finishes it
    assert world.converged(target) == []
    taken_over = world.row(target).state.current_key_id

    late.released.set()  # the late request lands: Entra ID makes a second credential of the same rotation
    await asyncio.wait_for(first, 5)
    made = [c.key_id for c in world.directory.live(target.tenant_id, target.app_id) if c.rotation_id]
    assert made == [taken_over], "the late credential was removed by the runner that made it, at once"
    assert len(world.secrets.of(target)) == 1, "its value was never written to Key Vault"
    assert dead_versions(world, target) == [] and world.converged(target) == []


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_late_key_vault_write_after_the_lease_was_lost_leaves_no_pending_version(runner: Runner) -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    late = world.faults.hold("secrets.store_pending")
    first = asyncio.create_task(runner(world, target))
    await asyncio.wait_for(late.reached.wait(), 5)
    world.clock.advance(world.config.lease + timedelta(minutes=1))
    await runner(world, target)  # finds the credential without a stored value: removes it, starts over, finishes
    assert world.converged(target) == []

    late.released.set()  # the late write lands: a version of a credential that is gone
    await asyncio.wait_for(first, 5)
    assert dead_versions(world, target) == [], "tagged retired by the runner whose write came late"
    assert world.converged(target) == []


async def test_a_runner_whose_lease_passed_renews_it_before_add_password_or_stops() -> None:
    """The lease passed while the app was read: another runner wrote the row since, so no addPassword is sent."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    await plan_pass(world.engine(), ListQueue())  # reserved (creating); a worker picks it up
    read = "directory.get_application"
    slow_read = world.faults.hold(read, nth=world.faults.counts[read] + 1)  # the worker's read of the app
    first = asyncio.create_task(world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER))
    await asyncio.wait_for(slow_read.reached.wait(), 5)
    world.clock.advance(world.config.lease + timedelta(minutes=1))
    row, etag = await world.state.get_target(target.tenant_id, target.app_id)
    await world.state.replace_target(row.with_state(lease_owner="someone-else",
                                                    lease_until=world.clock.now() + world.config.lease), etag)
    slow_read.released.set()
    assert (await asyncio.wait_for(first, 5)).result == "busy"
    assert world.faults.counts["directory.add_password"] == 0


# ---------------------------------------------------------------- 10: tags follow what Entra ID holds


KILLS = [("directory.remove_password", "after"), ("secrets.versions", "before"), ("secrets.demote", "before"),
         ("state.replace_target", "before")]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("call", "when"), KILLS, ids=[f"{w}-{c}" for c, w in KILLS])
async def test_a_kill_between_a_removal_and_its_tag_move_is_finished_by_the_next_pass(
    runner: Runner, call: str, when: str,
) -> None:
    world = FakeWorld()
    target = await third_rotation(world)  # two rotations done; the first one's grace is over
    superseded = world.row(target).state.superseded
    assert superseded and world.secrets.staged(target, VersionStage.PREVIOUS)
    world.faults.crash(call, when=when, nth=world.faults.counts[call] + (2 if call == "state.replace_target" else 1))
    with pytest.raises(Crash):
        await runner(world, target)
    world.restart()
    await runner(world, target)
    assert dead_versions(world, target) == []
    assert world.converged(target) == []
    assert world.row(target).state.retiring == ()


async def test_a_healthy_pass_reads_nothing_from_key_vault() -> None:
    """The reconciliation is bought only where the row says a retirement is under way: a healthy target's daily
    pass makes no Key Vault call at all."""
    world = FakeWorld()
    target = await third_rotation(world)
    await world.engine().run_pass(Actor.TIMER)  # the retirement
    assert world.converged(target) == []
    world.clock.advance(timedelta(days=1))
    start = len(world.faults.log)
    await world.engine().run_pass(Actor.TIMER)
    assert [c for c in world.faults.log[start:] if c.startswith("secrets.")] == []


async def previous_deleted_by_hand(world: FakeWorld) -> tuple[Target, str]:
    """Two rotations within the grace (a `previous` version whose credential is live), then an admin deletes that
    credential in the Entra portal: no pass of the rotator removed it. Returns the target and the version."""
    target = await second_rotation(world)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=True)
    (previous,) = world.secrets.staged(target, VersionStage.PREVIOUS)
    assert previous.key_id in world.row(target).state.superseded
    key = (target.tenant_id, target.app_id)
    app = world.directory.apps[key]
    world.directory.apps[key] = replace(
        app, credentials=tuple(c for c in app.credentials if c.key_id != previous.key_id))
    return target, previous.version


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_credential_deleted_by_hand_has_its_version_tagged_retired_by_the_next_pass(runner: Runner) -> None:
    world = FakeWorld()
    target, version = await previous_deleted_by_hand(world)
    for _ in range(3):
        world.clock.advance(timedelta(hours=1))
        await runner(world, target)
        assert dead_versions(world, target) == []
    assert {v.version: v.stage for v in world.secrets.of(target)}[version] is VersionStage.RETIRED
    assert world.converged(target) == []
    gone = {v.key_id for v in world.secrets.of(target) if v.version == version}
    assert not gone & set(world.row(target).state.superseded), "forgotten once its version is retired"


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("call", "when"), [("secrets.versions", "before"), ("secrets.demote", "before"),
                                            ("secrets.demote", "after")])
async def test_a_kill_before_the_row_forgets_a_key_deleted_by_hand_is_finished_by_the_next_pass(
    runner: Runner, call: str, when: str,
) -> None:
    """The row keeps the key until its version is tagged: a kill between the tag move and the row write (or
    before the move) leaves the key known, so the next pass moves the tag."""
    world = FakeWorld()
    target, _ = await previous_deleted_by_hand(world)
    world.clock.advance(timedelta(hours=1))
    world.faults.crash(call, when=when, nth=world.faults.counts[call] + 1)
    with pytest.raises(Crash):
        await runner(world, target)
    world.restart()
    world.clock.advance(timedelta(hours=1))
    await runner(world, target)
    assert dead_versions(world, target) == []
    assert world.converged(target) == []


async def test_once_the_tags_follow_a_hand_deletion_a_pass_reads_nothing_from_key_vault() -> None:
    world = FakeWorld()
    target, _ = await previous_deleted_by_hand(world)
    world.clock.advance(timedelta(hours=1))
    await world.engine().run_pass(Actor.TIMER)  # the tag follows the deletion
    assert dead_versions(world, target) == []
    world.clock.advance(timedelta(hours=1))
    start = len(world.faults.log)
    await world.engine().run_pass(Actor.TIMER)
    assert [c for c in world.faults.log[start:] if c.startswith("secrets.")] == []


async def test_no_add_password_after_a_throttling_wait_that_outlived_the_lease() -> None:
    """Graph throttles addPassword for longer than the lease; meanwhile another runner takes the rotation over. The
    waiting runner sends no second addPassword (it would make a credential of a rotation it no longer holds)."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("directory.add_password",
                     lambda: Throttled("busy", code="Directory_ConcurrencyViolation", retry_after=400))

    async def slow_sleep(seconds: float) -> None:
        world.clock.advance(timedelta(seconds=seconds))
        row, etag = await world.state.get_target(target.tenant_id, target.app_id)
        await world.state.replace_target(row.with_state(lease_owner="another-runner",
                                                        lease_until=world.clock.now() + world.config.lease), etag)

    world.clock.sleep = slow_sleep  # type: ignore[method-assign]
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "busy", outcome
    assert world.faults.counts["directory.add_password"] == 1, "not sent again once the lease was lost"
    assert len(world.directory.live(target.tenant_id, target.app_id)) == 1, "only the customer's own secret"
