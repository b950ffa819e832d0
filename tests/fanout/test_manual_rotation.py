"""A manual rotation over HTTP answers at once: POST /api/rotations reserves and queues the rotation (202 Accepted,
Location /api/rotations/{rotationId}), a queue worker takes it further, and the Location reports it as it moves.
With ?wait=true the call works on it itself (bounded) and answers its outcome; a slower one is left to a worker.

Real parts: the app's HTTP and queue functions, Azurite's queue and table services, the sandbox behind every SDK."""

from __future__ import annotations

import pytest
from azure.storage.queue.aio import QueueClient

from devhost.queues import QueueHost
from shared.adapters.queues import StorageWorkQueue
from shared.entrypoints import api as api_functions
from shared.ports import Work
from tests.api.conftest import WAIT, Api, Reply, ids
from tests.fanout.test_fanout import connection, host, made_by_rotator, queued, registered_due
from tests.rotation.conftest import Customer, World
from tests.rotation.test_entrypoints import read

pytestmark = pytest.mark.sandbox
__all__ = ["host"]  # the fixture, shared with the fan-out tests

READER = ("reader@msp.example", ("Rotator.Read",))


async def report(api: Api, accepted: Reply) -> Reply:
    """Follow the answer's Location, as a client would (read-only caller: looking needs only Rotator.Read)."""
    location = accepted.headers["Location"]
    assert location.startswith("/api/rotations/")
    reply = await api.call("rotation", route={"rotationId": location.rsplit("/", 1)[1]}, caller=READER)
    assert reply.status == 200, reply.text
    return reply


async def accepted_rotation(api: Api, world: World, name: str) -> tuple[Customer, Reply]:
    """A due customer registered through the API, and the 202 its manual rotation was answered with."""
    customer = await registered_due(api, world, name)
    accepted = await api.call("rotations", "POST", body=ids(customer))
    assert accepted.status == 202, accepted.text
    return customer, accepted


async def waiting_messages(world: World) -> int:
    """Messages on the test's queue, visible or not (the service's approximate count, exact on Azurite)."""
    async with QueueClient.from_connection_string(connection(), world.queue) as client:
        return (await client.get_queue_properties()).approximate_message_count or 0


async def test_a_manual_rotation_is_accepted_at_once_and_a_worker_finishes_it(
    api: Api, world: World, host: QueueHost
) -> None:
    customer = await registered_due(api, world, "Accepted")

    accepted = await api.call("rotations", "POST", body=ids(customer))

    assert accepted.status == 202, accepted.text
    assert accepted.headers["Retry-After"].isdigit()
    body = accepted.body
    assert body["state"] == "queued" and body["stage"] == "creating"
    assert accepted.headers["Location"] == f"/api/rotations/{body['rotationId']}"
    assert body["requestedBy"] == "manual:operator@msp.example"
    assert not made_by_rotator(world, customer), "the call itself creates nothing: a worker does"
    assert await queued(world) == [Work(customer.tenant_id, customer.app_id, body["requestedBy"], "manual")]
    assert (await report(api, accepted)).body["state"] == "queued"

    assert await host.drain() == 1

    done = (await report(api, accepted)).body
    assert done["state"] == "succeeded" and done["stage"] == "idle" and done["errorCode"] is None
    steps = [s["step"] for s in done["steps"]]
    assert steps[0] == "reserve" and "create" in steps and "verify" in steps and steps[-1] == "finish"
    assert len(made_by_rotator(world, customer)) == 1
    assert (await read(api, customer)).observed.last_outcome == "rotated"
    secret = str(made_by_rotator(world, customer)[0]["secretText"])
    assert secret not in accepted.text and secret not in (await report(api, accepted)).text


async def test_a_second_request_while_queued_is_refused_and_a_copy_of_the_message_makes_no_second_credential(
    api: Api, world: World, host: QueueHost
) -> None:
    customer, accepted = await accepted_rotation(api, world, "Twice")

    again = await api.call("rotations", "POST", body={**ids(customer), "force": True})
    assert (again.status, again.code) == (409, "RotationInFlight")

    # At-least-once delivery: the same message twice (and once more after the rotation is done).
    await send_copy(world, customer)
    assert await host.drain() == 2
    await send_copy(world, customer)
    assert await host.drain() == 1
    assert len(made_by_rotator(world, customer)) == 1
    assert (await report(api, accepted)).body["state"] == "succeeded"


