"""The HaloPSA desk: a condition's ticket through HaloPSA's REST API (docs/tickets-halopsa.md).

Configuration (the JSON object in the Key Vault secret TICKET_SECRET_NAME; every value a string):
- `url` (required): the Halo instance, `https://<name>.halopsa.com`; the Resource Server is `<url>/api`.
- `auth_url`: the Authorisation Server (Configuration > Integrations > Halo API > API Details); default `<url>/auth`.
- `tenant`: the tenant name a Halo-hosted instance needs on the token request (`?tenant=`); "" for self-hosted.
- `client_id`, `client_secret` (required): the API application (Authentication Method "Client ID and Secret
  (Services)"), logged in as an API-only agent.
- `scope`: default `edit:tickets read:tickets`, the least the desk needs (`all` works too).
- `client`: the Halo client (customer) tickets are filed under when the routing names none: its numeric id, or its
  exact name (a name is looked up through `GET /api/Client`, which needs the `read:customers` scope as well).
- `team`, `priority`, `ticket_type`, `status`: defaults for the routing's board / priority / type / new status,
  each a name or an id ("" = Halo's own default).
- `closed_status`: the status a resolved ticket is moved to (default `Closed`).
- `note_outcome` / `close_outcome`: the action outcomes (name or id) of a note and of the resolving note (default
  `Private Note` for both; Halo refuses an action without an outcome).
- `notes_visible`: `true` shows the notes to the end user (`hiddenfromuser: false`); default `false`.

Sources (each behaviour in detail: sandbox/README.md, "HaloPSA"; Halo's own Swagger lives inside each instance at
`/api/swagger`): KelvinTegelaar/CIPP-API `Modules/CippExtensions/Public/Halo/` (Get-HaloToken.ps1,
New-HaloPSATicket.ps1: the token request, the ticket array, `donotapplytemplateintheapi`, actions with an outcome,
`hasbeenclosed`); homotechsual/HaloAPI (Connect-HaloAPI.ps1: `/auth/token`, `?tenant=`; Classes/HaloAuth.psm1: the
scopes; Get-HaloTicket.ps1: `search`, `open_only`; New-HaloError.ps1 and the Action E2E test: error bodies;
Data/Templates/Ticket.json, Action.json: fields, `new_status`; issue 31: the 300-per-5-minutes 429); Halo's guide
"Creating API Applications" (halocrm.io/guides/article?kbid=1823) and n8n's HaloPSA credential page (the
Authorisation and Resource Servers, the tenant).

The calls: `POST {auth_url}/token` (client credentials, form-encoded);
`POST /api/Tickets` with a JSON array of one ticket (`summary`, `details_html`, `client_id`, `team`, `priority_id`,
`tickettype_id`, `status_id`, `donotapplytemplateintheapi`), answered with the ticket; `GET /api/Tickets?search=
&open_only=true`; `GET /api/Tickets/{id}`; `POST /api/Actions` with a JSON array of one action (`ticket_id`,
`outcome`, `note_html`, `hiddenfromuser`, `new_status`); lookups `GET /api/Team`, `/api/Priority`,
`/api/TicketType`, `/api/Status`, `/api/Client?search=`.

Dedupe: the summary ends with ` (ssr-<12 hex of sha256(key)>)` and `find_open` searches for that tag among the
open tickets. The tag has no `[`, `]`, `%` or `_`: Halo's search is assumed to be SQL Server's `LIKE`, where those
are patterns (the strictest plausible reading; Halo does not publish how it searches). The summary is cut to 255
UTF-16 code units (the tag kept whole, no surrogate pair split): Halo does not publish its limit either.

Answers: 400/401 `invalid_client` and 401/403 -> TicketAuthRefused (401 on a token kept from an earlier call ->
TicketSystemUnreachable: a new token is asked next time); 400 `invalid_scope` -> TicketAuthRefused; an
unknown team / priority / type / status / client (checked against the lookups first) -> TicketRouteUnknown; a
ticket 404 -> TicketNotFound (also a ticket someone closed in Halo when a note is added: the condition needs a
ticket that people see, so the book opens a new one; closing a ticket someone already closed writes nothing);
429 (Halo: "Rate Limit Reached - N Requests per rolling 5 minute window") -> TicketThrottled after `Retry-After`,
or the whole window when Halo sends none; a network error, a timeout or a 5xx -> TicketSystemUnreachable; any
other 4xx -> TicketRequestRefused with Halo's `Message`.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp

from shared.domain import Secret
from shared.tickets.port import TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tls import tls_context

log = logging.getLogger(__name__)

KIND = "halopsa"
DEFAULT_SCOPE = "edit:tickets read:tickets"
SUMMARY_LIMIT = 255  # UTF-16 code units
THROTTLE_WINDOW_SECONDS = 300.0  # Halo's rolling window: waited in full when no Retry-After says less
TIMEOUT = aiohttp.ClientTimeout(total=30)
TOKEN_MARGIN_SECONDS = 60.0  # a token this close to its expiry is renewed first
_MESSAGE_LIMIT = 300


def tag(key: str) -> str:
    """The dedupe tag written into the summary: stable for one key, searchable, never the key itself."""
    return "ssr-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def summary(title: str, key: str) -> str:
    """The ticket's summary: the title cut to Halo's limit, then the tag, never cutting a character in two."""
    suffix = f" ({tag(key)})"
    room = SUMMARY_LIMIT - _utf16(suffix)
    text = " ".join(title.split())
    if _utf16(text) > room:
        cut, used = [], 0
        for char in text:
            if used + _utf16(char) > room - 1:
                break
            cut.append(char)
            used += _utf16(char)
        text = "".join(cut).rstrip() + "…"
    return (text + suffix).lstrip()


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _html(text: str) -> str:
    """Plain text as Halo's HTML note: escaped (a customer's name is data, never markup), lines kept."""
    return "<br>".join(html.escape(line) for line in text.splitlines()) or "&nbsp;"


@dataclass(frozen=True)
class HaloConfig:
    url: str
    auth_url: str
    tenant: str
    client_id: str
    client_secret: Secret
    scope: str
    client: str
    team: str
    priority: str
    ticket_type: str
    status: str
    closed_status: str
    note_outcome: str
    close_outcome: str
    notes_visible: bool


def _base_url(value: str, field: str) -> str:
    try:
        parsed = urlparse(value.strip())
        usable = bool(parsed.hostname) and parsed.scheme == "https" and parsed.port != 0
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        usable = False
    if not usable or parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise TicketError(f"HaloPSA `{field}` must be an https:// URL without credentials, query or fragment",
                          code="TicketConfigInvalid")
    return value.strip().rstrip("/")


def parse_config(config: Mapping[str, str]) -> HaloConfig:
    """The desk's configuration, validated; TicketError(TicketConfigInvalid) naming the bad field (never a value)."""
    if not isinstance(config, Mapping):
        raise TicketError("the HaloPSA configuration must be a JSON object", code="TicketConfigInvalid")

    def text(field: str, default: str = "") -> str:
        value = config.get(field, default)
        if value is None:
            return default
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise TicketError(f"HaloPSA `{field}` must be a string", code="TicketConfigInvalid")
        return str(value).strip()

    missing = [f for f in ("url", "client_id", "client_secret") if not text(f)]
    if missing:
        raise TicketError(f"the HaloPSA configuration lacks {', '.join(missing)}", code="TicketConfigInvalid")
    url = _base_url(text("url"), "url")
    visible = text("notes_visible", "false").lower()
    if visible not in ("true", "false"):
        raise TicketError("HaloPSA `notes_visible` must be true or false", code="TicketConfigInvalid")
    return HaloConfig(
        url=url, auth_url=_base_url(text("auth_url") or url + "/auth", "auth_url"), tenant=text("tenant"),
        client_id=text("client_id"), client_secret=Secret(str(config["client_secret"])),
        scope=text("scope", DEFAULT_SCOPE) or DEFAULT_SCOPE, client=text("client"), team=text("team"),
        priority=text("priority"), ticket_type=text("ticket_type"), status=text("status"),
        closed_status=text("closed_status", "Closed") or "Closed",
        note_outcome=text("note_outcome", "Private Note") or "Private Note",
        close_outcome=text("close_outcome", "Private Note") or "Private Note", notes_visible=visible == "true",
    )


