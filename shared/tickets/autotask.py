"""The Autotask PSA desk: the ticket lifecycle through Autotask's REST API (docs/tickets-autotask.md).

Configuration: the JSON object in the Key Vault secret TICKET_SECRET_NAME.
- `userName` (required): the API user's username (an API-only user; Autotask: "Defining an API User").
- `secret` (required): that user's secret. `integrationCode` (required): its API tracking identifier.
- `queue` (required unless every route names a board): the default queue, a picklist label ("Monitoring Alert") or
  its value (8). `priority` ("Medium"), `status` ("New"), `closedStatus` ("Complete"), `ticketType` (none):
  defaults, label or value, of the Tickets picklists. `companyId` ("0", Autotask's own company): the default
  company (organization); a route's `company` names a customer's company by id or by its exact name.
- `noteType` (1), `notePublish` (1): the TicketNotes picklist values the desk's notes get.
- `zoneInformationUrl` (default ZONE_INFORMATION_URL): where the API user's zone is discovered; `apiUrl`: a zone's
  API base (`https://webservicesN.autotask.net/ATServicesRest/`) to skip discovery, with `webUrl` for links.
Routing names (TicketRoute): `board` is the queue, `priority`, `ticket_type`, `status`, `closed_status` name
picklist labels or values; `company` a company id or exact name (`POST /V1.0/Companies/query`, one active
company by that name, else TicketRouteUnknown). They are resolved against `GET
/V1.0/Tickets/entityInformation/fields` (a label compares without regard to case; an inactive value is unknown).

The calls (Autotask's REST API; sources in sandbox/README.md, "Autotask PSA"):
- zone discovery `GET {zoneInformationUrl}?user=<userName>` (no credentials) answers the API base `url` and the
  UI's `webUrl`; credentials go only to an https `*.autotask.net` base (or one on the discovery URL's own host);
- every other call sends the headers `ApiIntegrationCode`, `UserName`, `Secret`;
- open: `POST /V1.0/Tickets` (companyID, title up to 255 UTF-16 units, description up to 8000, status, priority,
  queueID, ticketType, externalID) answers `{"itemId"}`; then `GET /V1.0/Tickets/{id}` for its ticketNumber;
- find_open: `POST /V1.0/Tickets/query` on `externalID` (up to 50 characters: "ssr:" and 40 hex digits of the
  SHA-256 of the draft's key), status neither Complete (5) nor the route's closed status;
- add_note: `GET /V1.0/Tickets/{id}`, then `POST /V1.0/Tickets/{id}/Notes` (title up to 250, description up to
  32000, noteType, publish); a ticket deleted (404) or completed by a person is TicketNotFound, so the book opens a
  new ticket instead of writing into one nobody looks at;
- close: `GET /V1.0/Tickets/{id}`; unless a person already completed it (or moved it to the closed status), a
  resolving note then `PATCH /V1.0/Tickets` `{"id", "status"}`; a deleted ticket is TicketNotFound;
- check: discovery, `GET /V1.0/Tickets/entityInformation/fields` (the route's names) and `GET /V1.0/Companies/{id}`.
Answers: 401/403 TicketAuthRefused; 500 `{"errors": ["IntegrationCode is invalid."]}` and "Zone information could
not be determined" TicketAuthRefused; 429 or an error naming a threshold TicketThrottled (`Retry-After` if sent,
else DEFAULT_RETRY_AFTER: Autotask documents none); other answers carrying Autotask's `{"errors": [...]}` (it
answers validation failures with 500) TicketRequestRefused with its messages; other 5xx, a timeout or a network
error TicketSystemUnreachable. At most THREAD_LIMIT requests of one desk are in flight at once (Autotask's thread
limit per endpoint and integration). No redirect is followed; no credential, URL or username is logged or put in an
error.

Sources (each behaviour's, in sandbox/README.md's table): Autotask's REST docs (REST_Security_Auth.htm,
TicketsEntity.htm, REST_Thresholds_Limits.htm, ThreadLimiting.htm, ExecuteCommand's UsingExecuteCommandAPI.htm);
its swagger as generated into aenichols/ATREST-CSharp-Client; apigrate/autotask-restapi (README "Error Handling",
index.js); ecitsolutions/Autotask (field lengths); n8n-nodes-autotask (errors, thread-limit refusals, deep links).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp

from shared.tickets.port import TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tls import tls_context

KIND = "autotask"
ZONE_INFORMATION_URL = "https://webservices.autotask.net/atservicesrest/v1.0/zoneInformation"
TIMEOUT_SECONDS = 30
DEFAULT_RETRY_AFTER = 60.0  # Autotask sends no Retry-After that is documented; its window is a rolling hour
THREAD_LIMIT = 3  # concurrent requests per endpoint and integration a new integration may make (ThreadLimiting.htm)
COMPLETE = 5  # Autotask's system status "Complete"
TITLE_MAX, DESCRIPTION_MAX, NOTE_TITLE_MAX, NOTE_MAX, EXTERNAL_ID_MAX = 255, 8000, 250, 32000, 50
_AUTH_MESSAGES = ("integrationcode is invalid", "zone information could not be determined")
log = logging.getLogger(__name__)


def external_id(key: str) -> str:
    """What the desk writes into a ticket's externalID for a draft's key (fits Autotask's 50 characters)."""
    return "ssr:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def api_base(url: str) -> str:
    """The V1.0 base of a zone's API URL. Zone discovery has answered `https://host//ATServicesRest/` (a doubled
    slash: KelvinTegelaar/AutotaskAPI, Add-AutotaskAPIAuth.ps1): the path's slashes are collapsed."""
    parts = urlparse(url.strip())
    path = re.sub("/+", "/", parts.path).rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}/V1.0"


