"""Telemetry: a no-op without APPLICATIONINSIGHTS_CONNECTION_STRING; configured once per process with it."""

from __future__ import annotations

from typing import Any

import azure.monitor.opentelemetry
import pytest
from azure.identity import ManagedIdentityCredential

from shared import telemetry
from shared.settings import Settings

BASE = {"KEY_VAULT_URL": "https://kv.vault.azure.net", "STATE_TABLES_ENDPOINT": "https://st.table.core.windows.net",
        "AZURE_CLIENT_ID": "5a1d0000-0000-4000-8000-000000000002"}
FAKE = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records configure_azure_monitor's arguments instead of installing global providers in the test process."""
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", lambda **kw: recorded.append(kw))
    monkeypatch.setattr(telemetry, "_configured", False)
    return recorded


def test_no_connection_string_configures_nothing(calls: list[dict[str, Any]]) -> None:
    assert telemetry.configure_telemetry(Settings.from_env(BASE)) is False
    assert calls == []


def test_a_connection_string_configures_once_with_the_managed_identity(calls: list[dict[str, Any]]) -> None:
    settings = Settings.from_env({**BASE, "APPLICATIONINSIGHTS_CONNECTION_STRING": FAKE})
    assert telemetry.configure_telemetry(settings) is True
    assert telemetry.configure_telemetry(settings) is False
    [kwargs] = calls
    assert kwargs["connection_string"] == FAKE and kwargs["logger_name"] == "shared"
    assert isinstance(kwargs["credential"], ManagedIdentityCredential), "Entra-authenticated ingestion"
    assert FAKE not in repr(settings), "the connection string stays out of reprs"
