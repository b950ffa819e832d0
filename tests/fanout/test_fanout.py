"""Fan-out on Storage queues: the timers enqueue one message per customer with work; the queue function, invoked as
the host invokes it with real messages taken from Azurite's queue service, advances one customer per message.

Real parts: Azurite's queue and table services, the real azure-storage-queue client, the sandbox behind every Azure
SDK, the function objects of function_app (what the host indexes)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import azure.functions.timer as timer
import pytest
from azure.storage.queue.aio import QueueClient

from devhost.queues import QueueHost, QueueOptions
from shared.domain import Stage
from shared.ports import Work, WorkReason
from shared.work import parse_work, work_message
from tests.api.conftest import Api, functions
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_crash import CRASH_POINTS, kill_at
from tests.rotation.test_entrypoints import read, register

pytestmark = pytest.mark.sandbox

FAST_RETRY = QueueOptions(batch_size=8, max_dequeue_count=3, visibility_timeout=timedelta(0))
# Killed here, a run leaves the target `pending` with its lease on the row.
DURING_VERIFICATION = next(p for p in CRASH_POINTS if p.name == "during verification")


def connection() -> str:
    value = os.environ.get("WORK_QUEUE")
    if not value:
        pytest.fail("WORK_QUEUE is not set: run the tests through `make test` (scripts/with-azurite.sh starts Azurite)")
    return value


@pytest.fixture
async def host(api: Api) -> AsyncIterator[QueueHost]:
    """The host's queue trigger on this test's queue, bound to the app's own queue functions."""
    f = functions()
    async with QueueHost(connection(), api.world.queue, f["advance_target"], f["poisoned_work"], FAST_RETRY) as h:
        yield h


async def queued(world: World, poison: bool = False) -> list[Work]:
    """The messages waiting (visible) on the test's queue, decoded as the host decodes them."""
    name = world.queue + ("-poison" if poison else "")
    async with QueueClient.from_connection_string(connection(), name) as client:
        return [parse_work(base64.b64decode(m.content)) for m in await client.peek_messages(max_messages=32)]


async def registered_due(api: Api, world: World, name: str) -> Customer:
    """A customer whose secret is due (12 days left), with the destinations' accounts, registered through the API."""
    customer = world.seed_customer(name, 12)
    world.seed_accounts()
    await register(api, customer)
    return customer


def made_by_rotator(world: World, customer: Customer) -> list[dict[str, object]]:
    return [c for c in world.credentials(customer) if "rotation" in str(c["displayName"] or "")]


async def test_the_timer_enqueues_only_customers_with_work_and_a_worker_rotates_them(
    api: Api, world: World, host: QueueHost
) -> None:
    due = world.seed_customer("Due", 12)
    expired = world.seed_customer("Expired", -2)
    healthy = world.seed_customer("Healthy", 300)
    world.seed_accounts()
    await register(api, due, expired, healthy)

    await functions()["rotation_timer"](timer.TimerRequest(past_due=False))

    work = await queued(world)
    assert sorted((w.app_id, w.reason) for w in work) == sorted([(due.app_id, "due"), (expired.app_id, "due")])
    assert all(w.actor == "timer" for w in work)
    for customer in (due, expired):  # reserved by the timer: the row says which rotation, before any message
        target = await read(api, customer)
        assert target.state.stage is Stage.CREATING and target.state.rotation_id
    assert (await read(api, healthy)).observed.status == "healthy"
    assert not made_by_rotator(world, due), "the timer itself creates no credential"

    assert await host.drain() == 2
    for customer in (due, expired):
        target = await read(api, customer)
        assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated"
        assert len(made_by_rotator(world, customer)) == 1
    assert await queued(world) == []


async def test_the_resume_timer_enqueues_only_rotations_in_flight(
    api: Api, world: World, host: QueueHost
) -> None:
    stuck = world.seed_customer("Stuck", 12)
    due = world.seed_customer("DueLater", 12)
    world.seed_accounts()
    await register(api, stuck, due)
    await asyncio.to_thread(kill_at, world, stuck, DURING_VERIFICATION)
    assert (await read(api, stuck)).state.stage is Stage.PENDING
    checked = (await read(api, due)).observed.checked_at

    await functions()["resume_timer"](timer.TimerRequest(past_due=False))

    assert [(w.app_id, w.reason) for w in await queued(world)] == [(stuck.app_id, "in-flight")]
    assert (await read(api, due)).observed.checked_at == checked, "the resume timer reads nothing of idle targets"


async def test_a_message_delivered_twice_makes_one_credential(
    api: Api, world: World, host: QueueHost, rotator: Rotator
) -> None:
    due = await registered_due(api, world, "Twice")
    await functions()["rotation_timer"](timer.TimerRequest(past_due=False))  # reserves it, sends one message
    async with rotator() as svc:
        for _ in range(2):  # at-least-once: the same work three times, taken in one batch side by side
            await svc.work_queue.enqueue(Work(due.tenant_id, due.app_id, "timer", "due"))
    assert await host.drain() == 3
    target = await read(api, due)
    assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated"
    assert len(made_by_rotator(world, due)) == 1
    assert len([v for v in world.versions(due) if v["tags"].get("stage") == "current"]) == 1


