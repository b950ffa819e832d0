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

    def reset(self) -> None:
        self.tokens.clear()
        self.received.clear()

    def seed(self, section: dict[str, Any]) -> None:
        for kind in KINDS:
            if kind in section:
                self.tokens[kind] = str(section[kind])

    def dump(self) -> dict[str, Any]:
        return {"received": list(self.received)}

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

    app = web.Application()
    app.router.add_route("POST", "/{kind}/{token}", receive)
    return app
