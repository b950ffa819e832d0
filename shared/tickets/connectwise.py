"""The ConnectWise Manage (PSA) desk: tickets on a service board through ConnectWise's REST API.

Setup, least privilege and routing names: docs/tickets-connectwise.md.

Configuration (the JSON object in the Key Vault secret TICKET_SECRET_NAME):
- `site` (required): the API host of the ConnectWise cloud region or of the MSP's own server, e.g.
  `api-na.myconnectwise.net` (or `https://...`; https only).
- `codebase` (default `v4_6_release`): the path segment before `/apis/3.0` (`/login/companyinfo/{companyId}` answers
  it as `Codebase`; `v4_6_release` is served by every cloud site and used by every public client).
- `companyId`, `publicKey`, `privateKey` (required): the login company and an API member's key pair; sent as
  `Authorization: Basic base64(companyId+publicKey:privateKey)`.
- `clientId` (required): the integration's clientId from developer.connectwise.com/ClientID, sent as the `clientId`
  header (required by ConnectWise since 2019; ConnectWise asks that it be kept like a password: it is).
- `board`, `company` (required): the default service board (name or id) and the default company (its identifier or
  id) for a condition whose route names none (shared/tickets/routing.py).
- `priority`, `type`, `status`, `closedStatus` (optional): defaults for the route's fields ("" = the board's default
  status, the default priority, no type, and on close the board's first status with `closedStatus`).
- `ticketUrl` (optional): a link template with `{id}` for people; default
  `https://{site without its api- prefix}/{codebase}/services/system_io/Service/fv_sr100_request.rpt?service_recid={id}
  &companyName={companyId}`, the ticket link ConnectWise users share (not part of the API documentation).

The calls (ConnectWise's REST API reference as generated into HealthITAU/pyconnectwise, the ConnectWise PSA developer
guide, christaylorcodes/ConnectWiseManageAPI; each cited in sandbox/README.md, "ConnectWise Manage"):
- open: `POST /service/tickets` with `summary` (at most 100 characters: trimmed here, counted in UTF-16 code units as
  .NET does), `externalXRef` = `ssr:<sha256 of the dedupe key, 40 hex>` (the ticket's External Reference, at most 100
  characters, filterable by `conditions`), `board`, `company`, `status`, `priority`, `type` by name or id,
  `initialDescription` (the body, the ticket's first Discussion note).
- find_open: `GET /service/tickets?conditions=externalXRef="ssr:..." and closedFlag=false&orderBy=id asc`.
- add_note: `GET /service/tickets/{id}` (a ticket a person closed is TicketNotFound, as a deleted one: a note there
  would go unseen, so the book opens a new ticket), then `POST /service/tickets/{id}/notes` with
  `internalAnalysisFlag: true` (an Internal note: customers are not mailed the rotator's notes).
- close: `GET /service/tickets/{id}` (a ticket a person closed already is left alone), the closed status looked up
  on the ticket's board when none is configured or a person moved the ticket off the routed board
  (`GET /service/boards/{id}/statuses?conditions=closedStatus=true`),
  `POST .../notes` (`internalAnalysisFlag` and `resolutionFlag`), `PATCH /service/tickets/{id}` with
  `[{"op": "replace", "path": "status", "value": {"name": ...}}]`. A retry after a failed PATCH repeats the
  resolving note (harmless and visible; losing it would not be).
- check: the board (`GET /service/boards`), its statuses and types (`/service/boards/{id}/statuses`, `/types`), the
  company (`GET /company/companies`), the priority (`GET /service/priorities`).
Answers to codes: 401 and 403 (`Security`: the API member's role lacks a right) TicketAuthRefused; 400
`InvalidObject` whose error is `NotFound` on board / company / status / priority / type TicketRouteUnknown; a 404
for a ticket TicketNotFound (deleted in the PSA); other 4xx and a redirect TicketRequestRefused; 429 TicketThrottled
with `Retry-After`; 5xx, a timeout or a network error TicketSystemUnreachable. ConnectWise's own `message` is kept
(scrubbed of the keys); never a key, the clientId or the Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.domain import Secret
from shared.tickets.port import TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tls import tls_context

KIND = "connectwise"
SUMMARY_MAX = 100  # ConnectWise's ticket summary: "Max length: 100"
TIMEOUT_SECONDS = 20
DEFAULT_CODEBASE = "v4_6_release"
REFERENCE_PREFIX = "ssr:"
_ROUTE_FIELDS = ("board", "company", "status", "priority", "type")
log = logging.getLogger(__name__)


def reference(key: str) -> str:
    """The External Reference that marks a condition's ticket: stable for the dedupe key, 44 characters."""
    return REFERENCE_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def trim_summary(title: str, limit: int = SUMMARY_MAX) -> str:
    """The title in at most `limit` UTF-16 code units (ConnectWise is .NET), cut at a whole character with an
    ellipsis; control characters (a line break in a customer's name) become spaces."""
    text = re.sub(r"\s+", " ", "".join(" " if ord(c) < 32 else c for c in title)).strip()

    def units(s: str) -> int:
        return len(s.encode("utf-16-le")) // 2

    if units(text) <= limit:
        return text
    cut = text[:limit]  # a character is at least one unit
    while units(cut) > limit - 1:  # room for the one-unit ellipsis
        cut = cut[:-1]
    return cut.rstrip() + "…"


