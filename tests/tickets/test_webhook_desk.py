"""The JSON webhook desk over real HTTPS against the sandbox's ticket receiver (sandbox/webhooks.py): open, note,
close, check; an open whose answer was lost is the same ticket when retried; bad credentials, an unknown receiver,
throttling with Retry-After, a 5xx, a closed port and a redirect, each its TicketError code; the URL's token and the
Authorization header never in an error or a log record; the configuration checked before any call."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest

from sandbox.launch import RunningSandbox
from shared.tickets import desk
from shared.tickets.book import ticket_key
from shared.tickets.port import TicketDraft, TicketError, TicketRoute
from shared.tickets.webhook import SCHEMA, WebhookDesk

T = "8b6f3f7e-2b1a-4c55-9d8e-1f2a3b4c5d6e"
ROUTE = TicketRoute(board="Security", priority="High", closed_status="Completed", company="Woodgrove Inc")


def draft(condition: str = "unreachable") -> TicketDraft:
    return TicketDraft(ticket_key(T, condition), "Woodgrove", T, condition,
                       f"Sync-secret rotator: {condition} (Woodgrove)", "the tenant answered AADSTS700016", ROUTE)


def receiver(sb: RunningSandbox, *, authorization: str = "") -> tuple[WebhookDesk, str, str]:
    token, key = "tk-" + secrets.token_hex(10), "Bearer psa-" + secrets.token_hex(10)
    sb.control.seed({"webhooks": {"tickets": token, "ticketsAuthorization": key}})
    built = desk("webhook", {"url": f"{sb.endpoints['webhooks']}/tickets/{token}",
                             "authorization": authorization or key}, ca_bundle=sb.ca_file)
    assert isinstance(built, WebhookDesk)
    return built, token, key


def tickets(sb: RunningSandbox) -> list[dict[str, Any]]:
    return list(sb.control.state()["webhooks"]["tickets"])


async def test_open_note_close_and_check(sb: RunningSandbox) -> None:
    hook, _, _ = receiver(sb)
    await hook.check(ROUTE)
    assert tickets(sb) == []
    ref = await hook.open(draft())
    [ticket] = tickets(sb)
    assert (ref.number, ref.url, ref.id) == (ticket["number"], ticket["url"], ticket_key(T, "unreachable"))
    assert ticket["route"] == {"board": "Security", "priority": "High", "type": "", "status": "",
                               "closedStatus": "Completed", "company": "Woodgrove Inc"}
    await hook.add_note(ref, "still holds")
    await hook.close(ref, "resolved", ROUTE)
    [ticket] = tickets(sb)
    assert ticket["notes"] == ["still holds", "resolved"] and ticket["closed"]
    assert ticket["closedStatus"] == "Completed"
    bodies = [r["body"] for r in sb.control.state()["webhooks"]["received"]]
    assert [b["action"] for b in bodies] == ["check", "open", "note", "close"]
    assert all(b["schema"] == SCHEMA and b.get("at") for b in bodies)
    # The webhook cannot be searched: find_open never finds, the receiver's open dedupes on the key instead.
    assert await hook.find_open(draft()) is None
    with pytest.raises(TicketError) as closed:
        await hook.add_note(ref, "a note to a closed ticket")
    assert closed.value.code == "TicketRequestRefused" and closed.value.status == 409


async def test_an_open_whose_answer_was_lost_is_the_same_ticket_when_retried(sb: RunningSandbox) -> None:
    hook, _, _ = receiver(sb)
    sb.control.add_fault("webhooks", method="POST", path="/tickets/", status=502, when="after")
    with pytest.raises(TicketError) as lost:
        await hook.open(draft())
    assert lost.value.code == "TicketSystemUnreachable" and lost.value.retryable
    ref = await hook.open(draft())
    [ticket] = tickets(sb)
    assert ref.number == ticket["number"]


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (429, "TicketThrottled", True), (503, "TicketSystemUnreachable", True), (500, "TicketSystemUnreachable", True),
    (400, "TicketRequestRefused", False), (403, "TicketAuthRefused", False),
])
async def test_each_refusal_has_its_code(sb: RunningSandbox, status: int, code: str, retryable: bool) -> None:
    hook, _, _ = receiver(sb)
    sb.control.add_fault("webhooks", method="POST", path="/tickets/", status=status, retry_after=7,
                         message="the receiver said no")
    with pytest.raises(TicketError) as refused:
        await hook.open(draft())
    assert (refused.value.code, refused.value.retryable, refused.value.status) == (code, retryable, status)
    if status == 429:
        assert refused.value.retry_after == 7
    assert tickets(sb) == []


async def test_credentials_never_in_errors_or_logs(sb: RunningSandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hook, token, key = receiver(sb, authorization="Bearer wrong-" + secrets.token_hex(8))
    with pytest.raises(TicketError) as refused:
        await hook.open(draft())
    assert refused.value.code == "TicketAuthRefused" and refused.value.status == 401
    wrong = hook._authorization
    # An unknown token (the receiver deleted), a closed port with the token in path and query.
    gone = desk("webhook", {"url": f"{sb.endpoints['webhooks']}/tickets/{token}x"}, ca_bundle=sb.ca_file)
    with pytest.raises(TicketError) as missing:
        await gone.open(draft())
    assert missing.value.code == "TicketRequestRefused" and missing.value.status == 404
    closed = desk("webhook", {"url": f"https://127.0.0.1:9/tickets/{token}?sig={token}"}, ca_bundle=sb.ca_file)
    with pytest.raises(TicketError) as unreachable:
        await closed.open(draft())
    assert unreachable.value.code == "TicketSystemUnreachable"
    for error in (refused.value, missing.value, unreachable.value):
        text = f"{error} {error.message} {error!r}"
        assert token not in text and key not in text and wrong not in text
    assert not [r for r in caplog.records if token in str(r.__dict__) or wrong in str(r.__dict__)]


async def test_a_redirect_is_never_followed(sb: RunningSandbox) -> None:
    hook, _, _ = receiver(sb)
    sb.control.add_fault("webhooks", method="POST", path="/tickets/", status=307)
    with pytest.raises(TicketError) as moved:
        await hook.open(draft())
    assert moved.value.code == "TicketRequestRefused" and moved.value.status == 307
    assert tickets(sb) == []


@pytest.mark.parametrize("config", [
    {}, {"url": "ftp://hooks.example/x"}, {"url": "http://hooks.example/x"}, {"url": "https:///x"},
    {"url": "https://hooks.example/x", "authorization": "Bearer a\r\nX-Evil: 1"},
    {"url": "https://hooks.example/x", "extra": "1"},
])
def test_the_configuration_is_checked_before_any_call(config: dict[str, str]) -> None:
    with pytest.raises(TicketError) as invalid:
        desk("webhook", config)
    assert invalid.value.code == "TicketConfigInvalid" and not invalid.value.retryable
    assert "hooks.example/x" not in invalid.value.message


@pytest.mark.parametrize("echo", ["query", "cut"])
async def test_a_receiver_echoing_a_credential_never_puts_any_of_it_in_the_error(sb: RunningSandbox, echo: str) -> None:
    """A receiver's words may echo what it was sent: a SAS signature alone (a query value, as a Logic App URL's
    `sig`), or the Authorization header where the message is cut at its length limit. No part of either is kept."""
    token, key = "tk-" + secrets.token_hex(10), "Bearer psa-" + secrets.token_hex(10)
    sig = secrets.token_urlsafe(24)
    sb.control.seed({"webhooks": {"tickets": token, "ticketsAuthorization": key}})
    hook = desk("webhook", {"url": f"{sb.endpoints['webhooks']}/tickets/{token}?sp=run&sig={sig}",
                            "authorization": key}, ca_bundle=sb.ca_file)
    said = f"the signature {sig} is not valid" if echo == "query" else "x" * 280 + " got " + key
    sb.control.add_fault("webhooks", method="POST", path="/tickets/", status=400, message=said)
    with pytest.raises(TicketError) as refused:
        await hook.open(draft())
    text = f"{refused.value} {refused.value.message} {refused.value!r}"
    assert refused.value.code == "TicketRequestRefused" and "[hidden]" in text, text
    for secret in (sig, key.split()[1], token):
        assert not any(secret[i:i + 8] in text for i in range(len(secret) - 7)), (secret, text)