async def send_copy(world: World, customer: Customer) -> None:
    """A copy of the message POST /api/rotations sends, as the service delivers a message twice."""
    queue = StorageWorkQueue.build(connection(), "", None, name=world.queue)
    try:
        await queue.enqueue(Work(customer.tenant_id, customer.app_id, "manual:operator@msp.example", "manual"))
    finally:
        await queue.close()


async def test_wait_true_answers_the_outcome_and_holds_the_message_back(
    api: Api, world: World, host: QueueHost
) -> None:
    customer = await registered_due(api, world, "Waited")

    done = await api.call("rotations", "POST", body=ids(customer), params=WAIT)

    assert done.status == 200 and done.body["result"] == "rotated", done.text
    assert done.headers["Location"] == f"/api/rotations/{done.body['rotation_id']}"
    assert (await report(api, done)).body["state"] == "succeeded"
    assert len(made_by_rotator(world, customer)) == 1
    # The safety net: a message held back past the call's bound, for a worker if the call had died.
    assert await queued(world) == [] and await waiting_messages(world) == 1


async def test_wait_true_that_runs_out_of_time_answers_202_and_leaves_the_rotation_to_a_worker(
    api: Api, world: World, host: QueueHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = await registered_due(api, world, "Slow")
    world.sb.control.add_fault("graph", method="POST", path="addPassword$", latency_ms=3000)
    monkeypatch.setattr(api_functions, "WAIT_SECONDS", 0.5)

    accepted = await api.call("rotations", "POST", body=ids(customer), params=WAIT)

    assert accepted.status == 202, accepted.text
    assert accepted.body["state"] in ("queued", "running") and accepted.body["stage"] != "idle"
    assert await waiting_messages(world) == 1, "the held message is there for a worker"
    target = await read(api, customer)
    assert target.state.rotation_id == accepted.body["rotationId"], "the rotation stays in flight, never lost"


async def test_a_rotation_the_tenant_refuses_after_it_was_queued_reports_failed(
    api: Api, world: World, host: QueueHost
) -> None:
    customer, accepted = await accepted_rotation(api, world, "Refused")
    world.sb.control.add_fault("graph", method="POST", path="addPassword$", status=400,
                               code="CredentialTypeNotAllowedAsPerAppPolicy", count=None,
                               message="Credential type not allowed as per assigned policy.")

    assert await host.drain() == 1

    failed = (await report(api, accepted)).body
    assert failed["state"] == "failed" and failed["stage"] == "idle"
    assert failed["errorCode"] and failed["errorCode"] != "None"
    assert failed["steps"][0]["step"] == "reserve" and failed["steps"][-1]["errorCode"] == failed["errorCode"]
    assert not made_by_rotator(world, customer)


async def test_a_refusal_before_anything_is_reserved_is_the_answer_and_queues_nothing(
    api: Api, world: World, host: QueueHost
) -> None:
    customer = world.seed_customer("NotOurs", 12, owned=False)
    world.seed_accounts()
    await api.put(customer)

    refused = await api.call("rotations", "POST", body=ids(customer))

    assert refused.status == 200 and refused.body["result"] == "not-owner", refused.text
    assert "Location" not in refused.headers
    assert await waiting_messages(world) == 0


@pytest.mark.parametrize(("rotation_id", "status", "code"), [
    ("not-a-rotation", 400, "InvalidRotationId"),
    ("ab" * 15, 400, "InvalidRotationId"),
    ("ab" * 16, 404, "RotationNotFound"),
])
async def test_looking_up_a_rotation_that_was_never_requested(
    api: Api, rotation_id: str, status: int, code: str
) -> None:
    reply = await api.call("rotation", route={"rotationId": rotation_id}, caller=READER)
    assert (reply.status, reply.code) == (status, code)


async def test_a_bad_wait_is_refused_before_anything_is_written(api: Api, world: World, host: QueueHost) -> None:
    customer = await registered_due(api, world, "BadWait")
    reply = await api.call("rotations", "POST", body=ids(customer), params={"wait": "soon"})
    assert (reply.status, reply.code) == (400, "InvalidQuery")
    assert (await read(api, customer)).state.rotation_id == ""
    assert await waiting_messages(world) == 0
