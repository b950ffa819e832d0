"""Teams channel: a Workflows webhook ("When a Teams webhook request is received") takes Adaptive Cards only.

Microsoft is retiring Office 365 connectors in Teams (their MessageCard can no longer reach a new channel); the
Workflows webhook that replaces them posts the Adaptive Cards of a message's `attachments`, each
`{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <card>}`
(MicrosoftDocs/msteams-docs: msteams-platform/webhooks-and-connectors/how-to/connectors-using.md, "Send Adaptive
Cards using an incoming webhook"; add-incoming-webhook.md for the Workflows app). The card is pinned to version 1.5,
which Teams renders, and uses only TextBlock, FactSet and Action.OpenUrl (change control's signed links); tests
validate it against the published schema
(microsoft/AdaptiveCards schemas/1.5.0/adaptive-card.json).
"""

from __future__ import annotations

from typing import Any

from shared.alerts.channel import Notice, NoticeKind

CARD_VERSION = "1.5"
# Teams refuses a message over 28 KB (msteams-docs, add-incoming-webhook.md): the engine's texts are cut well below.
MAX_MESSAGE_BYTES = 28 * 1024
_TEXT, _FACT, _FACTS = 3000, 500, 20
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_COLOUR = {NoticeKind.ALERT: "Attention", NoticeKind.RESOLVED: "Good", NoticeKind.TEST: "Accent"}


# Change control's signed links (shared/approval_links.py), in an alert's details as "<action>Link": buttons
# (Action.OpenUrl, Adaptive Cards 1.5) on an alert, never on a resolved note (its request is decided or gone).
_LINK_SUFFIX = "Link"
_LINK_TITLES = {"approveLink": "Approve…", "postponeLink": "Postpone…", "rejectLink": "Reject…"}


def _links(notice: Notice) -> list[tuple[str, str]]:
    return [(name, url) for name, url in notice.details.items()
            if name in _LINK_TITLES and url.startswith(("https://", "http://")) and len(url) <= 2048]


def card(notice: Notice) -> dict[str, Any]:
    """The Adaptive Card of a notice (title, the engine's message, its facts, and its links as buttons)."""
    links = _links(notice) if notice.kind is NoticeKind.ALERT else []
    shown = {name for name, _ in links} if links else set()
    doc: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "fallbackText": f"{notice.title}: {notice.message}"[:_TEXT],
        "body": [
            {"type": "TextBlock", "text": notice.title[:_FACT], "weight": "Bolder", "size": "Medium",
             "color": _COLOUR[notice.kind], "wrap": True},
            {"type": "TextBlock", "text": notice.message[:_TEXT], "wrap": True},
            {"type": "FactSet", "facts": [{"title": name[:_FACT], "value": value[:_FACT]}
                                          for name, value in notice.facts() if name not in shown][:_FACTS]},
        ],
    }
    if links:
        # Each opens the rotator's confirmation page in the browser; nothing is decided until its button is pressed.
        doc["actions"] = [{"type": "Action.OpenUrl", "title": _LINK_TITLES[name], "url": url} for name, url in links]
    return doc


def message(notice: Notice) -> dict[str, Any]:
    """The body a Workflows webhook accepts: a message with the card as its one attachment."""
    return {"type": "message",
            "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card(notice)}]}


KIND = "teams"