def utf16_length(text: str) -> int:
    """A string's length as Autotask counts it (.NET strings, SQL Server nvarchar): UTF-16 code units, so a
    character outside the Basic Multilingual Plane (an emoji, some CJK) counts two."""
    return len(text.encode("utf-16-le")) // 2


def trimmed(text: str, limit: int) -> str:
    """`text` within `limit` UTF-16 code units, an ellipsis marking a cut (never half a surrogate pair)."""
    if utf16_length(text) <= limit:
        return text
    kept, used = [], 1  # the ellipsis is one unit
    for character in text[:limit]:  # at most `limit` characters can fit: linear whatever the text's length
        used += 2 if ord(character) > 0xFFFF else 1
        if used > limit:
            break
        kept.append(character)
    return "".join(kept).rstrip() + "…"


@dataclass(frozen=True)
class Zone:
    api: str  # the API base, ending /V1.0
    web: str  # the UI's base, ending /


class Picklists:
    """The Tickets picklists as `GET Tickets/entityInformation/fields` gave them: value -> label, active ones."""

    def __init__(self, document: Any) -> None:
        self._values: dict[str, dict[str, str]] = {}
        fields = document.get("fields") if isinstance(document, dict) else None
        if not isinstance(fields, list):
            raise TicketError("Autotask's field definitions were unreadable", code="TicketSystemUnreachable")
        for definition in fields:
            if isinstance(definition, dict) and definition.get("isPickList") and \
                    isinstance(definition.get("picklistValues"), list):
                self._values[str(definition.get("name", "")).lower()] = {
                    str(p.get("value")): str(p.get("label", "")) for p in definition["picklistValues"]
                    if isinstance(p, dict) and p.get("isActive", True)}

    def resolve(self, field: str, name: str, what: str) -> int:
        """The picklist value that `name` (a label or a value) means; TicketRouteUnknown otherwise."""
        values = self._values.get(field.lower(), {})
        wanted = name.strip()
        if wanted in values:
            return int(wanted)
        for value, label in values.items():
            if label.casefold() == wanted.casefold():
                return int(value)
        raise TicketError(f"Autotask has no active {what} {wanted!r} (field {field}; known: "
                          f"{', '.join(sorted(values.values())) or 'none'})", code="TicketRouteUnknown")


