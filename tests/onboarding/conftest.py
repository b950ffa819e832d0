"""The sandbox tests of bulk onboarding use the rotation tests' `world` (sandbox + Azurite, per-test tables); the
onboarding runs' store tests a Tables service on Azurite and a table prefix of their own."""

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.data.tables.aio import TableServiceClient

from tests.rotation import conftest as rotation

world = rotation.world


@pytest.fixture
async def service() -> AsyncIterator[TableServiceClient]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run through scripts/with-azurite.sh")
    client = TableServiceClient.from_connection_string(connection)
    yield client
    await client.close()


def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]
