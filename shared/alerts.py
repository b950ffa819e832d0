"""Alerts: conditions that need a human, as structured log events and, when configured, a webhook post.

Conditions the engine raises: expired, unreachable, app-not-found, not-owner, policy-blocked, lifetime-capped,
foreign-credential, verify-refused, verify-timeout, hand-written-unverified, hand-written-not-adopted,
destination-failing, proofpoint-drift, stuck, notify-only-waiting, rotation-failed.
Every alert is logged (`event=alert`; Application Insights alert rules query these). The webhook (a Teams or Slack
incoming webhook) is told at most once per condition, target (and destination) and UTC day: the first writer of
that day's row in the `alerts` table posts, every later one only logs.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any
from urllib.parse import urlparse

import aiohttp
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.data.tables.aio import TableClient

from shared.errors import RotationError
from shared.ports import Alert, Clock, SecretStore
from shared.tls import tls_context

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_SECONDS = 15
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """One JSON body both kinds of incoming webhook accept: Slack reads `text`; Teams reads the MessageCard."""
    who = alert.customer or alert.tenant_id
    title = f"Sync-secret rotator: {alert.condition} ({who})"
    lines = [alert.message, f"Tenant {alert.tenant_id}, application {alert.app_id}."]
    lines += [f"{k}: {v}" for k, v in sorted(alert.details.items())]
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title,
        "title": title,
        "themeColor": "D83B01",
        "text": f"*{title}*\n" + "\n".join(lines),
    }


def dedupe_key(alert: Alert) -> str:
    """The Tables row key of one condition of one target (and destination); no character Tables refuses."""
    parts = [alert.condition, alert.tenant_id, alert.app_id, alert.details.get("destination", "")]
    return "_".join(p.replace("/", "-").replace("\\", "-").replace("#", "-").replace("?", "-") for p in parts)


class WebhookAlerter:
    """Logs every alert; posts each (condition, target) at most once per UTC day to the webhook in Key Vault."""

    def __init__(
        self, secrets: SecretStore, secret_name: str, table: TableClient, clock: Clock, *, ca_bundle: str = ""
    ) -> None:
        self._secrets = secrets
        self._secret_name = secret_name
        self._table = table
        self._clock = clock
        self._ca_bundle = ca_bundle
        self._log = LogAlerter()
        self._table_ready = False
        self.posted: list[Alert] = []

    @property
    def raised(self) -> list[Alert]:
        return self._log.raised

    async def raise_alert(self, alert: Alert) -> None:
        await self._log.raise_alert(alert)
        day = self._clock.now().astimezone(UTC).date().isoformat()
        key = dedupe_key(alert)
        if not await self._claim(day, key, alert):
            return
        try:
            await self._post(alert)
        except RotationError as error:
            # Give the claim back, so the next occurrence today tries again instead of staying silent.
            await self._release(day, key)
            log.error("alert webhook failed: %s", error.message,
                      extra={"event": "alert-webhook", "condition": alert.condition, "outcome": "failed",
                             "tenant_id": alert.tenant_id, "app_id": alert.app_id, "error_code": error.code})
            return
        self.posted.append(alert)
        log.info("alert posted to the webhook",
                 extra={"event": "alert-webhook", "condition": alert.condition, "outcome": "posted",
                        "tenant_id": alert.tenant_id, "app_id": alert.app_id})

    async def _claim(self, day: str, key: str, alert: Alert) -> bool:
        """True when this call is the first of the day for this key (insert-if-absent decides among writers)."""
        try:
            await self._ensure_table()
            await self._table.create_entity(
                {"PartitionKey": day, "RowKey": key, "Condition": alert.condition, "TenantId": alert.tenant_id,
                 "AppId": alert.app_id, "At": self._clock.now().astimezone(UTC).isoformat()}
            )
            return True
        except ResourceExistsError:
            return False
        except AzureError as error:
            # Without the dedupe store, prefer one more post over a silent condition.
            log.warning("alert dedupe store failed (%s); posting anyway", type(error).__name__,
                        extra={"event": "alert-webhook", "condition": alert.condition, "outcome": "dedupe-failed"})
            return True

    async def _ensure_table(self) -> None:
        if self._table_ready:
            return
        try:
            await self._table.create_table()
        except ResourceExistsError:
            pass
        self._table_ready = True

    async def _release(self, day: str, key: str) -> None:
        try:
            await self._table.delete_entity(day, key)
        except AzureError as error:
            log.warning("alert dedupe row not released (%s)", type(error).__name__)

    async def _post(self, alert: Alert) -> None:
        url = (await self._secrets.get_named(self._secret_name)).reveal().strip()
        parsed = urlparse(url)
        # The URL is a credential (anyone holding it can post): it is never logged or put in an error.
        if not parsed.hostname or not (
            parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK)
        ):
            raise RotationError(
                f"Key Vault secret {self._secret_name!r} must hold an https:// webhook URL", code="WebhookUrlInvalid"
            )
        tls = tls_context(self._ca_bundle)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)) as session,
                session.post(url, json=webhook_payload(alert), ssl=tls) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RotationError(f"the alert webhook is unreachable: {type(error).__name__}",
                                code="WebhookUnreachable") from None
        if not 200 <= status < 300:
            raise RotationError(f"the alert webhook answered HTTP {status}", code="WebhookRejected")
