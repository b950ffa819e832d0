"""Alert channel stand-ins refuse what Teams Workflows and Slack refuse, and take what the rotator sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from shared.alerts import Notice, NoticeKind
from shared.alerts.json_webhook import body
from shared.alerts.slack import payload
from shared.alerts.teams import message

pytestmark = pytest.mark.sandbox

NOTICE = Notice(NoticeKind.ALERT, "expired", "t", "a", "the secret expired", datetime(2026, 12, 6, tzinfo=UTC))
MESSAGE_CARD = {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": "s", "text": "t"}


def post(sb: Any, kind: str, token: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{sb.endpoints['webhooks']}/{kind}/{token}", verify=sb.ca_file, timeout=10, **kwargs)


@pytest.fixture
def tokens(sb: Any) -> dict[str, str]:
    seeded = {"teams": "tok-teams", "slack": "tok-slack", "json": "tok-json"}
    sb.control.seed({"webhooks": seeded})
    return seeded


def test_teams_takes_an_adaptive_card_message_only(sb: Any, tokens: dict[str, str]) -> None:
    assert post(sb, "teams", tokens["teams"], json=message(NOTICE)).status_code == 202
    # The retired connectors' MessageCard, a bare text, a card without the envelope, a wrong content type: refused.
    card = message(NOTICE)["attachments"][0]["content"]
    for refused in (MESSAGE_CARD, {"text": "hello"}, card, {"type": "message", "attachments": []},
                    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.hero",
                                                         "content": card}]},
                    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                         "content": {"type": "AdaptiveCard"}}]}):
        answer = post(sb, "teams", tokens["teams"], json=refused)
        assert answer.status_code == 400, refused
    too_big = message(NOTICE)
    too_big["attachments"][0]["content"]["body"][1]["text"] = "x" * 30_000
    assert post(sb, "teams", tokens["teams"], json=too_big).status_code == 413
    accepted = [r["accepted"] for r in sb.control.state()["webhooks"]["received"]]
    assert accepted == [True] + [False] * 7


def test_slack_takes_text_or_blocks(sb: Any, tokens: dict[str, str]) -> None:
    ok = post(sb, "slack", tokens["slack"], json=payload(NOTICE))
    assert (ok.status_code, ok.text) == (200, "ok")
    assert post(sb, "slack", tokens["slack"], json={"text": "only text"}).status_code == 200
    for refused, code in (({"summary": "s"}, "no_text"), ({"text": " "}, "no_text"), (message(NOTICE), "no_text"),
                          ([1, 2], "invalid_payload"), ({"text": "t", "blocks": "x"}, "invalid_payload")):
        answer = post(sb, "slack", tokens["slack"], json=refused)
        assert (answer.status_code, answer.text) == (400, code), refused
    assert post(sb, "slack", tokens["slack"], data=b"not json").text == "invalid_payload"


def test_json_takes_an_object_and_unknown_tokens_are_404(sb: Any, tokens: dict[str, str]) -> None:
    assert post(sb, "json", tokens["json"], json=body(NOTICE)).status_code == 200
    assert post(sb, "json", tokens["json"], data=b"[]").status_code == 400
    for kind in ("teams", "slack", "json"):
        assert post(sb, kind, "not-the-token", json=body(NOTICE)).status_code == 404
    assert post(sb, "other", tokens["json"], json={}).status_code == 404


def test_the_ticket_receiver_keeps_its_published_contract(sb: Any) -> None:
    sb.control.seed({"webhooks": {"tickets": "tok-tickets", "ticketsAuthorization": "Bearer k"}})
    auth = {"Authorization": "Bearer k"}

    def send(body: Any, headers: dict[str, str] = auth) -> requests.Response:
        return post(sb, "tickets", "tok-tickets", json=body, headers=headers)

    opening = {"schema": "sync-secret-rotator.ticket/1", "action": "open", "key": "ssr:t/expired", "title": "x"}
    assert send(opening, {}).status_code == 401 and send(opening, {"Authorization": "Bearer j"}).status_code == 401
    assert post(sb, "tickets", "tok-other", json=opening, headers=auth).status_code == 404
    assert send({**opening, "schema": "sync-secret-rotator.alert/1"}).status_code == 400
    assert send({**opening, "action": "reopen"}).status_code == 400 and send({**opening, "key": ""}).status_code == 400
    assert send({**opening, "action": "note", "text": "n"}).status_code == 404  # no ticket for the key yet
    first = send(opening)
    assert first.status_code == 201 and set(first.json()) == {"id", "number", "url"}
    again = send(opening)  # a retried open while the key's ticket is open: the same ticket
    assert again.status_code == 200 and again.json() == first.json()
    assert send({**opening, "action": "check"}).status_code == 200
    assert send({**opening, "action": "close", "text": "r", "route": {"closedStatus": "Done"}}).status_code == 200
    assert send({**opening, "action": "close", "text": "r"}).status_code == 200  # closed already: done
    assert send({**opening, "action": "note", "text": "n"}).status_code == 409
    reopened = send(opening)  # the condition back: a new ticket
    assert reopened.status_code == 201 and reopened.json()["number"] != first.json()["number"]
    [one, two] = sb.control.state()["webhooks"]["tickets"]
    assert (one["closed"], one["closedStatus"], one["notes"], two["closed"]) == (True, "Done", ["r"], False)
