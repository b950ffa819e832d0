"""Issue 22, items 9 and 10, with the real SDKs against the sandbox, for the timer pass and for a queue worker.

9. A runner has read the app; its addPassword (or its Key Vault write) is held past the 5-minute lease; another
   runner takes the rotation over and finishes it; then the held request lands. The late credential is removed by
   the runner that made it as soon as the answer comes, and its value never reaches Key Vault; a late version is
   tagged `retired` (its credential is gone): no dead `pending` version.
10. The rotator is SIGKILLed between removePassword and the Key Vault tag move of a retirement (after the grace):
   the next pass tags the removed credential's version `retired` (tags follow what Entra ID holds).
The invariants are read from the services (tests/rotation/safety.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from shared.bootstrap import Services
from shared.domain import Actor
from shared.fanout import RETIRE, plan_pass, work_on
from shared.ports import Work
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import (
    TAKE_OVER,
    CrashPoint,
    Point,
    assert_converged,
    assert_safe_now,
    kill_at,
    made,
    recover,
    rotated_once,
    secret_path,
    tagged,
)

pytestmark = pytest.mark.sandbox

Runner = Callable[[Services, Customer], Awaitable[object]]


async def timer_pass(svc: Services, customer: Customer) -> object:
    return await svc.engine.run_pass(Actor.TIMER)


async def queue_worker(svc: Services, customer: Customer) -> object:
    """What the queue function `advance_target` runs for one message of the customer (work_on)."""
    assert svc.work_queue is not None, "WORK_QUEUE: run through scripts/with-azurite.sh"
    return await work_on(svc.engine, svc.work_queue, Work(customer.tenant_id, customer.app_id, "timer", "due"))


RUNNERS = [pytest.param(timer_pass, id="timer-pass"), pytest.param(queue_worker, id="queue-worker")]


async def wait_held(world: World, hold: str, task: asyncio.Task[object]) -> None:
    for _ in range(600):
        if await asyncio.to_thread(world.sb.control.waiting, hold) >= 1:
            return
        assert not task.done(), f"the runner ended before the held request: {task.result()}"
        await asyncio.sleep(0.05)
    raise AssertionError("the request was never held")


# What is held past the lease: the runner's addPassword, or its Key Vault write (the credential made).
HELD = {"addPassword": ("graph", "POST", "/addPassword$"), "Key Vault write": ("keyvault", "PUT", "{secret}$")}


@pytest.mark.parametrize("held", list(HELD))
@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_request_answered_after_the_lease_passed_leaves_nothing_behind(
    world: World, rotator: Rotator, runner: Runner, held: str,
) -> None:
    customer, first_key = await rotated_once(world, rotator, "Late")
    async with rotator() as svc:  # a second rotation, reserved as the timer's plan reserves it
        await svc.engine.advance(customer.tenant_id, customer.app_id, Actor.MANUAL, force=True, reserve_only=True)
    service, method, path = HELD[held]
    hold = world.sb.control.add_hold(service, method=method, path=path.format(secret=secret_path(customer)))
    async with rotator() as slow:
        first = asyncio.create_task(runner(slow, customer))
        await wait_held(world, hold, first)
        started = time.monotonic()
        slow.engine.clock.offset = TAKE_OVER  # type: ignore[attr-defined]  # its request waits 6 minutes
        async with rotator(TAKE_OVER) as other:  # another runner takes the rotation over and finishes it
            await runner(other, customer)
            finished, _ = await other.state.get_target(customer.tenant_id, customer.app_id)
        assert finished.state.current_key_id not in ("", first_key), "the other runner finished the rotation"
        # The held runner must still be waiting for its answer (its requests are cut at 30 s).
        assert time.monotonic() - started < 25, "the other runner took too long for the test to make its point"
        world.sb.control.release(hold)  # the late request lands: a second credential, or a version of one
        await asyncio.wait_for(first, 60)
    keys = [c["keyId"] for c in made(world, customer)]
    assert sorted(keys) == sorted([first_key, finished.state.current_key_id]), "no late credential is left"
    if held == "addPassword":
        assert len(world.versions(customer)) == 2, "its value never reached Key Vault"
    else:
        late = [v for v in world.versions(customer) if v["tags"]["key-id"] not in (first_key, *keys)]
        assert [v["tags"]["stage"] for v in late] == ["retired"], "the late version is retired at once"
    assert_converged(world, customer, rotations=2, target=finished)


GRACE_PASSED = timedelta(hours=25)


async def rotated_twice_grace_over(world: World, rotator: Rotator, name: str) -> tuple[Customer, str]:
    """Two rotations done; the first one's grace is over (and Proofpoint's own sync ran since): its credential is
    due for removal, its version `previous`."""
    customer, first_key = await rotated_once(world, rotator, name)
    async with rotator() as svc:
        outcome = await svc.engine.advance(customer.tenant_id, customer.app_id, Actor.MANUAL, force=True)
        assert outcome.result == "rotated", outcome
    assert [v["tags"]["key-id"] for v in tagged(world, customer, "previous")] == [first_key]
    world.sb.control.set_clock(GRACE_PASSED.total_seconds())
    return customer, first_key


def retirement_kills(customer: Customer, key_id: str) -> dict[str, CrashPoint]:
    tag = Point("keyvault", "PATCH", secret_path(customer) + "/[0-9a-f]+$", "before")
    # The removal of that credential (the hand-made one goes too, in either order): matched on the request body.
    removed = Point("graph", "POST", "/removePassword$", "after", body=key_id)
    return {
        "after removePassword": CrashPoint("after removePassword", (removed,)),
        "before the tag move": CrashPoint("before the tag move", (tag,)),
    }


@pytest.mark.parametrize("where", ["after removePassword", "before the tag move"])
@pytest.mark.parametrize("worker", [False, True], ids=["timer-pass", "queue-worker"])
async def test_a_kill_between_a_removal_and_its_tag_move_is_finished_by_the_next_pass(
    world: World, rotator: Rotator, where: str, worker: bool,
) -> None:
    customer, first_key = await rotated_twice_grace_over(world, rotator, "Retiring")
    if worker:
        async with rotator(GRACE_PASSED) as svc:
            assert svc.work_queue is not None, "WORK_QUEUE: run through scripts/with-azurite.sh"
            await svc.work_queue.enqueue(Work(customer.tenant_id, customer.app_id, "timer", RETIRE))
        args: tuple[str, ...] = ("--work-queue", world.queue, "work", "--until-empty")
    else:
        args = ("run",)
    point = retirement_kills(customer, first_key)[where]
    await asyncio.to_thread(kill_at, world, point, args, None, GRACE_PASSED.total_seconds())
    assert_safe_now(world, customer, rotated_before=True)
    assert first_key not in {c["keyId"] for c in world.credentials(customer)}, "killed once it was removed"
    assert [v["tags"]["key-id"] for v in tagged(world, customer, "previous")] == [first_key], "its tag not moved"
    if worker:
        # The next rotation timer fans the target out again (its row says a retirement is under way); a worker
        # takes it (the killed worker's message stays invisible for its 10 minutes).
        async with rotator(GRACE_PASSED + TAKE_OVER) as svc:
            assert svc.work_queue is not None
            planned = await plan_pass(svc.engine, svc.work_queue)
        assert planned.enqueued[RETIRE] == 1, planned
        later = world.cli(*args, offset=(GRACE_PASSED + TAKE_OVER).total_seconds())
        assert await asyncio.to_thread(later.wait, 240) == 0, later.output()
        async with rotator(GRACE_PASSED + TAKE_OVER) as svc:
            target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    else:
        target = await recover(world, rotator, customer, offset=GRACE_PASSED + TAKE_OVER)
    assert first_key not in {c["keyId"] for c in world.credentials(customer)}, "removed"
    retired = [v["tags"]["key-id"] for v in tagged(world, customer, "retired")]
    assert first_key in retired, "the removed credential's version is retired"
    assert target.state.retiring == ()
    assert_converged(world, customer, rotations=1, target=target)




async def test_a_credential_deleted_by_hand_has_its_version_retired_by_the_next_pass(
    world: World, rotator: Rotator,
) -> None:
    """Within the grace, an admin deletes the superseded credential (Graph removePassword, as the Entra portal
    does): no pass of the rotator removed it, yet the next timer pass tags its version `retired` and only then
    forgets its key."""
    customer, first_key = await rotated_once(world, rotator, "ByHand")
    async with rotator() as svc:
        outcome = await svc.engine.advance(customer.tenant_id, customer.app_id, Actor.MANUAL, force=True)
        assert outcome.result == "rotated", outcome
        await svc.directory.remove_password(customer.tenant_id, customer.object_id, first_key)
    assert [v["tags"]["key-id"] for v in tagged(world, customer, "previous")] == [first_key]
    target = await recover(world, rotator, customer, passes=1, offset=timedelta(hours=1))
    assert [v["tags"]["key-id"] for v in tagged(world, customer, "previous")] == []
    assert first_key in [v["tags"]["key-id"] for v in tagged(world, customer, "retired")]
    assert first_key not in target.state.superseded
