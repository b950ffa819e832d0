"""Fixtures shared by every test: the sandbox process and its control client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandbox.client import tables_origin
from sandbox.launch import RunningSandbox, SandboxStartError, running
from shared import bootstrap

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 240.0  # generous: 2 cores shared with much other work can make a start take minutes


SandboxHandle = RunningSandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """Start `python -m sandbox` once per session and stop it at the end."""
    try:
        with running(tmp_path_factory.mktemp("sandbox"), timeout=STARTUP_TIMEOUT) as handle:
            tables = os.environ.get("STATE_TABLES_CONNECTION_STRING")
            if tables:
                # The sandbox's `tables` proxy forwards to this run's Azurite (tests that hold state writes).
                handle.control.set_tables_upstream(tables_origin(tables))
            yield handle
    except SandboxStartError as error:
        pytest.fail(str(error))


@pytest.fixture
def sb(sandbox: SandboxHandle) -> SandboxHandle:
    """The sandbox, emptied (reset) for this test."""
    sandbox.control.reset()
    return sandbox


@pytest.fixture
async def invocation_services_closed() -> AsyncIterator[None]:
    """The services the functions share within a process are closed after each test, as the host's would be at
    shutdown: no test inherits another's clients, tokens or caches."""
    yield
    await bootstrap.close_invocation_services()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the session's event loop closes the shared services after it (a synchronous test, such as the
    browser's, runs no loop of its own to close them on)."""
    for item in items:
        if pytest_asyncio.is_async_test(item):
            item.fixturenames.append("invocation_services_closed")  # type: ignore[attr-defined]