def _reference_json(value: str, *keys: str) -> dict[str, Any]:
    """A ConnectWise reference: `{"id": n}` for digits, else `{keys[0]: value}` (a name or identifier)."""
    return {"id": int(value)} if value.isdigit() else {keys[0]: value}


def _condition_text(value: str) -> str:
    """A string literal of the conditions language (a backslash escapes a quote)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Defaults:
    board: str
    company: str
    priority: str
    ticket_type: str
    status: str
    closed_status: str


class ConnectWiseDesk:
    """Tickets in ConnectWise Manage: one call sequence per method, TicketError when it did not happen."""

    kind = KIND

    def __init__(self, *, base_url: str, authorization: Secret, client_id: Secret, defaults: _Defaults,
                 ticket_url: str, secrets: tuple[str, ...], ca_bundle: str = "") -> None:
        self._base = base_url
        self._authorization = authorization
        self._client_id = client_id
        self._defaults = defaults
        self._ticket_url = ticket_url
        self._secrets = tuple(Secret(s) for s in secrets if s)  # scrubbed from ConnectWise's messages
        self._ca_bundle = ca_bundle

    def __repr__(self) -> str:
        return f"ConnectWiseDesk({self._base!r})"

    # The port

    async def find_open(self, draft: TicketDraft) -> TicketRef | None:
        conditions = f"externalXRef={_condition_text(reference(draft.key))} and closedFlag=false"
        found = await self._call("GET", "/service/tickets",
                                 params={"conditions": conditions, "orderBy": "id asc", "pageSize": "1"})
        if not isinstance(found, list):
            raise self._odd("the ticket search")
        return self._ref(found[0]) if found else None

    async def open(self, draft: TicketDraft) -> TicketRef:
        route = self._route(draft.route)
        body: dict[str, Any] = {
            "summary": trim_summary(draft.title) or trim_summary(f"{draft.condition} ({draft.customer})"),
            "externalXRef": reference(draft.key),
            "board": _reference_json(route.board, "name"),
            "company": _reference_json(route.company, "identifier"),
            "initialDescription": draft.body,
        }
        for name, value in (("status", route.status), ("priority", route.priority), ("type", route.ticket_type)):
            if value:
                body[name] = _reference_json(value, "name")
        created = await self._call("POST", "/service/tickets", json_body=body)
        return self._ref(created)

    async def add_note(self, ticket: TicketRef, text: str) -> None:
        path = f"/service/tickets/{self._id(ticket)}"
        current = await self._call("GET", path, ticket=ticket)
        if not isinstance(current, dict):
            raise self._odd("the ticket")
        if current.get("closedFlag") is True:
            # A person closed it while the condition still holds: a note there would go unseen. As for a deleted
            # ticket, the book closes its row and the next pass opens a new ticket.
            status = current.get("status")
            name = status.get("name") if isinstance(status, dict) else ""
            raise TicketError(f"ConnectWise ticket {ticket.number} was closed in the PSA (status {name!r})",
                              code="TicketNotFound")
        await self._call("POST", path + "/notes", ticket=ticket, json_body={"text": text, "internalAnalysisFlag": True})

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None:
        path = f"/service/tickets/{self._id(ticket)}"
        current = await self._call("GET", path, ticket=ticket)
        if not isinstance(current, dict):
            raise self._odd("the ticket")
        if current.get("closedFlag") is True:
            log.info("connectwise ticket %s was closed in the PSA already; left as it is", ticket.number)
            return
        chosen = self._route(route)
        found = current.get("board")
        board: dict[str, Any] = found if isinstance(found, dict) else {}
        on_routed_board = chosen.board.casefold() in (str(board.get("name", "")).casefold(), str(board.get("id")))
        # A person may have moved the ticket to another board, where the routed closed status does not exist: then
        # that board's own closed status.
        closed = (chosen.closed_status if chosen.closed_status and on_routed_board
                  else await self._closed_status(current))
        await self._call("POST", path + "/notes", ticket=ticket,
                         json_body={"text": text, "internalAnalysisFlag": True, "resolutionFlag": True})
        await self._call("PATCH", path, ticket=ticket,
                         json_body=[{"op": "replace", "path": "status", "value": _reference_json(closed, "name")}])

    async def check(self, route: TicketRoute) -> None:
        chosen = self._route(route)
        board = await self._one("/service/boards", chosen.board, "name", "active service board",
                                also=" and inactiveFlag=false")
        statuses = await self._call("GET", f"/service/boards/{board['id']}/statuses",
                                    params={"pageSize": "1000"})
        if not isinstance(statuses, list):
            raise self._odd("the board's statuses")
        by_name = {str(s.get("name", "")).casefold(): s for s in statuses if isinstance(s, dict)}
        by_id = {str(s.get("id")): s for s in statuses if isinstance(s, dict)}
        for label, wanted, closing in (("status", chosen.status, False), ("closed status", chosen.closed_status, True)):
            if not wanted:
                continue
            status = by_id.get(wanted) if wanted.isdigit() else by_name.get(wanted.casefold())
            if status is None or (closing and status.get("closedStatus") is not True):
                raise TicketError(f"ConnectWise: the {label} {wanted!r} is not a{' closed' if closing else ''} status "
                                  f"of the service board {board.get('name')!r}", code="TicketRouteUnknown")
        if not chosen.closed_status and not any(s.get("closedStatus") is True for s in by_name.values()):
            raise TicketError(f"ConnectWise: the service board {board.get('name')!r} has no closed status",
                              code="TicketRouteUnknown")
        if chosen.ticket_type:
            await self._one(f"/service/boards/{board['id']}/types", chosen.ticket_type, "name",
                            f"type of the service board {board.get('name')!r}:")
        await self._one("/company/companies", chosen.company, "identifier", "company", also=" and deletedFlag=false")
        if chosen.priority:
            await self._one("/service/priorities", chosen.priority, "name", "priority")

    # The parts

    def _route(self, route: TicketRoute) -> TicketRoute:
        d = self._defaults
        return TicketRoute(board=route.board or d.board, priority=route.priority or d.priority,
                           ticket_type=route.ticket_type or d.ticket_type, status=route.status or d.status,
                           closed_status=route.closed_status or d.closed_status, company=route.company or d.company)

    def _ref(self, ticket: Any) -> TicketRef:
        ticket_id = ticket.get("id") if isinstance(ticket, dict) else None
        if not isinstance(ticket_id, int):
            raise self._odd("the ticket")
        return TicketRef(id=str(ticket_id), number=str(ticket_id), url=self._ticket_url.replace("{id}", str(ticket_id)))

    @staticmethod
    def _id(ticket: TicketRef) -> str:
        if not ticket.id.isdigit():
            raise TicketError(f"ConnectWise ticket ids are numbers, not {ticket.id!r}", code="TicketNotFound")
        return ticket.id

    async def _closed_status(self, ticket: Mapping[str, Any]) -> str:
        board = ticket.get("board")
        board_id = board.get("id") if isinstance(board, dict) else None
        if not isinstance(board_id, int):
            raise self._odd("the ticket's board")
        statuses = await self._call("GET", f"/service/boards/{board_id}/statuses",
                                    params={"conditions": "closedStatus=true", "orderBy": "sortOrder asc",
                                            "pageSize": "1"})
        if not isinstance(statuses, list) or not statuses or not isinstance(statuses[0], dict):
            name = board.get("name") if isinstance(board, dict) else ""
            raise TicketError(f"ConnectWise: the service board {name!r} has no closed status: set "
                              "closedStatus in the routing", code="TicketRouteUnknown")
        return str(statuses[0]["id"])

    async def _one(self, path: str, wanted: str, key: str, label: str, also: str = "") -> dict[str, Any]:
        """The one row of a setup table a routing name or id names (and `also` holds for); TicketRouteUnknown if
        none."""
        field = "id" if wanted.isdigit() else key
        value = wanted if wanted.isdigit() else _condition_text(wanted)
        rows = await self._call("GET", path, params={"conditions": f"{field}={value}{also}", "pageSize": "2"})
        if not isinstance(rows, list):
            raise self._odd(f"the {label} search")
        if not rows or not isinstance(rows[0], dict):
            raise TicketError(f"ConnectWise: no {label} {wanted!r}", code="TicketRouteUnknown")
        return rows[0]

    def _odd(self, what: str) -> TicketError:
        return TicketError(f"ConnectWise answered {what} in a shape this desk does not know",
                           code="TicketRequestRefused")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.reveal(), "***")
        return text

    async def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    json_body: Any = None, ticket: TicketRef | None = None) -> Any:
        """One API call: its JSON answer, or TicketError."""
        headers = {"Authorization": self._authorization.reveal(), "clientId": self._client_id.reveal(),
                   "Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as session,
                # Never follow a redirect: the Authorization header would go to a host the site did not name.
                session.request(method, self._base + path, params=params, json=json_body, headers=headers,
                                ssl=tls_context(self._ca_bundle), allow_redirects=False) as response,
            ):
                status = response.status
                text = await response.text(errors="replace")
                retry_after = response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as error:
            # The exception's text can carry the URL and headers: only its type is kept.
            raise TicketError(f"ConnectWise {method} {path.split('?')[0]} unreachable: {type(error).__name__}",
                              code="TicketSystemUnreachable") from None
        if 200 <= status < 300:
            if not text:
                return None
            try:
                return json.loads(text)
            except ValueError:
                raise self._odd(f"{method} {path}") from None
        raise self._refusal(method, path, status, text, retry_after, ticket)

    def _refusal(self, method: str, path: str, status: int, text: str, retry_after: str,
                 ticket: TicketRef | None) -> TicketError:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        cw_code = str(body.get("code") or "")
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        said = "; ".join([str(body.get("message") or "")] + [str(e.get("message") or "") for e in errors]).strip("; ")
        where = f"ConnectWise {method} {path.split('?')[0]}: HTTP {status} {cw_code}".rstrip()
        said = self._scrub(said)[:500]  # cut after the scrub: a key straddling the cut would no longer match
        message = self._scrub(f"{where}: {said}" if said else where)

        def error(code: str, after: float | None = None) -> TicketError:
            return TicketError(message, code=code, retry_after=after, status=status)

        if status in (401, 403):
            return error("TicketAuthRefused")
        if status == 429:
            return error("TicketThrottled", _seconds(retry_after))
        if status >= 500:
            return error("TicketSystemUnreachable", _seconds(retry_after))
        if status == 404 and ticket is not None:
            return error("TicketNotFound")
        if status == 404 and "/service/boards/" in path:
            return error("TicketRouteUnknown")
        if status == 400 and any(str(e.get("code")) == "NotFound"
                                 and str(e.get("field", "")).split("/")[0] in _ROUTE_FIELDS for e in errors):
            return error("TicketRouteUnknown")
        return error("TicketRequestRefused")


def _seconds(value: str) -> float | None:
    """Retry-After in seconds (ConnectWise sends a number); None when absent or not a number."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _required(config: Mapping[str, str], name: str) -> str:
    value = _optional(config, name)
    if not value:
        raise TicketError(f"the ConnectWise ticket configuration lacks {name!r} (docs/tickets-connectwise.md)",
                          code="TicketConfigInvalid")
    return value.strip()


