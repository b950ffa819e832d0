"""Alerts: conditions that need a human, as structured log events (and, when configured, a webhook)."""

from __future__ import annotations

import logging

from shared.ports import Alert

log = logging.getLogger(__name__)


class LogAlerter:
    """Emits each alert as one structured WARNING record with `event=alert` (Application Insights alert rules
    query these)."""

    def __init__(self) -> None:
        self.raised: list[Alert] = []

    async def raise_alert(self, alert: Alert) -> None:
        self.raised.append(alert)
        log.warning(
            "ALERT %s: %s (%s/%s)",
            alert.condition,
            alert.message,
            alert.tenant_id,
            alert.app_id,
            extra={
                "event": "alert",
                "condition": alert.condition,
                "tenant_id": alert.tenant_id,
                "app_id": alert.app_id,
                "customer": alert.customer,
                **{f"detail_{k}": v for k, v in alert.details.items()},
            },
        )
