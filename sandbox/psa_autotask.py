"""Autotask PSA's REST API stand-in (listener `psa_autotask`): zone discovery, Tickets, TicketNotes, picklists, limits.

Each behaviour names its public source in sandbox/README.md ("Autotask PSA (`psa_autotask`)"); in short:
- Zone discovery `GET /atservicesrest/v1.0/zoneInformation?user=<username>`, no credentials, answers `zoneName`,
  `url` (the API base, ending `/ATServicesRest/`), `webUrl`, `ci` (Autotask's swagger, ZoneInformationResultModel);
  an unknown user is 500 `{"errors": ["Zone information could not be determined"]}` (apigrate/autotask-restapi).
- Every other call carries the headers `ApiIntegrationCode`, `UserName`, `Secret`: a wrong user or secret is 401
  (Autotask's "REST API security and authentication"), a wrong integration code 500 `{"errors": ["IntegrationCode is
  invalid."]}` (apigrate/autotask-restapi README); repeated wrong secrets lock the API user, who is then refused
  alike until a person unlocks it ("Adding or editing an API user": Locked).
- `POST /V1.0/Tickets` answers `{"itemId"}`; `GET /V1.0/Tickets/{id}` `{"item"}` or 404; `POST /V1.0/Tickets/query`
  `{"items", "pageDetails"}` over a filter (ops eq, noteq, gt, gte, lt, lte, beginsWith, endsWith, contains, exist,
  notExist, in, notIn, and/or with `items`); `PATCH /V1.0/Tickets` a sparse update by `id`; `POST
  /V1.0/Tickets/{id}/Notes` a TicketNote (TicketsEntity.htm, swagger TicketsApi / TicketNotesChildApi).
- Picklists (status, priority, queueID, ticketType) from `GET /V1.0/Tickets/entityInformation/fields`
  (FieldInformationModel, PickListValue); a value not in the picklist, a missing required field or a string over its
  length is refused with HTTP 500 and `{"errors": [...]}`, as Autotask answers validation failures (the strictest
  plausible: nothing is trimmed).
- The threshold: 10,000 requests per rolling hour per database, latency added past 50 % and 75 % of it, then 429
  (REST_Thresholds_Limits.htm, ThreadLimiting.htm); lowered through the seed for tests. No `Retry-After` is sent
  (none is documented: the strictest plausible). Thread limiting: more than 3 concurrent requests of one
  integration on one endpoint are refused (ThreadLimiting.htm), with a 500 naming the thread threshold.
Paths are matched without regard to case (clients spell both `ATServicesRest/V1.0` and `atservicesrest/v1.0`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox.world import iso

if TYPE_CHECKING:
    from sandbox.world import World

API = "/atservicesrest/v1.0/"
ZONE_PATH = API + "zoneinformation"
COMPLETE = 5  # Autotask's system status "Complete" (its value in every database)
DEFAULT_REQUESTS_PER_HOUR = 10_000
HOUR = dt.timedelta(hours=1)

# Default picklists, as a new Autotask database ships them (values are the database's; labels can be renamed).
DEFAULT_PICKLISTS: dict[str, list[tuple[str, str]]] = {
    "status": [("1", "New"), ("5", "Complete"), ("7", "Waiting Customer"), ("8", "In Progress"),
               ("13", "Waiting Vendor")],
    "priority": [("4", "Critical"), ("1", "High"), ("2", "Medium"), ("3", "Low")],
    "queueID": [("5", "Client Portal"), ("6", "Post Sale"), ("8", "Monitoring Alert"),
                ("29682833", "Level I Support"), ("29682969", "Level II Support")],
    "ticketType": [("1", "Service Request"), ("2", "Incident"), ("3", "Problem"), ("4", "Change Request"),
                   ("5", "Alert")],
}
NOTE_TYPES = {1, 2, 3}  # TicketNote noteType values the sandbox accepts (labels vary per database)
NOTE_PUBLISH = {1, 2}

# Tickets fields: name -> (dataType, length, required, read-only). Lengths from the entity's field definitions.
TICKET_FIELDS: dict[str, tuple[str, int, bool, bool]] = {
    "id": ("long", 0, False, True),
    "companyID": ("integer", 0, True, False),
    "title": ("string", 255, True, False),
    "description": ("string", 8000, False, False),
    "status": ("integer", 0, True, False),
    "priority": ("integer", 0, True, False),
    "queueID": ("integer", 0, False, False),
    "ticketType": ("integer", 0, False, False),
    "externalID": ("string", 50, False, False),
    "assignedResourceID": ("integer", 0, False, False),
    "assignedResourceRoleID": ("integer", 0, False, False),
    "ticketNumber": ("string", 50, False, True),
    "createDate": ("datetime", 0, False, True),
    "lastActivityDate": ("datetime", 0, False, True),
    "completedDate": ("datetime", 0, False, True),
}
PICKLIST_FIELDS = ("status", "priority", "queueID", "ticketType")
NOTE_FIELDS: dict[str, tuple[str, int, bool]] = {  # name -> (dataType, length, required)
    "ticketID": ("integer", 0, False),
    "title": ("string", 250, True),
    "description": ("string", 32000, True),
    "noteType": ("integer", 0, True),
    "publish": ("integer", 0, True),
}


class Refusal(Exception):
    """An answer in Autotask's error format: `{"errors": [...]}` with the status Autotask uses."""

    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(messages[0] if messages else "")
        self.status = status
        self.messages = list(messages)

    def response(self) -> web.Response:
        return web.json_response({"errors": self.messages}, status=self.status)