@dataclass(frozen=True)
class AutotaskConfig:
    user_name: str = field(repr=False)
    secret: str = field(repr=False)  # never in a repr: a traceback or a log of the config shows no credential
    integration_code: str = field(repr=False)
    queue: str = ""
    priority: str = "Medium"
    status: str = "New"
    closed_status: str = "Complete"
    ticket_type: str = ""
    company_id: str = "0"
    note_type: int = 1
    note_publish: int = 1
    zone_information_url: str = ZONE_INFORMATION_URL
    api_url: str = ""
    web_url: str = ""

    @staticmethod
    def parse(config: Mapping[str, Any]) -> AutotaskConfig:
        """The desk's configuration; TicketConfigInvalid naming the field (never its value) when it is wrong."""
        def text(name: str, default: str | None = None) -> str:
            value = config.get(name, default)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise TicketError(f"Autotask configuration: {name} is required", code="TicketConfigInvalid")
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise TicketError(f"Autotask configuration: {name} must be a string", code="TicketConfigInvalid")
            return str(value).strip()

        def number(name: str, default: int) -> int:
            value = config.get(name, default)
            try:
                return int(value)
            except (TypeError, ValueError):
                raise TicketError(f"Autotask configuration: {name} must be an integer",
                                  code="TicketConfigInvalid") from None

        parsed = AutotaskConfig(
            user_name=text("userName"), secret=text("secret"), integration_code=text("integrationCode"),
            queue=text("queue", "-") if "queue" in config else "", priority=text("priority", "Medium"),
            status=text("status", "New"), closed_status=text("closedStatus", "Complete"),
            ticket_type=text("ticketType", "-") if "ticketType" in config else "",
            company_id=text("companyId", "0"), note_type=number("noteType", 1),
            note_publish=number("notePublish", 1),
            zone_information_url=text("zoneInformationUrl", ZONE_INFORMATION_URL),
            api_url=text("apiUrl", "-") if "apiUrl" in config else "",
            web_url=text("webUrl", "-") if "webUrl" in config else "")
        if not parsed.company_id.isdigit():
            raise TicketError("Autotask configuration: companyId must be a company's id", code="TicketConfigInvalid")
        if urlparse(parsed.zone_information_url).scheme != "https" or (
                parsed.api_url and urlparse(parsed.api_url).scheme != "https"):
            raise TicketError("Autotask configuration: zoneInformationUrl and apiUrl must be https URLs",
                              code="TicketConfigInvalid")
        return parsed


