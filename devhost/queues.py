"""Local stand-in for the Functions host's queue trigger (Core Tools cannot be installed here): takes real messages
from a Storage queue (Azurite) and calls the queue-triggered function with them as the host does.

What the host does and this copies (Azure Functions queue trigger docs, "Concurrency", "Poison messages" and
host.json settings):
- messages are received in batches of `batchSize`, each invisible for the time it is being worked on; when the
  messages being worked on get down to `newBatchThreshold`, the next batch is received (at most batchSize +
  newBatchThreshold at once, no waiting for a whole batch to end);
- the body is Base64-decoded (`messageEncoding: base64`) and the function gets an `azure.functions.QueueMessage`
  built by the worker's own converter, with the id, dequeue count, times and pop receipt as trigger metadata;
- the message is deleted when the function returns; when it raises, the message becomes visible again after
  `visibilityTimeout`, and once its dequeue count reaches `maxDequeueCount` it is moved to `<queue>-poison`
  (created when missing) instead, where the poison function takes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from devhost.app import indexed_functions
from shared import bootstrap
from shared.work import WORK_QUEUE_NAME

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
QueueFunction = Callable[[func.QueueMessage], Awaitable[None]]


@dataclass(frozen=True)
class QueueOptions:
    """host.json's extensions.queues (the host's defaults where it sets nothing)."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    new_batch_threshold: int | None = None  # the host's default: half the batch size

    @property
    def threshold(self) -> int:
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> QueueOptions:
        queues: dict[str, Any] = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        h, m, s = (int(part) for part in queues.get("visibilityTimeout", "00:00:00").split(":"))
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=timedelta(hours=h, minutes=m, seconds=s),
            new_batch_threshold=int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None,
        )


def host_message(message: QueueMessage) -> func.QueueMessage:
    """The function's argument for a received message, as the worker builds it from the host's invocation."""
    body = base64.b64decode(message.content).decode()
    metadata = {
        "Id": Datum(message.id, "string"),
        "DequeueCount": Datum(str(message.dequeue_count), "string"),
        "PopReceipt": Datum(message.pop_receipt, "string"),
        **{key: Datum(value.isoformat(), "string") for key, value in (
            ("InsertionTime", message.inserted_on), ("ExpirationTime", message.expires_on),
            ("NextVisibleTime", message.next_visible_on)) if value is not None},
    }
    decoded: func.QueueMessage = QueueMessageInConverter.decode(Datum(body, "string"), trigger_metadata=metadata)
    return decoded


class QueueHost:
    """Drains one work queue into its function and the poison queue into the poison function."""

    def __init__(self, connection_string: str, queue: str, work: QueueFunction, poison: QueueFunction,
                 options: QueueOptions | None = None, *, invisible_while_working: timedelta = timedelta(minutes=10)):
        self.options = options or QueueOptions.from_host_json()
        self.queue = QueueClient.from_connection_string(connection_string, queue)
        self.poison_queue = QueueClient.from_connection_string(connection_string, f"{queue}-poison")
        self.work, self.poison = work, poison
        self.invisible = int(invisible_while_working.total_seconds())

    async def __aenter__(self) -> QueueHost:
        for client in (self.queue, self.poison_queue):
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.close()
        await self.poison_queue.close()

    async def drain(self, *, max_rounds: int = 10000) -> int:
        """Run both functions until both queues have nothing visible and nothing is being worked on; the number of
        invocations. A new batch is received whenever the messages in flight are down to newBatchThreshold."""
        calls = 0
        working: set[asyncio.Task[None]] = set()
        for _ in range(max_rounds):
            if len(working) <= self.options.threshold:
                for client, function, poisonable in ((self.queue, self.work, True),
                                                     (self.poison_queue, self.poison, False)):
                    for message in await self._receive(client):
                        working.add(asyncio.create_task(self._invoke(client, function, message, poisonable)))
            if not working:
                return calls
            done, working = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
            calls += len(done)
            for task in done:
                task.result()
        raise RuntimeError(f"the queues were not drained after {max_rounds} rounds")

    async def _receive(self, client: QueueClient) -> list[QueueMessage]:
        return [m async for m in client.receive_messages(
            messages_per_page=self.options.batch_size, max_messages=self.options.batch_size,
            visibility_timeout=self.invisible)]

    async def _invoke(self, client: QueueClient, function: QueueFunction, message: QueueMessage,
                      poisonable: bool) -> None:
        try:
            await function(host_message(message))
        except Exception:
            log.exception("queue function failed", extra={"event": "queue-host", "message_id": message.id,
                                                          "dequeue_count": message.dequeue_count})
            if poisonable and (message.dequeue_count or 0) >= self.options.max_dequeue_count:
                await self.poison_queue.send_message(message.content)
                await self._delete(client, message)
            else:
                await client.update_message(message, visibility_timeout=int(
                    self.options.visibility_timeout.total_seconds()))
            return
        await self._delete(client, message)

    @staticmethod
    async def _delete(client: QueueClient, message: QueueMessage) -> None:
        try:
            await client.delete_message(message)
        except ResourceNotFoundError:
            pass  # its invisibility ran out and another receiver took it: that one deletes it


def app_queue_functions() -> tuple[QueueFunction, QueueFunction]:
    """The function app's own queue functions (advance_target, poisoned_work), as the host indexes them."""
    functions = {f.get_function_name(): f.get_user_function() for f in indexed_functions()}
    return functions["advance_target"], functions["poisoned_work"]


async def work_queue_forever(connection_string: str, *, until_empty: bool = False,
                             invisible: timedelta = timedelta(minutes=10)) -> None:
    """Take work from the rotation queue (bootstrap's work queue name) as the host runs the queue trigger: a batch
    whenever messages are visible, polling every 5 s when none are (host.json's maxPollingInterval is 10 s)."""
    queue = bootstrap.DEFAULTS.get("work_queue") or WORK_QUEUE_NAME
    work, poison = app_queue_functions()
    try:
        async with QueueHost(connection_string, queue, work, poison, invisible_while_working=invisible) as host:
            while True:
                ran = await host.drain()
                if until_empty:
                    print(f"ran {ran} message(s); the queue has nothing visible", flush=True)
                    return
                await asyncio.sleep(1 if ran else 5)
    finally:
        await bootstrap.close_invocation_services()
