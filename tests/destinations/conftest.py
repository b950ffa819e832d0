"""Fixtures of the destination tests: the sandbox's vault seeded with the destinations' credentials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.adapters.keyvault import KeyVaultSecretStore
from tests.destinations import seed, vault_store


@pytest.fixture
async def store(sb: Any) -> AsyncIterator[KeyVaultSecretStore]:
    seed(sb)
    async with vault_store(sb) as kv:
        yield kv


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every record at every level, so the no-leak checks see everything."""
    caplog.set_level(logging.DEBUG)
