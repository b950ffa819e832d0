"""Telemetry: traces, metrics and the rotator's logs to Application Insights (azure-monitor-opentelemetry).

Configured once per process, from the first invocation rather than at import time (no I/O at import), and only
when APPLICATIONINSIGHTS_CONNECTION_STRING is set. Ingestion is Entra-authenticated with the managed identity, so
the resource can refuse key-only ingestion (disableLocalAuth).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.settings import Settings

log = logging.getLogger(__name__)
# Only the rotator's own records: the Functions host already ships the worker's logs, and the Azure SDKs'
# loggers are chatty at INFO.
LOGGER_NAME = "shared"

_lock = threading.Lock()
_configured = False


def configure_telemetry(settings: Settings) -> bool:
    """Send telemetry to Application Insights when a connection string is set; True the first time it configures."""
    global _configured
    if not settings.appinsights_connection_string:
        return False
    with _lock:
        if _configured:
            return False
        from azure.identity import ManagedIdentityCredential
        from azure.monitor.opentelemetry import configure_azure_monitor

        kwargs: dict[str, Any] = {}
        if settings.managed_identity_client_id:
            kwargs["client_id"] = settings.managed_identity_client_id
        configure_azure_monitor(
            connection_string=settings.appinsights_connection_string,
            # The exporter runs on its own threads, so it gets a synchronous credential of its own.
            credential=ManagedIdentityCredential(**kwargs),
            logger_name=LOGGER_NAME,
        )
        _configured = True
    log.info("telemetry configured", extra={"event": "telemetry", "outcome": "configured"})
    return True
