"""Alerts: conditions that need a human, told once a day while they hold and resolved once when they clear.

Conditions the engine raises: expired, unreachable, app-not-found, not-owner, policy-blocked, foreign-credential,
verify-refused, verify-timeout, stuck, destination-failing, notify-only-waiting, sync-not-confirmed,
rotation-failed, old-key-still-used, new-key-unused (each resolved when the row no longer shows it,
shared/conditions.py), and the one-off notices lifetime-capped, poison-message, audit-unwritten,
hand-written-unverified, hand-written-not-adopted, sign-in-evidence-unavailable and ticket-refused; a
destination held for drift (proofpoint-drift) resolves too. The alert book
(book.py) logs `event=alert` at most once per condition, target (and destination) and UTC day, `event=alert-resolved`
once when a condition clears, and posts both to the alert channel when one is configured: a Teams Workflows webhook,
a Slack incoming webhook or a generic JSON webhook (ALERT_WEBHOOK_KIND), its URL in Key Vault
(ALERT_WEBHOOK_SECRET_NAME).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from shared.alerts import json_webhook, slack, teams
from shared.alerts.book import AlertBook
from shared.alerts.channel import AlertChannel, Notice, NoticeKind, Post, PostingChannel, WebhookPost
from shared.conditions import Condition
from shared.errors import Conflict, RotationError
from shared.ports import Alert, Event, StateStore

__all__ = ["CHANNELS", "AlertBook", "AlertChannel", "LogAlerter", "Notice", "NoticeKind", "WebhookPost",
           "build_channel", "send_test_alert"]

log = logging.getLogger(__name__)

# Every channel kind's body by its ALERT_WEBHOOK_KIND name (settings.py validates the name against these keys).
CHANNELS: dict[str, Callable[[Notice], Mapping[str, Any]]] = {
    teams.KIND: teams.message,
    slack.KIND: slack.payload,
    json_webhook.KIND: json_webhook.body,
}


def build_channel(kind: str, post: Post) -> AlertChannel:
    """The channel of this kind posting through `post`."""
    return PostingChannel(kind, CHANNELS[kind], post)


class LogAlerter:
    """An in-memory alerter that logs and keeps every alert it is given, without the book's daily claim (tests that
    look at what the engine raised, each time it raised it)."""

    def __init__(self) -> None:
        self.raised: list[Alert] = []
        self.settled: list[tuple[str, str, frozenset[Condition]]] = []

    async def raise_alert(self, alert: Alert) -> None:
        from shared.alerts.book import alert_record

        self.raised.append(alert)
        alert_record(alert)

    async def settle(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None:
        self.settled.append((tenant_id, app_id, holding))

    async def redeliver(self) -> None:
        pass  # nothing is posted, so nothing waits


# The audit partition of the rotator's own events that concern no target (a test alert).
ROTATOR_AUDIT = ("rotator", "alerts")


async def send_test_alert(channel: AlertChannel | None, state: StateStore, actor: str, at: datetime) -> dict[str, Any]:
    """Post a test notice to the configured channel and audit who sent it; what was sent, to which channel kind, and
    the channel's HTTP status (never the URL). NoAlertChannel (Conflict) when none is configured."""
    if channel is None:
        raise Conflict("no alert channel is configured: set ALERT_WEBHOOK_SECRET_NAME (the webhook URL's Key Vault "
                       "secret) and ALERT_WEBHOOK_KIND (teams, slack or json)", code="NoAlertChannel")
    notice = Notice(NoticeKind.TEST, "test", "", "", f"A test alert sent by {actor or 'an operator'}: the rotator's "
                    "alerts reach this channel.", at, details={"sentBy": actor or "unknown"})
    status: int | None = None
    error_code = ""
    try:
        status = await channel.send(notice)
    except RotationError as error:
        error_code = error.code
    delivered = status is not None and 200 <= status < 300
    if status is not None and not delivered:
        error_code = "WebhookRejected"
    outcome = "delivered" if delivered else "failed"
    log.info("test alert %s", outcome, extra={"event": "alert-test", "channel": channel.kind, "outcome": outcome,
                                               "status": status, "actor": actor})
    await state.record(Event(*ROTATOR_AUDIT, "alert-test", outcome, actor, error_code=error_code,
                             detail=f"channel {channel.kind}, HTTP {status if status is not None else 'none'}", at=at))
    return {"channel": channel.kind, "delivered": delivered, "status": status, "errorCode": error_code or None,
            "sent": {"kind": notice.kind.value, "title": notice.title, "message": notice.message,
                     "at": at.isoformat()}}
