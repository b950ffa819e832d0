"""Alert channel stand-ins: a Teams Workflows webhook, a Slack incoming webhook and a generic JSON receiver.

Each refuses what the real service refuses (sources in sandbox/README.md, "Alert channels"):
- `POST /teams/{token}`: the Workflows trigger "When a Teams webhook request is received" posts the Adaptive Cards
  of the message's `attachments` (MicrosoftDocs/msteams-docs, connectors-using.md): a body that is not a
  `type: message` with at least one `application/vnd.microsoft.card.adaptive` attachment whose content is an
  `AdaptiveCard` with a `version` is answered 400 (the real trigger answers 202 and the flow run fails, so nothing
  reaches the channel: the strictest plausible answer makes that failure visible). Accepted: 202, as Power
  Automate's request trigger answers.
- `POST /slack/{token}`: a body that is not a JSON object is 400 `invalid_payload`; one with neither a non-empty
  `text` nor `blocks` is 400 `no_text`; accepted: 200 `ok` (text/plain), as Slack's incoming webhooks answer.
- `POST /json/{token}`: any JSON object, 200 `{}`; anything else 400.
A Teams message over 28 KB is 413. A token not seeded is 404 (Slack: `no_service`). Everything received is
kept for the tests, with its path's kind.
- `POST /tickets/{token}`: a ticket receiver as docs/tickets.md ("The JSON webhook") asks one to behave (there is
  no vendor to copy: the strictest reading of our own published contract): the `Authorization` header must equal
  the seeded one when one is seeded (else 401); a body that is not a `sync-secret-rotator.ticket/1` object with an
  action and a key is 400; `open` answers 201 `{id, number, url}`, the same ticket again while the key's ticket is
  open (a retried open is not a second ticket); `note` and `close` of a key with no ticket are 404, a note to a
  closed ticket is 409, a second close is 200 (done already); `check` creates nothing (200).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox.world import iso

if TYPE_CHECKING:
    from sandbox.world import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KINDS = ("teams", "slack", "json")
TICKETS = "tickets"  # the ticket receiver (shared/tickets/webhook.py's contract)
TICKET_SCHEMA = "sync-secret-rotator.ticket/1"
ADAPTIVE = "application/vnd.microsoft.card.adaptive"
TEAMS_MAX_BYTES = 28 * 1024  # Teams' message size limit (msteams-docs, add-incoming-webhook.md)


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """The body an injected fault answers with."""
    return {"error": {"code": code or ("TooManyRequests" if status == 429 else "ServiceUnavailable"),
                      "message": message or "Service unavailable."}}


class WebhooksState:
    """The seeded token of each kind and every post received (accepted or refused)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.tokens: dict[str, str] = {}
        self.received: list[dict[str, Any]] = []
        self.tickets: list[dict[str, Any]] = []  # the ticket receiver's tickets, in the order opened
        self.tickets_authorization = ""

    def reset(self) -> None:
        self.tokens.clear()
        self.received.clear()
        self.tickets.clear()
        self.tickets_authorization = ""

    def seed(self, section: dict[str, Any]) -> None:
        for kind in (*KINDS, TICKETS):
            if kind in section:
                self.tokens[kind] = str(section[kind])
        if "ticketsAuthorization" in section:
            self.tickets_authorization = str(section["ticketsAuthorization"])

    def dump(self) -> dict[str, Any]:
        return {"received": list(self.received), "tickets": [dict(t) for t in self.tickets]}

    def known(self, kind: str, token: str) -> bool:
        seeded = self.tokens.get(kind)
        return bool(seeded) and secrets.compare_digest(seeded or "", token)


def teams_problem(body: Any) -> str:
    """Why a Workflows webhook would not post this body ("" when it would)."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return "the body must be a message (type: message) with Adaptive Card attachments"
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "the message has no attachments: a Workflows webhook posts Adaptive Card attachments only"
    for attachment in attachments:
        content = attachment.get("content") if isinstance(attachment, dict) else None
        if not isinstance(attachment, dict) or attachment.get("contentType") != ADAPTIVE:
            return f"every attachment must have contentType {ADAPTIVE}"
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard" or not content.get("version"):
            return "an attachment's content must be an AdaptiveCard with a version"
    return ""


def slack_problem(body: Any) -> str:
    """Slack's error code for this body ("" when it would post it)."""
    if not isinstance(body, dict):
        return "invalid_payload"
    text, blocks = body.get("text"), body.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        return "invalid_payload"
    if not (isinstance(text, str) and text.strip()) and not blocks:
        return "no_text"
    return ""


