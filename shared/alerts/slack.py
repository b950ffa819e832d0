"""Slack channel: an incoming webhook takes `text` (the notification and fallback) and Block Kit `blocks`.

Slack's "Sending messages using incoming webhooks" (docs.slack.dev/messaging/sending-messages-using-incoming-webhooks):
the body is a message payload with `text` and optionally `blocks`; a body it cannot use is refused with HTTP 400
`invalid_payload` or `no_text`. Block Kit limits kept here: a header's plain text at most 150 characters, a
section's text at most 3,000, at most 10 fields of at most 2,000 each. `&`, `<` and `>` are escaped as Slack's
"Formatting text for app surfaces" asks, so a message cannot turn into a link or a mention.
"""

from __future__ import annotations

from typing import Any

from shared.alerts.channel import Notice


def escape(text: str) -> str:
    """Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice) -> dict[str, Any]:
    """The incoming-webhook body of a notice."""
    fields = [{"type": "mrkdwn", "text": escape(f"*{name}*\n{value}")[:2000]} for name, value in notice.facts()]
    return {
        "text": escape(f"{notice.title}: {notice.message}")[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(notice.message)[:3000]}},
            *({"type": "section", "fields": fields[i:i + 10]} for i in range(0, len(fields), 10)),
        ],
    }


KIND = "slack"
