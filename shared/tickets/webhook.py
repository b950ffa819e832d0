"""The generic JSON webhook desk: the ticket lifecycle posted to any receiver (a Logic App, Power Automate, an ITSM
intake, a script) as one documented body per step (docs/tickets.md, "The JSON webhook").

Configuration (the JSON object in the Key Vault secret TICKET_SECRET_NAME):
- `url` (required): the receiver's https:// URL (http:// only on loopback, for local tests). It is a credential
  (a Logic App's URL carries its SAS signature): never logged, answered or put in an error.
- `authorization` (optional): the value of the `Authorization` header sent with each post (e.g. `Bearer <token>`
  or a shared key); a credential too.

Each step is one POST of `{"schema": "sync-secret-rotator.ticket/1", "action": "open" | "note" | "close" | "check",
"key", "ticket": {"number"} (note, close), "customer", "tenantId", "condition", "title", "text", "route":
{board, priority, type, status, closedStatus, company}, "at"}`. A 2xx answer is done; the answer to `open` may carry
`{"number", "url"}` (the receiver's ticket; `id` is taken for the number when no number is given). The key is the
ticket's identity at the receiver: notes and the close carry it. The receiver is asked to treat `key` as the dedupe
key: an `open` for a key whose ticket is still open answers that ticket (the webhook cannot be searched, so
`find_open` finds nothing and the receiver's idempotent `open` is what makes a retried open after a crash the same
ticket). `check` must create nothing. Answers: 401/403 TicketAuthRefused; 404 to a note or close TicketNotFound; 408/429
TicketThrottled (Retry-After kept); 5xx, a timeout or a network error TicketSystemUnreachable; a redirect (never
followed) or any other 4xx TicketRequestRefused with the receiver's own words, scrubbed of the URL and header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlparse

import aiohttp

from shared.tickets.port import TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tls import tls_context

KIND = "webhook"
SCHEMA = "sync-secret-rotator.ticket/1"
TIMEOUT_SECONDS = 15
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_MAX_MESSAGE = 300


def build(config: Mapping[str, str], *, ca_bundle: str) -> WebhookDesk:
    """The desk posting to the configured receiver; TicketConfigInvalid when the configuration is not usable."""
    url = str(config.get("url", "")).strip()
    parsed = urlparse(url)
    if not parsed.hostname or not (
        parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK)
    ):
        raise TicketError("the ticket webhook configuration needs `url`, an https:// URL", code="TicketConfigInvalid")
    authorization = config.get("authorization", "")
    if not isinstance(authorization, str) or any(c in authorization for c in "\r\n"):
        raise TicketError("the ticket webhook configuration's `authorization` must be one header value",
                          code="TicketConfigInvalid")
    unknown = sorted(set(config) - {"url", "authorization"})
    if unknown:
        raise TicketError(f"the ticket webhook configuration has an unknown field {unknown[0]!r} (url, "
                          "authorization)", code="TicketConfigInvalid")
    return WebhookDesk(url, authorization.strip(), ca_bundle)


def route_body(route: TicketRoute) -> dict[str, str]:
    return {"board": route.board, "priority": route.priority, "type": route.ticket_type, "status": route.status,
            "closedStatus": route.closed_status, "company": route.company}


class WebhookDesk:
    """The TicketDesk over a JSON webhook: one POST per step, never retried here (the ticket book retries)."""

    kind = KIND

    def __init__(self, url: str, authorization: str, ca_bundle: str) -> None:
        self._url = url
        self._authorization = authorization
        self._ca_bundle = ca_bundle

    async def find_open(self, draft: TicketDraft) -> TicketRef | None:
        return None  # nothing to search: the receiver's `open` is idempotent per key (see the module's docstring)

    async def open(self, draft: TicketDraft) -> TicketRef:
        answer = await self._post({"action": "open", "key": draft.key, **_about(draft), "title": draft.title,
                                   "text": draft.body, "route": route_body(draft.route)})
        number = str(answer.get("number", "") or answer.get("id", "") or "")
        url = str(answer.get("url", "") or "")
        # The key is the ticket's identity at the receiver (it dedupes on it): notes and the close carry it.
        return TicketRef(draft.key, number[:100], url[:2000] if url.startswith("https://") else "")

    async def add_note(self, ticket: TicketRef, text: str) -> None:
        await self._post({"action": "note", **_ticket(ticket), "text": text}, missing="TicketNotFound")

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None:
        await self._post({"action": "close", **_ticket(ticket), "text": text, "route": route_body(route)},
                         missing="TicketNotFound")

    async def check(self, route: TicketRoute) -> None:
        await self._post({"action": "check", "route": route_body(route)})

    async def _post(self, body: Mapping[str, Any], *, missing: str = "TicketRequestRefused") -> dict[str, Any]:
        """One POST; the answer's JSON object ({} when none); TicketError for anything but a 2xx."""
        headers = {"Authorization": self._authorization} if self._authorization else {}
        full = {"schema": SCHEMA, **body, "at": datetime.now(UTC).isoformat()}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as session,
                # Never follow a redirect: the ticket would go to a host the URL did not name.
                session.post(self._url, json=full, headers=headers, ssl=tls_context(self._ca_bundle),
                             allow_redirects=False) as response,
            ):
                status, text = response.status, await response.text()
                retry_after = response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as error:
            # The exception's text can carry the URL: only its type is kept.
            raise TicketError(f"the ticket webhook is unreachable: {type(error).__name__}",
                              code="TicketSystemUnreachable") from None
        if 200 <= status < 300:
            try:
                answer = json.loads(text) if text.strip() else {}
            except ValueError:
                answer = {}
            return answer if isinstance(answer, dict) else {}
        said = self._scrub(_words(text))[:_MAX_MESSAGE]  # cut after the scrub: a cut secret would no longer match
        message = f"the ticket webhook answered HTTP {status}" + (f": {said}" if said else "")
        if status in (401, 403):
            code = "TicketAuthRefused"
        elif status in (408, 429):
            code = "TicketThrottled"
        elif status >= 500:
            code = "TicketSystemUnreachable"
        elif status == 404:
            code = missing
        else:
            code = "TicketRequestRefused"
        raise TicketError(message, code=code, status=status, retry_after=_seconds(retry_after))

    def _scrub(self, text: str) -> str:
        """The receiver's words without anything of the URL or the header (a receiver may echo the request): the
        whole, each path segment and each query value (a Logic App's `sig`), as sent and decoded; longest first."""
        parsed = urlparse(self._url)
        values = [value for _, value in parse_qsl(parsed.query, keep_blank_values=True)]
        parts = {self._url, self._authorization, parsed.path, parsed.query, *parsed.path.split("/"),
                 *self._authorization.split(), *values, *(quote(v, safe="") for v in values),
                 *(unquote(p) for p in parsed.path.split("/"))}
        for secret in sorted(parts, key=len, reverse=True):
            if secret and len(secret) >= 6:
                text = text.replace(secret, "[hidden]")
        return text


def _about(draft: TicketDraft) -> dict[str, str]:
    return {"customer": draft.customer, "tenantId": draft.tenant_id, "condition": draft.condition}


def _ticket(ticket: TicketRef) -> dict[str, Any]:
    return {"key": ticket.id, "ticket": {"number": ticket.number}}


def _words(text: str) -> str:
    """The receiver's message: `message`, `error` or `detail` of a JSON body, else its text, bounded."""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())  # cut to _MAX_MESSAGE once scrubbed
    if isinstance(body, dict):
        for name in ("message", "error", "detail"):
            value = body.get(name)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value
    return ""


def _seconds(raw: str) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None
