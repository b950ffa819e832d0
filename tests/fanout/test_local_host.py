"""The local stand-in for the host's queue trigger (devhost/queues.py) against Azurite's queue service: it
receives the next batch when the messages in flight are down to newBatchThreshold, as the host does ("Concurrency"
in the Azure Queue storage trigger docs: at most batchSize + newBatchThreshold at once), not when a batch ends."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.queue.aio import QueueClient

from devhost.queues import QueueHost, QueueOptions

pytestmark = pytest.mark.azurite


def test_host_json_sets_the_threshold_it_documents() -> None:
    queues = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())["extensions"]["queues"]
    options = QueueOptions.from_host_json()
    assert (options.batch_size, options.threshold) == (queues["batchSize"], queues["newBatchThreshold"])
    assert QueueOptions(batch_size=16).threshold == 8, "the host's default: half the batch size"


async def test_the_next_batch_is_received_when_the_messages_in_flight_are_down_to_the_threshold() -> None:
    connection = os.environ.get("WORK_QUEUE")
    if not connection:
        pytest.fail("WORK_QUEUE is not set: run the tests through `make test` (scripts/with-azurite.sh starts Azurite)")
    name = "host" + uuid.uuid4().hex[:12]
    slow_done = asyncio.Event()
    started: list[str] = []
    in_flight, most = [0], [0]

    async def work(message: func.QueueMessage) -> None:
        body = message.get_body().decode()
        started.append(body)
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            if body == "slow":
                # Held until a message of the second batch has started: a host that waited for whole batches
                # would never start one, and this would time out.
                for _ in range(1000):
                    if len(started) >= 3:
                        break
                    await asyncio.sleep(0.01)
                slow_done.set()
            else:
                await asyncio.sleep(0.05)
        finally:
            in_flight[0] -= 1

    async def poison(message: func.QueueMessage) -> None:
        raise AssertionError("nothing fails here")

    async with QueueClient.from_connection_string(connection, name) as sender:
        await sender.create_queue()
        for body in ("slow", "quick-1", "quick-2", "quick-3"):
            await sender.send_message(base64.b64encode(body.encode()).decode())
        options = QueueOptions(batch_size=2, new_batch_threshold=1)
        async with QueueHost(connection, name, work, poison, options) as host:
            assert await host.drain() == 4
        assert started[:2] == ["slow", "quick-1"] and len(started) == 4
        assert started.index("quick-2") < 3 and slow_done.is_set()
        assert most[0] == 3, "batchSize + newBatchThreshold at once, at most"
        assert [m async for m in sender.receive_messages()] == [], "each message deleted once its function returned"
        await sender.delete_queue()
