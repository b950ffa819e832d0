"""The ticket tests' Azurite tables: an alert book's and a ticket book's, fresh for each test, dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from azure.data.tables.aio import TableClient

from shared.ports import Event


@dataclass
class Tables:
    alerts: TableClient
    tickets: TableClient
    audit: list[Event] = field(default_factory=list)  # what a test's audit callback was given


@pytest.fixture
async def tables() -> AsyncIterator[Tables]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run through scripts/with-azurite.sh")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    alerts = TableClient.from_connection_string(connection, table_name=f"{prefix}alerts")
    tickets = TableClient.from_connection_string(connection, table_name=f"{prefix}tickets")
    try:
        yield Tables(alerts, tickets)
    finally:
        for client in (alerts, tickets):
            await client.delete_table()
            await client.close()
