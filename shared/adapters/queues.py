"""The rotation work queue on Azure Storage queues (azure-storage-queue); its names and message format are
shared/work.py. The SDK's `TextBase64EncodePolicy` encodes each message as the host's queue trigger decodes it."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from shared.errors import Unreachable
from shared.ports import Work
from shared.work import WORK_QUEUE_NAME, work_message

MAX_DELAY_SECONDS = 7 * 24 * 3600  # the service's limit on a message's initial invisibility


class StorageWorkQueue:
    """WorkQueue on one Storage queue. The queue is created on first use when missing (Bicep creates it in Azure;
    Azurite starts empty)."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._created = False

    @classmethod
    def build(cls, connection_string: str, service_uri: str, credential: Any, transport: Any = None,
              name: str = WORK_QUEUE_NAME) -> StorageWorkQueue:
        """From a connection string (local, Azurite) or the queue service URI and an identity (Azure)."""
        options: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy()}
        if transport is not None:
            options["transport"] = transport
        if connection_string:
            return cls(QueueClient.from_connection_string(connection_string, name, **options))
        return cls(QueueClient(service_uri, name, credential=credential, **options))

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        delay = max(0, min(delay_seconds, MAX_DELAY_SECONDS))
        try:
            try:
                await self._client.send_message(work_message(work), visibility_timeout=delay or None)
            except ResourceNotFoundError:
                if self._created:
                    raise
                await self._ensure_queue()
                await self._client.send_message(work_message(work), visibility_timeout=delay or None)
        except AzureError as error:
            raise Unreachable(f"the work queue could not be written: {type(error).__name__}",
                              code="WorkQueueUnavailable") from None

    async def _ensure_queue(self) -> None:
        try:
            await self._client.create_queue()
        except ResourceExistsError:
            pass
        self._created = True

    async def close(self) -> None:
        await self._client.close()