def _optional(config: Mapping[str, str], name: str, default: str = "") -> str:
    value = config.get(name, default)
    if not isinstance(value, str):
        raise TicketError(f"the ConnectWise ticket configuration's {name!r} must be a string",
                          code="TicketConfigInvalid")
    return value.strip()


def build(config: Mapping[str, str], *, ca_bundle: str = "") -> TicketDesk:
    """The desk for this configuration (fields in the module docstring); TicketConfigInvalid when one is missing."""
    site = _required(config, "site").rstrip("/")
    origin = site if "://" in site else f"https://{site}"
    parts = urlsplit(origin)
    if parts.scheme != "https" or not parts.hostname or parts.path or parts.query or parts.username:
        raise TicketError("the ConnectWise 'site' must be an https host (e.g. api-na.myconnectwise.net)",
                          code="TicketConfigInvalid")
    codebase = _optional(config, "codebase", DEFAULT_CODEBASE).strip("/") or DEFAULT_CODEBASE
    if not re.fullmatch(r"[A-Za-z0-9_.]+", codebase):
        raise TicketError("the ConnectWise 'codebase' must look like v4_6_release", code="TicketConfigInvalid")
    company_id, public_key = _required(config, "companyId"), _required(config, "publicKey")
    private_key, client_id = _required(config, "privateKey"), _required(config, "clientId")
    if not re.fullmatch(r"[\x21-\x7e]+", client_id):  # sent as a header value as it is
        raise TicketError("the ConnectWise 'clientId' must be the GUID ConnectWise issued", code="TicketConfigInvalid")
    login = base64.b64encode(f"{company_id}+{public_key}:{private_key}".encode()).decode()
    defaults = _Defaults(board=_required(config, "board"), company=_required(config, "company"),
                         priority=_optional(config, "priority"), ticket_type=_optional(config, "type"),
                         status=_optional(config, "status"), closed_status=_optional(config, "closedStatus"))
    people = f"{parts.scheme}://{re.sub(r'^api-', '', parts.netloc)}"
    default_url = (f"{people}/{codebase}/services/system_io/Service/fv_sr100_request.rpt?service_recid={{id}}"
                   f"&companyName={company_id}")
    ticket_url = _optional(config, "ticketUrl") or default_url
    return ConnectWiseDesk(base_url=f"{origin}/{codebase}/apis/3.0", authorization=Secret(f"Basic {login}"),
                           client_id=Secret(client_id), defaults=defaults, ticket_url=ticket_url,
                           secrets=(public_key, private_key, client_id, login), ca_bundle=ca_bundle)