class AutotaskDesk:
    """Autotask's tickets behind the ticket port. One instance per configuration; it remembers the zone and the
    picklists it read (both change rarely: a new instance reads them again)."""

    def __init__(self, config: AutotaskConfig, *, ca_bundle: str = "") -> None:
        self._config = config
        self._ca_bundle = ca_bundle
        self._zone: Zone | None = (Zone(api_base(config.api_url), (config.web_url or "").rstrip("/") + "/")
                                   if config.api_url else None)
        self._picklists: Picklists | None = None
        # The ticket book converges several conditions at once through one desk: never more requests in flight than
        # Autotask's thread limit, which would refuse the rest.
        self._threads = asyncio.Semaphore(THREAD_LIMIT)

    @property
    def kind(self) -> str:
        return KIND

    # The port

    async def find_open(self, draft: TicketDraft) -> TicketRef | None:
        async with self._session() as session:
            closed = {COMPLETE, await self._status(session, draft.route.closed_status or self._config.closed_status,
                                                   "closed status")}
            answer = await self._call(session, "POST", "Tickets/query", "find_open", body={
                "filter": [{"op": "eq", "field": "externalID", "value": external_id(draft.key)},
                           {"op": "notIn", "field": "status", "value": sorted(closed)}]})
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise TicketError("Autotask's query answer was unreadable", code="TicketSystemUnreachable")
        found = [t for t in items if isinstance(t, dict) and t.get("status") not in closed and t.get("id")]
        if not found:
            return None
        newest = max(found, key=lambda t: int(t["id"]))
        return self._ref(newest)

    async def open(self, draft: TicketDraft) -> TicketRef:
        route = draft.route
        async with self._session() as session:
            lists = await self._lists(session)
            queue = self._queue(route)
            ticket: dict[str, Any] = {
                "companyID": await self._company(session, route),
                "title": trimmed(" ".join(draft.title.split()), TITLE_MAX),
                "description": trimmed(draft.body, DESCRIPTION_MAX),
                "status": lists.resolve("status", route.status or self._config.status, "status"),
                "priority": lists.resolve("priority", route.priority or self._config.priority, "priority"),
                "queueID": lists.resolve("queueID", queue, "queue"),
                "externalID": external_id(draft.key),
            }
            ticket_type = route.ticket_type or self._config.ticket_type
            if ticket_type:
                ticket["ticketType"] = lists.resolve("ticketType", ticket_type, "ticket type")
            created = await self._call(session, "POST", "Tickets", "open", body=ticket)
            ticket_id = created.get("itemId") if isinstance(created, dict) else None
            if not isinstance(ticket_id, int):
                raise TicketError("Autotask's create answer carried no itemId", code="TicketSystemUnreachable")
            # The create answers only the id; the number people search for is read back. If this read fails, the
            # ticket exists and find_open finds it by its externalID.
            item = await self._ticket(session, ticket_id, "open")
        return self._ref(item)

    async def add_note(self, ticket: TicketRef, text: str) -> None:
        async with self._session() as session:
            item = await self._ticket(session, _ticket_id(ticket), "add_note")
            if item.get("status") == COMPLETE:
                raise TicketError(f"Autotask ticket {ticket.number or ticket.id} was completed in Autotask: a new "
                                  "ticket is due", code="TicketNotFound", status=200)
            await self._note(session, item, text, "add_note")

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None:
        async with self._session() as session:
            item = await self._ticket(session, _ticket_id(ticket), "close")
            # Completed by a person (or by an earlier close cut before its record): nothing to write twice, and no
            # status lookup, so a closed status renamed since cannot fail it.
            closed = COMPLETE if item.get("status") == COMPLETE else \
                await self._status(session, route.closed_status or self._config.closed_status, "closed status")
            if item.get("status") == closed:
                log.info("autotask ticket already closed", extra={"desk": KIND, "ticket": ticket.number})
                return
            await self._note(session, item, text, "close")
            await self._call(session, "PATCH", "Tickets", "close", body={"id": item["id"], "status": closed})

    def _queue(self, route: TicketRoute) -> str:
        """The route's queue (its board), else the configured one; a TicketConfigInvalid when neither is set."""
        queue = route.board or self._config.queue
        if not queue:
            raise TicketError("Autotask configuration: no queue (set queue, or a board in the routing)",
                              code="TicketConfigInvalid")
        return queue

    async def check(self, route: TicketRoute) -> None:
        async with self._session() as session:
            lists = await self._lists(session)
            queue = self._queue(route)
            lists.resolve("queueID", queue, "queue")
            lists.resolve("priority", route.priority or self._config.priority, "priority")
            lists.resolve("status", route.status or self._config.status, "status")
            lists.resolve("status", route.closed_status or self._config.closed_status, "closed status")
            if route.ticket_type or self._config.ticket_type:
                lists.resolve("ticketType", route.ticket_type or self._config.ticket_type, "ticket type")
            company = await self._company(session, route)
            try:
                await self._call(session, "GET", f"Companies/{company}", "check")
            except TicketError as error:
                if error.status == 404:
                    raise TicketError(f"Autotask has no company {company}", code="TicketRouteUnknown",
                                      status=404) from None
                raise

    # The calls

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))

    async def _company(self, session: aiohttp.ClientSession, route: TicketRoute) -> int:
        """The company id a route names: an id as it is, a name looked up (exactly one active company by it)."""
        company = (route.company or self._config.company_id).strip()
        if company.isdigit():
            return int(company)
        answer = await self._call(session, "POST", "Companies/query", "company", body={
            "filter": [{"op": "eq", "field": "companyName", "value": company},
                       {"op": "eq", "field": "isActive", "value": True}],
            "includeFields": ["id", "companyName"], "maxRecords": 2})
        items = answer.get("items") if isinstance(answer, dict) else None
        ids = [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), int)] \
            if isinstance(items, list) else []
        if len(ids) != 1:
            raise TicketError(f"Autotask has {'no' if not ids else 'more than one'} active company named "
                              f"{company!r}: route its company id", code="TicketRouteUnknown")
        return int(ids[0])

    async def _lists(self, session: aiohttp.ClientSession) -> Picklists:
        if self._picklists is None:
            self._picklists = Picklists(await self._call(session, "GET", "Tickets/entityInformation/fields",
                                                         "picklists"))
        return self._picklists

    async def _status(self, session: aiohttp.ClientSession, name: str, what: str) -> int:
        if name.strip() in ("5", "Complete"):  # the system status: the same value in every database
            return COMPLETE
        return (await self._lists(session)).resolve("status", name, what)

    async def _ticket(self, session: aiohttp.ClientSession, ticket_id: int, step: str) -> dict[str, Any]:
        try:
            answer = await self._call(session, "GET", f"Tickets/{ticket_id}", step)
        except TicketError as error:
            if error.status == 404:
                raise TicketError(f"Autotask ticket {ticket_id} no longer exists (deleted in Autotask)",
                                  code="TicketNotFound", status=404) from None
            raise
        item = answer.get("item") if isinstance(answer, dict) else None
        if item is None:  # some clients report a missing entity as {"item": null}
            raise TicketError(f"Autotask ticket {ticket_id} no longer exists (deleted in Autotask)",
                              code="TicketNotFound", status=200)
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise TicketError("Autotask's ticket answer was unreadable", code="TicketSystemUnreachable")
        return item

    async def _note(self, session: aiohttp.ClientSession, item: Mapping[str, Any], text: str, step: str) -> None:
        title = trimmed("Sync-secret rotator: " + (text.strip().splitlines() or ["note"])[0], NOTE_TITLE_MAX)
        await self._call(session, "POST", f"Tickets/{item['id']}/Notes", step, body={
            "ticketID": item["id"], "title": title, "description": trimmed(text, NOTE_MAX),
            "noteType": self._config.note_type, "publish": self._config.note_publish})

    def _ref(self, item: Mapping[str, Any]) -> TicketRef:
        ticket_id = str(item["id"])
        zone = self._zone
        url = (f"{zone.web}Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail&TicketID={ticket_id}"
               if zone and zone.web.startswith("https://") else "")
        return TicketRef(id=ticket_id, number=str(item.get("ticketNumber") or ticket_id), url=url)

    async def _discover(self, session: aiohttp.ClientSession) -> Zone:
        if self._zone is not None:
            return self._zone
        url = f"{self._config.zone_information_url}?user={quote(self._config.user_name, safe='')}"
        answer = await self._send(session, "GET", url, "zone", headers={"Accept": "application/json"})
        base = answer.get("url") if isinstance(answer, dict) else None
        web = answer.get("webUrl") if isinstance(answer, dict) else None
        if not isinstance(base, str) or not self._trusted(base):
            # The credentials go to this base: only Autotask's own hosts (or the discovery host itself) get them.
            raise TicketError("Autotask's zone information named no trusted API URL", code="TicketSystemUnreachable")
        self._zone = Zone(api_base(base), web.rstrip("/") + "/" if isinstance(web, str) else "")
        return self._zone

    def _trusted(self, base: str) -> bool:
        parsed, discovery = urlparse(base), urlparse(self._config.zone_information_url)
        host = (parsed.hostname or "").lower()
        return parsed.scheme == "https" and (host == "autotask.net" or host.endswith(".autotask.net")
                                             or (host, parsed.port) == (discovery.hostname, discovery.port))

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str, step: str, *,
                    body: Mapping[str, Any] | None = None) -> Any:
        zone = await self._discover(session)
        headers = {"ApiIntegrationCode": self._config.integration_code, "UserName": self._config.user_name,
                   "Secret": self._config.secret, "Accept": "application/json"}
        return await self._send(session, method, f"{zone.api}/{path}", step, headers=headers, body=body)

    async def _send(self, session: aiohttp.ClientSession, method: str, url: str, step: str, *,
                    headers: Mapping[str, str], body: Mapping[str, Any] | None = None) -> Any:
        started = time.monotonic()
        try:
            async with self._threads, session.request(method, url, headers=headers, json=body, allow_redirects=False,
                                                      ssl=tls_context(self._ca_bundle)) as response:
                status = response.status
                text = await response.text()
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            # The exception's text carries the URL (and the username in the discovery's query): only its type.
            log.warning("autotask call failed", extra={"desk": KIND, "step": step, "error": type(error).__name__})
            raise TicketError(f"Autotask is unreachable ({step}): {type(error).__name__}",
                              code="TicketSystemUnreachable") from None
        log.info("autotask call", extra={"desk": KIND, "step": step, "method": method, "status": status,
                                         "duration_ms": round((time.monotonic() - started) * 1000)})
        try:
            document: Any = json.loads(text) if text else None
        except ValueError:
            document = None
        if 200 <= status < 300:
            return document
        raise self._refusal(status, document, retry_after, step)

    def _refusal(self, status: int, document: Any, retry_after: str | None, step: str) -> TicketError:
        messages = [self._scrub(str(m)) for m in document.get("errors", [])] if isinstance(document, dict) and \
            isinstance(document.get("errors"), list) else []
        said = "; ".join(messages)[:500]
        lowered = said.lower()
        where = f"Autotask refused {step} (HTTP {status})" + (f": {said}" if said else "")
        if status in (401, 403) or any(m in lowered for m in _AUTH_MESSAGES):
            return TicketError(f"{where}. Check the API user, its secret and its integration code (tracking "
                               "identifier), and that the user is active", code="TicketAuthRefused", status=status)
        if status == 429 or ("threshold" in lowered and "exceed" in lowered):
            return TicketError(where, code="TicketThrottled", retry_after=_retry_after(retry_after), status=status)
        if messages and status <= 500:
            # Autotask answers a request it will not take (a missing field, a value not in a picklist) with 500 and
            # its reasons: the same request will be refused again.
            return TicketError(where, code="TicketRequestRefused", status=status)
        if status >= 500:
            return TicketError(where, code="TicketSystemUnreachable", status=status)
        return TicketError(where, code="TicketRequestRefused", status=status)

    def _scrub(self, message: str) -> str:
        for credential in (self._config.secret, self._config.integration_code):
            if credential:
                message = message.replace(credential, "***")
        return message


def _retry_after(header: str | None) -> float:
    """Seconds to wait: the Retry-After header (seconds or an HTTP date) if any, else DEFAULT_RETRY_AFTER."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER


def _ticket_id(ticket: TicketRef) -> int:
    try:
        return int(ticket.id)
    except ValueError:
        raise TicketError(f"{ticket.id!r} is not an Autotask ticket id", code="TicketNotFound") from None


def build(config: Mapping[str, str], *, ca_bundle: str = "") -> TicketDesk:
    """The Autotask desk for this configuration (the Key Vault secret's JSON object)."""
    return AutotaskDesk(AutotaskConfig.parse(config), ca_bundle=ca_bundle)