async def test_a_message_never_starts_a_rotation_by_itself_whatever_its_reason(
    api: Api, world: World, host: QueueHost, rotator: Rotator
) -> None:
    """Every rotation is reserved before its message is sent; a stray message for an idle, due target (a copy that
    outlived its rotation, or one sent by anything else), with any reason, retire included, leaves it to the
    timer's plan."""
    due = await registered_due(api, world, "Stray")
    before = (await read(api, due)).state
    async with rotator() as svc:
        for reason in WorkReason:
            await svc.work_queue.enqueue(Work(due.tenant_id, due.app_id, "manual:mallory@msp.example", reason))
    assert await host.drain() == len(WorkReason)
    assert not made_by_rotator(world, due) and world.versions(due) == []
    assert (await read(api, due)).state == before
    assert await queued(world) == [] and await queued(world, poison=True) == []


async def test_a_message_that_breaks_the_format_is_dropped_and_changes_nothing(
    api: Api, world: World, host: QueueHost
) -> None:
    """Ids that are not GUIDs, an unknown reason, an actor no caller can have (40,000 characters, a newline): dropped
    with an error log, never retried, never poisoned, and nothing is written (no row, no audit event)."""
    due = await registered_due(api, world, "Malformed")
    before = await read(api, due)
    bad = [
        {"actor": "manual:" + "m" * 40_000}, {"actor": "manual:alice\nbob"}, {"actor": "root"},
        {"reason": "rotate"}, {"reason": "DUE"}, {"tenantId": "contoso"}, {"appId": due.app_id + "\n"},
        {"extra": "x"},
    ]
    async with QueueClient.from_connection_string(connection(), world.queue) as client:
        for change in bad:
            doc = {"v": 1, "tenantId": due.tenant_id, "appId": due.app_id, "actor": "timer", "reason": "retire",
                   **change}
            await client.send_message(base64.b64encode(json.dumps(doc).encode()).decode())
    assert await host.drain() == len(bad)
    assert await queued(world) == [] and await queued(world, poison=True) == []
    after = await read(api, due)
    assert after.state == before.state and after.observed == before.observed
    assert not made_by_rotator(world, due)
    details = await api.call("details", "GET", {"tenantId": due.tenant_id, "appId": due.app_id})
    assert [e for e in details.body["events"] if e["step"] != "registry"] == []


async def test_a_worker_killed_mid_rotation_is_finished_by_another_after_the_lease(
    api: Api, world: World, host: QueueHost
) -> None:
    due = await registered_due(api, world, "Killed")
    await functions()["rotation_timer"](timer.TimerRequest(past_due=False))
    # A worker process takes the message and is killed while the new secret is being verified; the message it
    # held becomes visible again after 2 s (the host renews it only while its worker is alive).
    await asyncio.to_thread(kill_at, world, due, DURING_VERIFICATION, "--work-queue", world.queue, "work",
                            "--until-empty", "--invisible-seconds", "2")
    assert (await read(api, due)).state.stage is Stage.PENDING
    await asyncio.sleep(2.5)

    # Another worker, a lease later: the redelivered message finishes the rotation.
    later = world.cli("--work-queue", world.queue, "work", "--until-empty", offset=6 * 60)
    assert await asyncio.to_thread(later.wait, 240) == 0, later.output()
    target = await read(api, due)
    assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated", later.output()
    assert len(made_by_rotator(world, due)) == 1


async def test_a_target_held_by_another_runner_is_looked_at_again_after_its_lease(
    api: Api, world: World, host: QueueHost, rotator: Rotator
) -> None:
    due = await registered_due(api, world, "Held")
    await asyncio.to_thread(kill_at, world, due, DURING_VERIFICATION)  # a crashed run left its lease on the row
    async with rotator() as svc:
        await svc.work_queue.enqueue(Work(due.tenant_id, due.app_id, "timer", "in-flight"))
    assert await host.drain() == 1
    assert await queued(world) == [], "the retry is not visible before the lease has run out"
    async with QueueClient.from_connection_string(connection(), world.queue) as client:
        props = await client.get_queue_properties()
    assert props.approximate_message_count == 1, "one delayed message looks at the target again"
    assert (await read(api, due)).state.stage is Stage.PENDING


async def test_a_message_that_fails_every_time_is_poisoned_alerted_and_shown(
    api: Api, world: World, host: QueueHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = await registered_due(api, world, "Poison")
    # Every attempt fails in the worker itself (not a step the engine handles): the host retries, then poisons.
    from shared import fanout

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a defect in the worker")

    monkeypatch.setattr(fanout.Engine, "advance", broken)
    async with QueueClient.from_connection_string(connection(), world.queue) as client:
        await client.send_message(base64.b64encode(
            work_message(Work(due.tenant_id, due.app_id, "timer", "due")).encode()).decode())
    await host.drain()
    assert await queued(world) == [] and await queued(world, poison=True) == []
    alerts = [a for a in api.alerter.raised if a.condition == "poison-message"]
    assert len(alerts) == 1 and alerts[0].app_id == due.app_id
    (shown,) = (await api.call("status")).body["targets"]
    assert "poison" in (shown["needsHuman"] or "") and "needs-human" in shown["alerts"], shown


async def test_a_message_that_is_not_a_work_item_is_dropped_without_retry(
    api: Api, world: World, host: QueueHost
) -> None:
    async with QueueClient.from_connection_string(connection(), world.queue) as client:
        for body in (b"not json", b'{"v": 2}', b"[]"):
            await client.send_message(base64.b64encode(body).decode())
    assert await host.drain() == 3
    assert await queued(world) == [] and await queued(world, poison=True) == []