def _units(text: str) -> int:
    """A string's length as Autotask's .NET validation and nvarchar columns count it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """An injected fault's body, in Autotask's error format."""
    default = "Request rejected: the API request threshold was exceeded." if status == 429 else "Internal error."
    return {"errors": [message or code or default]}


@dataclass
class ApiUser:
    user_name: str
    secret: str
    integration_code: str
    active: bool = True
    failures: int = 0  # consecutive failed sign-ins
    locked: bool = False


class AutotaskState:
    """One Autotask database: its API users, companies, picklists, tickets, notes and request count."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.reset()

    def reset(self) -> None:
        self.users: dict[str, ApiUser] = {}
        self.companies: dict[int, str] = {0: "Sandbox MSP (root company)"}
        self.picklists: dict[str, list[dict[str, Any]]] = {
            name: [self._pick(value, label, i) for i, (value, label) in enumerate(values)]
            for name, values in DEFAULT_PICKLISTS.items()
        }
        self.tickets: dict[int, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []
        self.deleted: list[int] = []
        self.requests: deque[dt.datetime] = deque()
        self.rejected = 0
        self.requests_per_hour = DEFAULT_REQUESTS_PER_HOUR
        self.latency = (0.5, 1.0)  # seconds added past 50 % and 75 % of the threshold
        self.thread_limit = 3  # concurrent requests per integration and endpoint (ThreadLimiting.htm)
        self.service_seconds = 0.0  # how long the database takes over each request (a slow database, for tests)
        self.in_flight: dict[tuple[str, str], int] = {}
        self.thread_refusals = 0
        self.lockout_after = 5  # consecutive failed sign-ins that lock an API user (a system setting; 5 assumed)
        self._next_ticket = 7001
        self._next_note = 30001
        self._numbers: dict[str, int] = {}

    @staticmethod
    def _pick(value: str, label: str, order: int, active: bool = True) -> dict[str, Any]:
        return {"value": value, "label": label, "isDefaultValue": order == 0, "sortOrder": order,
                "parentValue": "", "isActive": active, "isSystem": value in ("1", "5")}

    def seed(self, section: dict[str, Any]) -> None:
        for user in section.get("users", []):
            self.users[str(user["userName"]).lower()] = ApiUser(str(user["userName"]), str(user["secret"]),
                                                                str(user["integrationCode"]),
                                                                bool(user.get("active", True)))
        for company in section.get("companies", []):
            self.companies[int(company["id"])] = str(company.get("companyName", ""))
        for name, key in (("status", "statuses"), ("priority", "priorities"), ("queueID", "queues"),
                          ("ticketType", "ticketTypes")):
            if key in section:
                self.picklists[name] = [self._pick(str(v["value"]), str(v["label"]), i, bool(v.get("isActive", True)))
                                        for i, v in enumerate(section[key])]
        if "lockoutAfter" in section:
            self.lockout_after = max(1, int(section["lockoutAfter"]))
        limit = section.get("rateLimit")
        if isinstance(limit, dict):
            if "requestsPerHour" in limit:
                value = int(limit["requestsPerHour"])
                if value < 1:
                    raise ValueError("rateLimit.requestsPerHour must be positive")
                self.requests_per_hour = value
            if "latencySeconds" in limit:
                half, three_quarters = (float(x) for x in limit["latencySeconds"])
                self.latency = (half, three_quarters)
            if "threadLimit" in limit:
                self.thread_limit = max(1, int(limit["threadLimit"]))
            if "serviceSeconds" in limit:
                self.service_seconds = max(0.0, float(limit["serviceSeconds"]))

    def dump(self) -> dict[str, Any]:
        self._expire()
        return {
            "users": [{"userName": u.user_name, "integrationCode": u.integration_code, "active": u.active,
                       "locked": u.locked, "failedSignIns": u.failures} for u in self.users.values()],
            "companies": [{"id": k, "companyName": v} for k, v in sorted(self.companies.items())],
            "tickets": [dict(t) for t in self.tickets.values()],
            "notes": [dict(n) for n in self.notes],
            "deletedTicketIds": list(self.deleted),
            "threshold": self.threshold(),
            "rejected": self.rejected,
            "threadRefusals": self.thread_refusals,
        }

    # Authentication and the threshold

    def authenticate(self, request: web.Request) -> ApiUser:
        user = self.users.get(request.headers.get("UserName", "").lower())
        secret = request.headers.get("Secret", "")
        right = user is not None and secrets.compare_digest(user.secret.encode(), secret.encode())
        if user is not None and not right:
            user.failures += 1
            user.locked = user.locked or user.failures >= self.lockout_after
        if user is None or not right or not user.active or user.locked:
            # A locked user is refused even with the right secret, and looks the same as a wrong one.
            raise Refusal(401, "Unauthorized: the user name, secret and integration code combination is invalid.")
        user.failures = 0
        if not secrets.compare_digest(user.integration_code.encode(),
                                      request.headers.get("ApiIntegrationCode", "").encode()):
            raise Refusal(500, "IntegrationCode is invalid.")
        return user

    def _expire(self) -> None:
        cutoff = self._world.now() - HOUR
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()

    def threshold(self) -> dict[str, int]:
        """ThresholdInformation's answer."""
        return {"externalRequestThreshold": self.requests_per_hour, "requestThresholdTimeframe": 60,
                "currentTimeframeRequestCount": len(self.requests)}

    def admit(self) -> float:
        """Count one request against the hour's threshold: the latency to add, or a 429 Refusal past it."""
        self._expire()
        if len(self.requests) >= self.requests_per_hour:
            self.rejected += 1
            raise Refusal(429, f"Request rejected: this database exceeded its API threshold of "
                               f"{self.requests_per_hour} requests per 60 minutes.")
        self.requests.append(self._world.now())
        used = len(self.requests) / self.requests_per_hour
        return self.latency[1] if used > 0.75 else self.latency[0] if used > 0.5 else 0.0

    # Tickets

    def picklist_value(self, field: str, value: Any) -> int:
        active = {p["value"] for p in self.picklists[field] if p["isActive"]}
        if isinstance(value, bool) or not isinstance(value, int) or str(value) not in active:
            raise Refusal(500, f"Value {value!r} does not exist in the picklist for field '{field}'.")
        return value

    def _ticket_fields(self, body: Any, *, creating: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Refusal(500, "The request body must be a Tickets entity (a JSON object).")
        names = {k.lower(): k for k in TICKET_FIELDS}
        fields: dict[str, Any] = {}
        for key, value in body.items():
            name = names.get(str(key).lower())
            if name is None:
                raise Refusal(500, f"Unknown field '{key}' for entity Tickets.")
            fields[name] = value
        problems: list[str] = []
        for name, value in fields.items():
            data_type, length, _, read_only = TICKET_FIELDS[name]
            if name == "id":
                continue
            if read_only:
                problems.append(f"Field '{name}' is read-only.")
            elif value is None:
                continue
            elif data_type == "string" and (not isinstance(value, str) or _units(value) > length):
                problems.append(f"Field '{name}' must be a string of at most {length} characters.")
            elif data_type == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"Field '{name}' must be an integer.")
        if creating:
            problems += [f"Field '{name}' is required." for name, (_, _, required, _) in TICKET_FIELDS.items()
                         if required and fields.get(name) in (None, "")]
            if fields.get("queueID") is None and not (fields.get("assignedResourceID")
                                                      and fields.get("assignedResourceRoleID")):
                problems.append("Data violation: assignedResourceID, assignedResourceRoleID, and queueID cannot all "
                                "be empty. Supply a queueID or both an assignedResourceID and assignedResourceRoleID.")
        if problems:
            raise Refusal(500, *problems)
        for name in PICKLIST_FIELDS:
            if fields.get(name) is not None:
                self.picklist_value(name, fields[name])
        if fields.get("companyID") is not None and fields["companyID"] not in self.companies:
            raise Refusal(500, f"Reference value {fields['companyID']} for field 'companyID' does not exist.")
        if fields.get("assignedResourceID") is not None:
            raise Refusal(500, "The assigned resource does not exist or is not active.")
        return fields

    def create_ticket(self, body: Any) -> int:
        fields = self._ticket_fields(body, creating=True)
        if fields.pop("id", 0) not in (0, None):
            raise Refusal(500, "A new entity cannot carry an id.")
        now = self._world.now()
        day = now.strftime("%Y%m%d")
        self._numbers[day] = self._numbers.get(day, 0) + 1
        ticket_id, self._next_ticket = self._next_ticket, self._next_ticket + 1
        ticket: dict[str, Any] = {name: None for name in TICKET_FIELDS}
        ticket.update(fields)
        ticket.update(id=ticket_id, ticketNumber=f"T{day}.{self._numbers[day]:04d}", createDate=iso(now),
                      lastActivityDate=iso(now), completedDate=iso(now) if fields["status"] == COMPLETE else None)
        self.tickets[ticket_id] = ticket
        return ticket_id

    def update_ticket(self, body: Any) -> int:
        fields = self._ticket_fields(body, creating=False)
        ticket_id = fields.pop("id", None)
        if isinstance(ticket_id, bool) or not isinstance(ticket_id, int):
            raise Refusal(500, "An update needs the entity's id.")
        ticket = self.ticket(ticket_id)
        before = ticket["status"]
        ticket.update(fields)
        now = iso(self._world.now())
        ticket["lastActivityDate"] = now
        if ticket["status"] == COMPLETE and before != COMPLETE:
            ticket["completedDate"] = now
        elif ticket["status"] != COMPLETE:
            ticket["completedDate"] = None
        return ticket_id

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise Refusal(404, f"Tickets entity with id {ticket_id} was not found.")
        return ticket

    def add_note(self, ticket_id: int, body: Any) -> int:
        ticket = self.ticket(ticket_id)
        if not isinstance(body, dict):
            raise Refusal(500, "The request body must be a TicketNotes entity (a JSON object).")
        names = {k.lower(): k for k in NOTE_FIELDS}
        fields: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in body.items():
            name = names.get(str(key).lower())
            if name is None:
                problems.append(f"Unknown field '{key}' for entity TicketNotes.")
            else:
                fields[name] = value
        for name, (data_type, length, required) in NOTE_FIELDS.items():
            value = fields.get(name)
            if value in (None, ""):
                if required:
                    problems.append(f"Field '{name}' is required.")
            elif data_type == "string" and (not isinstance(value, str) or _units(value) > length):
                problems.append(f"Field '{name}' must be a string of at most {length} characters.")
            elif data_type == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"Field '{name}' must be an integer.")
        if fields.get("ticketID") not in (None, ticket_id):
            problems.append("The note's ticketID does not match its parent ticket.")
        if fields.get("noteType") not in NOTE_TYPES | {None, ""}:
            problems.append(f"Value {fields['noteType']!r} does not exist in the picklist for field 'noteType'.")
        if fields.get("publish") not in NOTE_PUBLISH | {None, ""}:
            problems.append(f"Value {fields['publish']!r} does not exist in the picklist for field 'publish'.")
        if problems:
            raise Refusal(500, *problems)
        note_id, self._next_note = self._next_note, self._next_note + 1
        now = iso(self._world.now())
        self.notes.append({"id": note_id, "ticketID": ticket_id, "title": fields["title"],
                           "description": fields["description"], "noteType": fields["noteType"],
                           "publish": fields["publish"], "createDateTime": now})
        ticket["lastActivityDate"] = now
        return note_id

    def query(self, body: Any) -> list[dict[str, Any]]:
        found = _query(body, [t for _, t in sorted(self.tickets.items())], tuple(TICKET_FIELDS))
        include = body.get("includeFields")
        if include:
            names = {k.lower(): k for k in TICKET_FIELDS}
            wanted = {names.get(str(f).lower()) for f in include} | {"id"}
            if None in wanted:
                raise Refusal(500, "includeFields names a field Tickets does not have.")
            found = [{k: v for k, v in t.items() if k in wanted} for t in found]
        return [dict(t) for t in found]

    def company_items(self) -> list[dict[str, Any]]:
        return [{"id": k, "companyName": v, "isActive": True} for k, v in sorted(self.companies.items())]

    # What a person does in Autotask's UI (the control API)

    def person_updates(self, ticket_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        self.update_ticket({**changes, "id": ticket_id})
        return dict(self.tickets[ticket_id])

    def person_unlocks(self, user_name: str) -> None:
        user = self.users[user_name.lower()]
        user.locked, user.failures = False, 0

    def person_deletes(self, ticket_id: int) -> None:
        self.ticket(ticket_id)
        del self.tickets[ticket_id]
        self.deleted.append(ticket_id)
        self.notes = [n for n in self.notes if n["ticketID"] != ticket_id]


COMPANY_FIELDS = ("id", "companyName", "isActive")


def _field(name: Any, known: tuple[str, ...]) -> str:
    field = {k.lower(): k for k in known}.get(str(name).lower())
    if field is None:
        raise Refusal(500, f"Unknown field '{name}' in the query filter.")
    return field


def _key(value: Any) -> Any:
    # SQL Server's default collation: string comparisons ignore case.
    return value.lower() if isinstance(value, str) else value


def _condition(doc: Any, known: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    """One filter expression of Autotask's query language as a predicate."""
    if not isinstance(doc, dict) or "op" not in doc:
        raise Refusal(500, "Each filter expression needs an 'op'.")
    op = str(doc["op"])
    if op.lower() in ("and", "or"):
        items = doc.get("items")
        if not isinstance(items, list) or not items:
            raise Refusal(500, f"The '{op}' expression needs 'items'.")
        parts = [_condition(i, known) for i in items]
        return (lambda t: all(p(t) for p in parts)) if op.lower() == "and" else (lambda t: any(p(t) for p in parts))
    field = _field(doc.get("field"), known)
    value = doc.get("value")
    tests: dict[str, Callable[[Any], bool]] = {
        "eq": lambda v: v is not None and _key(v) == _key(value),
        "noteq": lambda v: v is None or _key(v) != _key(value),
        "gt": lambda v: v is not None and _key(v) > _key(value),
        "gte": lambda v: v is not None and _key(v) >= _key(value),
        "lt": lambda v: v is not None and _key(v) < _key(value),
        "lte": lambda v: v is not None and _key(v) <= _key(value),
        "beginswith": lambda v: isinstance(v, str) and v.lower().startswith(str(value).lower()),
        "endswith": lambda v: isinstance(v, str) and v.lower().endswith(str(value).lower()),
        "contains": lambda v: isinstance(v, str) and str(value).lower() in v.lower(),
        "exist": lambda v: v not in (None, ""),
        "notexist": lambda v: v in (None, ""),
        "in": lambda v: isinstance(value, list) and _key(v) in [_key(x) for x in value],
        "notin": lambda v: isinstance(value, list) and _key(v) not in [_key(x) for x in value],
    }
    test = tests.get(op.lower())
    if test is None:
        raise Refusal(500, f"Unknown filter operator '{op}'.")
    if op.lower() not in ("exist", "notexist") and "value" not in doc:
        raise Refusal(500, f"The '{op}' expression needs a 'value'.")
    return lambda t: test(t.get(field))


def _all(filters: list[Any], known: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    parts = [_condition(f, known) for f in filters]  # top-level expressions are ANDed
    return lambda t: all(p(t) for p in parts)


def _query(body: Any, rows: list[dict[str, Any]], known: tuple[str, ...]) -> list[dict[str, Any]]:
    """Autotask's query body over rows: `filter` (required, ANDed at the top), `maxRecords` (1..500)."""
    if not isinstance(body, dict) or not isinstance(body.get("filter"), list) or not body["filter"]:
        raise Refusal(500, "A query needs a 'filter' array with at least one condition.")
    max_records = body.get("maxRecords", 500)
    if isinstance(max_records, bool) or not isinstance(max_records, int) or not 1 <= max_records <= 500:
        raise Refusal(500, "maxRecords must be between 1 and 500.")
    predicate = _all(body["filter"], known)
    return [r for r in rows if predicate(r)][:max_records]


def fields_document(state: AutotaskState) -> dict[str, Any]:
    """`GET Tickets/entityInformation/fields`: FieldInformationModel per field, picklists with their values."""
    fields = []
    for name, (data_type, length, required, read_only) in TICKET_FIELDS.items():
        picklist = name in PICKLIST_FIELDS
        fields.append({
            "name": name, "dataType": data_type, "length": length, "isRequired": required, "isReadOnly": read_only,
            "isQueryable": True, "isReference": name == "companyID",
            "referenceEntityType": "Company" if name == "companyID" else "", "isPickList": picklist,
            "picklistValues": [dict(p) for p in state.picklists[name]] if picklist else None,
            "picklistParentValueField": "", "isSupportedWebhookField": True,
        })
    return {"fields": fields}


def build_app(world: World) -> web.Application:
    """The Autotask listener, recording into `world.psa_autotask`."""

    def state() -> AutotaskState:
        return cast(AutotaskState, world.psa_autotask)

    async def body(request: web.Request) -> Any:
        try:
            return json.loads(await request.text() or "null")
        except ValueError as exc:
            raise Refusal(500, "The request body is not valid JSON.") from exc

    async def zone(request: web.Request) -> web.Response:
        user = state().users.get(request.query.get("user", "").lower())
        if user is None:
            raise Refusal(500, "Zone information could not be determined")
        base = world.urls.get("psa_autotask", "")
        return web.json_response({"zoneName": "Sandbox", "url": f"{base}/ATServicesRest/", "webUrl": f"{base}/",
                                  "ci": 1})

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.path.lower().rstrip("/")
        try:
            if path == ZONE_PATH:
                if request.method != "GET":
                    return _not_supported(request)
                return await zone(request)
            if not path.startswith(API):
                raise Refusal(404, "No HTTP resource was found that matches the request URI.")
            parts = path[len(API):].split("/")
            user = state().authenticate(request)
            thread = (user.integration_code, parts[0])
            if state().in_flight.get(thread, 0) >= state().thread_limit:
                # Thread limiting: refused under a status other than 429 (n8n-nodes-autotask retryHandler.ts
                # recognises these by their words), the strictest plausible.
                state().thread_refusals += 1
                raise Refusal(500, f"Itgenatr005: the thread threshold of {state().thread_limit} concurrent requests "
                                   "for this endpoint and integration was exceeded.")
            state().in_flight[thread] = state().in_flight.get(thread, 0) + 1
            try:
                latency = state().admit() + state().service_seconds
                if latency:
                    await asyncio.sleep(latency)
                return await route(request, parts)
            finally:
                state().in_flight[thread] = max(0, state().in_flight.get(thread, 1) - 1)  # a reset may intervene
        except Refusal as refusal:
            return refusal.response()

    async def route(request: web.Request, parts: list[str]) -> web.StreamResponse:
        method = request.method
        if parts == ["thresholdinformation"] and method == "GET":
            return web.json_response(state().threshold())
        if parts == ["companies", "query"] and method == "POST":
            items = _query(await body(request), state().company_items(), COMPANY_FIELDS)
            return web.json_response({"items": items, "pageDetails": {
                "count": len(items), "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}})
        if parts[:1] == ["companies"] and len(parts) == 2 and method == "GET":
            company_id = _id(parts[1])
            if company_id not in state().companies:
                raise Refusal(404, f"Companies entity with id {company_id} was not found.")
            return web.json_response({"item": {"id": company_id, "companyName": state().companies[company_id],
                                               "isActive": True}})
        if parts[:1] != ["tickets"]:
            raise Refusal(404, "No HTTP resource was found that matches the request URI.")
        rest = parts[1:]
        if rest == [] and method == "POST":
            return web.json_response({"itemId": state().create_ticket(await body(request))})
        if rest == [] and method == "PATCH":
            return web.json_response({"itemId": state().update_ticket(await body(request))})
        if rest == ["query"] and method == "POST":
            items = state().query(await body(request))
            return web.json_response({"items": items, "pageDetails": {
                "count": len(items), "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}})
        if rest == ["entityinformation", "fields"] and method == "GET":
            return web.json_response(fields_document(state()))
        if len(rest) == 1 and method == "GET":
            return web.json_response({"item": dict(state().ticket(_id(rest[0])))})
        if len(rest) == 2 and rest[1] == "notes" and method == "POST":
            return web.json_response({"itemId": state().add_note(_id(rest[0]), await body(request))})
        return _not_supported(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


def _id(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise Refusal(404, "No HTTP resource was found that matches the request URI.") from exc


def _not_supported(request: web.Request) -> web.Response:
    # ASP.NET Web API's answer to a known path with the wrong method (Anteris-Dev/autotask-client issue 12).
    return web.json_response({"Message": f"The requested resource does not support http method '{request.method}'."},
                             status=405)


def add_control_routes(routes: web.RouteTableDef, world: World) -> None:
    """What a person does in Autotask's UI: `POST /autotask/tickets/{id}` (edit fields, e.g. complete it) and
    `DELETE /autotask/tickets/{id}` (delete it)."""

    def state() -> AutotaskState:
        autotask = world.psa_autotask
        if not isinstance(autotask, AutotaskState):
            raise web.HTTPNotImplemented(text='{"error": "the autotask module is not mounted"}')
        return autotask

    @routes.post("/autotask/tickets/{id}")
    async def person_updates(request: web.Request) -> web.Response:
        changes = await request.json() if request.body_exists else {}
        try:
            return web.json_response(state().person_updates(int(request.match_info["id"]), dict(changes)))
        except Refusal as refusal:
            return web.json_response({"error": refusal.messages}, status=404 if refusal.status == 404 else 400)

    @routes.post("/autotask/users/{name}/unlock")
    async def person_unlocks(request: web.Request) -> web.Response:
        try:
            state().person_unlocks(request.match_info["name"])
        except KeyError:
            return web.json_response({"error": "no such API user"}, status=404)
        return web.json_response({"ok": True})

    @routes.delete("/autotask/tickets/{id}")
    async def person_deletes(request: web.Request) -> web.Response:
        try:
            state().person_deletes(int(request.match_info["id"]))
        except Refusal as refusal:
            return web.json_response({"error": refusal.messages}, status=404)
        return web.json_response({"ok": True})