def build(config: Mapping[str, str], *, ca_bundle: str) -> HaloDesk:
    """The HaloPSA desk for this configuration (TicketError(TicketConfigInvalid) when it is unusable)."""
    return HaloDesk(parse_config(config), ca_bundle=ca_bundle)


def _retry_after(value: str | None) -> float:
    """Seconds to wait: Retry-After's seconds or HTTP date (RFC 9110 10.2.3), else Halo's whole window."""
    if value:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(1.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return THROTTLE_WINDOW_SECONDS


def _message(body: Any, fallback: str) -> str:
    """Halo's own words from an error body (a serialized exception's `Message`, or OAuth's `error`)."""
    found = ""
    if isinstance(body, Mapping):
        for key in ("Message", "message", "error_description", "error"):
            if isinstance(body.get(key), str) and body[key].strip():
                found = body[key].strip()
                break
    return found or fallback


class HaloDesk:
    """A TicketDesk over HaloPSA's API; one call sequence per method, no retries (the ticket book retries)."""

    kind = KIND

    def __init__(self, config: HaloConfig, *, ca_bundle: str = "") -> None:
        self.config = config
        self._ca_bundle = ca_bundle
        self._token: Secret | None = None
        self._token_expires = 0.0
        self._scopes: frozenset[str] = frozenset()  # what the token endpoint said it granted ("" when it did not say)

    # The port

    async def find_open(self, draft: TicketDraft) -> TicketRef | None:
        async with self._session() as session:
            marker = tag(draft.key)
            answer = await self._api(session, "GET", "/api/Tickets",
                                     params={"search": marker, "open_only": "true", "count": "50"})
            tickets = answer.get("tickets", []) if isinstance(answer, Mapping) else answer
            found = sorted(
                (t for t in tickets or [] if isinstance(t, Mapping) and marker in str(t.get("summary", ""))
                 and not self._closed(t, None)),
                key=lambda t: int(t.get("id", 0)),
            )
            return self._ref(found[0]) if found else None

    async def open(self, draft: TicketDraft) -> TicketRef:
        async with self._session() as session:
            route = draft.route
            ticket: dict[str, Any] = {
                "summary": summary(draft.title, draft.key),
                "details_html": _html(f"{draft.body}\n\nCustomer: {draft.customer}\nTenant: {draft.tenant_id}\n"
                                      f"Condition: {draft.condition}\nReference: {tag(draft.key)}"),
                "client_id": await self._client_id(session, route.company or self.config.client),
                # A ticket type's template could replace the summary, and with it the dedupe tag (CIPP sets it too).
                "donotapplytemplateintheapi": True,
            }
            team = await self._team(session, route.board or self.config.team)
            if team:
                ticket["team"] = team
            priority = await self._lookup(session, "/api/Priority", "priority", route.priority or self.config.priority,
                                          id_field="priorityid")
            if priority is not None:
                ticket["priority_id"] = priority
            ticket_type = await self._lookup(session, "/api/TicketType", "ticket type",
                                             route.ticket_type or self.config.ticket_type)
            if ticket_type is not None:
                ticket["tickettype_id"] = ticket_type
            status = await self._lookup(session, "/api/Status", "status", route.status or self.config.status)
            if status is not None:
                ticket["status_id"] = status
            answer = await self._api(session, "POST", "/api/Tickets", json=[ticket])
            created = answer[0] if isinstance(answer, list) and answer else answer
            if not isinstance(created, Mapping) or not str(created.get("id", "")).isdigit():
                raise TicketError("HaloPSA answered the new ticket without its id", code="TicketSystemUnreachable")
            ref = self._ref(created)
            log.info("halopsa ticket opened", extra={"ticket": ref.number, "condition": draft.condition})
            return ref

    async def add_note(self, ticket: TicketRef, text: str) -> None:
        async with self._session() as session:
            current = await self._ticket(session, ticket)
            if self._closed(current, None):
                raise TicketError(f"HaloPSA ticket {ticket.number} was closed in HaloPSA: a new one is needed",
                                  code="TicketNotFound")
            await self._action(session, ticket, text, self.config.note_outcome)

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None:
        async with self._session() as session:
            current = await self._ticket(session, ticket)
            if self._closed(current, None):
                # Someone closed it in Halo first: their status and closure stand, and nothing is written into a closed
                # ticket (an update could reopen it under a ticket type's rules), as the other desks do.
                log.info("halopsa ticket already closed", extra={"ticket": ticket.number})
                return
            closed = await self._lookup(session, "/api/Status", "status", route.closed_status or
                                        self.config.closed_status)
            if closed is not None and str(current.get("status_id")) == str(closed):
                return  # already in the status it would be moved to
            await self._action(session, ticket, text, self.config.close_outcome, new_status=closed)

    async def check(self, route: TicketRoute) -> None:
        async with self._session() as session:
            await self._token_for(session)
            granted = self._scopes
            if granted and "all" not in granted and not {"edit:tickets", "read:tickets"} <= granted:
                raise TicketError("the HaloPSA application lacks the edit:tickets and read:tickets scopes",
                                  code="TicketAuthRefused")
            await self._client_id(session, route.company or self.config.client)
            await self._team(session, route.board or self.config.team)
            await self._lookup(session, "/api/Priority", "priority", route.priority or self.config.priority,
                               id_field="priorityid")
            await self._lookup(session, "/api/TicketType", "ticket type", route.ticket_type or self.config.ticket_type)
            await self._lookup(session, "/api/Status", "status", route.status or self.config.status)
            await self._lookup(session, "/api/Status", "status", route.closed_status or self.config.closed_status)
            await self._api(session, "GET", "/api/Tickets", params={"count": "1"})

    # Halo's objects

    def _ref(self, ticket: Mapping[str, Any]) -> TicketRef:
        number = str(ticket["id"])
        return TicketRef(id=number, number=number, url=f"{self.config.url}/ticket?id={number}")

    @staticmethod
    def _closed(ticket: Mapping[str, Any], closed_status: int | None) -> bool:
        status = ticket.get("status_id")
        return bool(ticket.get("hasbeenclosed")) or (closed_status is not None and str(status) == str(closed_status))

    async def _ticket(self, session: aiohttp.ClientSession, ticket: TicketRef) -> Mapping[str, Any]:
        if not (ticket.id.isascii() and ticket.id.isdigit()):
            raise TicketError(f"{ticket.id!r} is not a HaloPSA ticket id", code="TicketNotFound")
        found = await self._api(session, "GET", f"/api/Tickets/{ticket.id}", ticket=ticket)
        if not isinstance(found, Mapping) or found.get("deleted"):
            raise TicketError(f"HaloPSA ticket {ticket.number} was deleted", code="TicketNotFound", status=404)
        return found

    async def _action(self, session: aiohttp.ClientSession, ticket: TicketRef, text: str, outcome: str,
                      new_status: int | None = None) -> None:
        action: dict[str, Any] = {"ticket_id": int(ticket.id), "note_html": _html(text),
                                  "hiddenfromuser": not self.config.notes_visible}
        # An outcome by id (CIPP sends `outcome_id`) or by name (the n8n node and others send `outcome`).
        by_id = outcome.isascii() and outcome.isdigit()
        action["outcome_id" if by_id else "outcome"] = int(outcome) if by_id else outcome
        if new_status is not None:
            action["new_status"] = new_status
        await self._api(session, "POST", "/api/Actions", json=[action], ticket=ticket)

    async def _client_id(self, session: aiohttp.ClientSession, client: str) -> int:
        if not client:
            raise TicketError("no HaloPSA client: set `client` in the configuration or the routing's company",
                              code="TicketConfigInvalid")
        if client.isdigit():
            return int(client)  # an id is sent as it is: Halo refuses an unknown one (read:customers not needed)
        answer = await self._api(session, "GET", "/api/Client", params={"search": client})
        found = answer.get("clients", []) if isinstance(answer, Mapping) else answer
        for item in found or []:
            if isinstance(item, Mapping) and str(item.get("name", "")).strip().casefold() == client.casefold():
                return int(item["id"])
        raise TicketError(f"HaloPSA has no client named {client!r}", code="TicketRouteUnknown")

    async def _team(self, session: aiohttp.ClientSession, team: str) -> str:
        """The team's name as Halo spells it (a ticket names its team), or "" for Halo's default."""
        if not team:
            return ""
        for item in await self._items(session, "/api/Team"):
            if str(item.get("id")) == team or str(item.get("name", "")).casefold() == team.casefold():
                return str(item["name"])
        raise TicketError(f"HaloPSA has no team {team!r}", code="TicketRouteUnknown")

    async def _lookup(self, session: aiohttp.ClientSession, path: str, what: str, wanted: str,
                      id_field: str = "id") -> int | None:
        """The id of the named (or numbered) priority / ticket type / status, None for Halo's default."""
        if not wanted:
            return None
        for item in await self._items(session, path):
            ident = item.get(id_field, item.get("id"))
            if str(ident) == wanted or str(item.get("name", "")).casefold() == wanted.casefold():
                return int(ident)
        raise TicketError(f"HaloPSA has no {what} {wanted!r}", code="TicketRouteUnknown")

    async def _items(self, session: aiohttp.ClientSession, path: str) -> list[Mapping[str, Any]]:
        answer = await self._api(session, "GET", path)
        return [item for item in answer if isinstance(item, Mapping)] if isinstance(answer, list) else []

    # HTTP

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=TIMEOUT)

    async def _token_for(self, session: aiohttp.ClientSession) -> Secret:
        if self._token is not None and time.monotonic() < self._token_expires - TOKEN_MARGIN_SECONDS:
            return self._token
        config = self.config
        form = {"grant_type": "client_credentials", "client_id": config.client_id,
                "client_secret": config.client_secret.reveal(), "scope": config.scope}
        status, body, headers = await self._send(session, "POST", config.auth_url + "/token", "the token endpoint",
                                                 data=form, params={"tenant": config.tenant} if config.tenant else None)
        if status in (400, 401) and isinstance(body, Mapping) and body.get("error") in (
                "invalid_client", "unauthorized_client", "invalid_scope", "invalid_grant"):
            raise TicketError(f"HaloPSA refused the API application's credentials or scope ({body['error']})",
                              code="TicketAuthRefused", status=status)
        self._raise_for(status, body, headers, "the token endpoint")
        if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
            raise TicketError("HaloPSA's token endpoint answered without an access token",
                              code="TicketSystemUnreachable", status=status)
        self._token = Secret(body["access_token"])
        self._token_expires = time.monotonic() + float(body.get("expires_in") or 3600)
        self._scopes = frozenset(str(body.get("scope") or "").split())
        return self._token

    async def _api(self, session: aiohttp.ClientSession, method: str, path: str, *,
                   params: Mapping[str, str] | None = None, json: Any = None, ticket: TicketRef | None = None) -> Any:
        cached = self._token is not None and time.monotonic() < self._token_expires - TOKEN_MARGIN_SECONDS
        token = await self._token_for(session)
        status, body, headers = await self._send(session, method, self.config.url + path, f"{method} {path}",
                                                 params=params, json=json, token=token)
        if status == 401:
            self._token = None  # the next call asks for a new one
            if cached:
                # A token kept from an earlier call was refused (revoked, or expired before its expires_in): not the
                # configuration's fault, so retryable; a token asked for in this very call and refused is.
                raise TicketError(f"HaloPSA refused the kept access token ({method} {path}): a new one is asked next "
                                  "time", code="TicketSystemUnreachable", status=401)
        if status == 404 and ticket is not None:
            raise TicketError(f"HaloPSA ticket {ticket.number} was not found (deleted?)", code="TicketNotFound",
                              status=404)
        self._raise_for(status, body, headers, f"{method} {path}")
        return body

    async def _send(self, session: aiohttp.ClientSession, method: str, url: str, what: str, *,
                    params: Mapping[str, str] | None = None, json: Any = None, data: Mapping[str, str] | None = None,
                    token: Secret | None = None) -> tuple[int, Any, Mapping[str, str]]:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        try:
            async with session.request(method, url, params=params, json=json, data=data, headers=headers,
                                       ssl=tls_context(self._ca_bundle), allow_redirects=False) as response:
                try:
                    body: Any = await response.json(content_type=None)
                except ValueError:
                    body = None
                return response.status, body, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            # The exception's text can carry the URL or the request: only its type is kept.
            raise TicketError(f"HaloPSA is unreachable ({what}): {type(error).__name__}",
                              code="TicketSystemUnreachable") from None

    def _raise_for(self, status: int, body: Any, headers: Mapping[str, str], what: str) -> None:
        if 200 <= status < 300:
            return
        message = _message(body, f"HTTP {status}")
        # Halo's words are kept for the person reading the error; never a credential it might echo back.
        for secret in (self.config.client_secret, self._token):
            if secret is not None and secret.reveal():
                message = message.replace(secret.reveal(), "***")
        message = message[:_MESSAGE_LIMIT]  # cut after the scrub: a cut secret would no longer match
        if status == 429:
            raise TicketError(f"HaloPSA is throttling ({what}): {message}", code="TicketThrottled",
                              retry_after=_retry_after(headers.get("Retry-After")), status=status)
        if status in (401, 403):
            raise TicketError(f"HaloPSA refused the API application ({what}, HTTP {status}): check its scopes and "
                              "the API agent's access", code="TicketAuthRefused", status=status)
        if 300 <= status < 400:
            raise TicketError(f"HaloPSA answered a redirect ({what}): check `url` and `auth_url`",
                              code="TicketConfigInvalid", status=status)
        if status >= 500:
            raise TicketError(f"HaloPSA failed ({what}, HTTP {status}): {message}", code="TicketSystemUnreachable",
                              status=status)
        raise TicketError(f"HaloPSA refused {what} (HTTP {status}): {message}", code="TicketRequestRefused",
                          status=status)