def build_app(world: World) -> web.Application:
    """The receivers' aiohttp application, recording into `world.webhooks`."""

    def state() -> WebhooksState:
        return cast(WebhooksState, world.webhooks)

    async def receive(request: web.Request) -> web.StreamResponse:
        kind, token = request.match_info["kind"], request.match_info["token"]
        if kind not in KINDS or not state().known(kind, token):
            return web.Response(status=404, text="no_service")
        text = await request.text()
        if kind == "teams" and len(text.encode()) > TEAMS_MAX_BYTES:
            state().received.append({"kind": kind, "body": None, "accepted": False, "status": 413,
                                     "at": iso(world.now())})
            return web.json_response({"error": {"code": "MessageTooLarge", "message": "over 28 KB"}}, status=413)
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        if kind == "teams":
            problem = teams_problem(body)
            answer = (web.json_response({"error": {"code": "InvalidRequestContent", "message": problem}}, status=400)
                      if problem else web.Response(status=202))
        elif kind == "slack":
            problem = slack_problem(body)
            answer = web.Response(status=400, text=problem) if problem else web.Response(status=200, text="ok")
        else:
            problem = "" if isinstance(body, dict) else "the body must be a JSON object"
            answer = web.json_response({"error": problem} if problem else {}, status=400 if problem else 200)
        state().received.append({"kind": kind, "body": body, "accepted": not problem, "status": answer.status,
                                 "at": iso(world.now())})
        return answer

    async def tickets(request: web.Request) -> web.StreamResponse:
        if not state().known(TICKETS, request.match_info["token"]):
            return web.Response(status=404, text="no_service")
        auth = state().tickets_authorization
        if auth and not secrets.compare_digest(request.headers.get("Authorization", ""), auth):
            return web.json_response({"error": {"code": "Unauthorized", "message": "missing or wrong credentials"}},
                                     status=401)
        try:
            body: Any = json.loads(await request.text())
        except ValueError:
            body = None
        answer = ticket_answer(state().tickets, body, world.now)
        state().received.append({"kind": TICKETS, "body": body, "accepted": answer.status < 300,
                                 "status": answer.status, "at": iso(world.now())})
        return answer

    app = web.Application()
    app.router.add_route("POST", "/tickets/{token}", tickets)
    app.router.add_route("POST", "/{kind}/{token}", receive)
    return app


def ticket_answer(tickets: list[dict[str, Any]], body: Any, now: Callable[[], Any]) -> web.Response:
    """The ticket receiver's answer to one post, changing `tickets` as it says."""
    def refuse(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"code": "BadRequest" if status == 400 else "Conflict" if status == 409
                                            else "NotFound", "message": message}}, status=status)

    if not isinstance(body, dict) or body.get("schema") != TICKET_SCHEMA:
        return refuse(400, f"the body must be a {TICKET_SCHEMA} object")
    action, key = body.get("action"), body.get("key")
    if action == "check":
        return web.json_response({})
    if action not in ("open", "note", "close") or not isinstance(key, str) or not key:
        return refuse(400, "action must be open, note, close or check, with a key")
    mine = [t for t in tickets if t["key"] == key]
    current = mine[-1] if mine else None
    if action == "open":
        if current is None or current["closed"]:
            number = str(5000 + len(tickets) + 1)
            current = {"id": f"wh-{number}", "number": number, "url": f"https://tickets.example/t/{number}",
                       "key": key, "title": body.get("title", ""), "text": body.get("text", ""),
                       "route": body.get("route", {}), "notes": [], "closed": False, "opened": iso(now())}
            tickets.append(current)
            status = 201
        else:
            status = 200  # the open ticket of this key: a retried open is the same ticket
        return web.json_response({k: current[k] for k in ("id", "number", "url")}, status=status)
    if current is None:
        return refuse(404, f"no ticket for key {key}")
    if action == "note":
        if current["closed"]:
            return refuse(409, "the ticket is closed")
        current["notes"].append(str(body.get("text", "")))
        return web.json_response({})
    if not current["closed"]:
        current["notes"].append(str(body.get("text", "")))
        current["closed"] = True
        current["closedStatus"] = (body.get("route") or {}).get("closedStatus", "")
    return web.json_response({})
