"""ConnectWise Manage (PSA) stand-in: the REST API's service tickets, notes, boards, statuses, priorities and companies.

What it copies of the real API (sources for each in sandbox/README.md, "ConnectWise Manage"):
- Paths under `/{codebase}/apis/3.0/` (`v4_6_release` in every public client; any codebase is served).
- Authentication: `Authorization: Basic base64(companyId+publicKey:privateKey)` and a `clientId` header on every
  call; a wrong or missing one is 401 `{"code": "Unauthorized", "message": ...}`. A member seeded `readOnly` is
  refused writes with 403 `{"code": "Security", ...}` (a security role without Add/Edit on service tickets).
- `POST /service/tickets`: `summary` (required, at most 100 characters), `externalXRef` (at most 100), `board`,
  `company`, `status`, `priority`, `type` as references (`{"id"}` or `{"name"}`; the company also by
  `{"identifier"}`), `initialDescription` (kept as the ticket's first note, never answered back). A reference
  that does not resolve (an unknown board, company, priority, a status or type not on that board) is 400
  `{"code": "InvalidObject", "message": "ticket object is invalid", "errors": [{"code": "NotFound", "message",
  "resource": "ticket", "field"}]}`; a field too long, `MaxLengthField`. Lengths count UTF-16 code units, as .NET
  strings do (the strictest reading of "characters").
- `GET /service/tickets?conditions=...` (also `/service/boards`, `/service/boards/{id}/statuses`,
  `/service/boards/{id}/types`, `/service/priorities`, `/company/companies`): the conditions language
  (`field = "text"`, `!=`, `<`, `>`, `<=`, `>=`, `like "a%"`, `contains "x"`, `true`/`false`/`null`/numbers,
  `and`/`or`, parentheses, `a/b` paths), string comparison case-insensitive as SQL Server's default collation;
  `orderBy=field asc|desc`, `page`, `pageSize` (25 by default, at most 1000). A field the entity does not have is 400.
- `GET|PATCH|DELETE /service/tickets/{id}`: PATCH takes a JSON Patch array (`[{"op": "replace", "path": "status",
  "value": {"name": "Closed"}}]`; paths `status`, `board`, `summary`, `priority`); a status whose `closedStatus` is
  set closes the ticket (`closedFlag`, `closedDate`, `closedBy`), any other reopens it; a ticket moved to another
  board must get one of that board's statuses in the same patch. A deleted or unknown ticket is 404
  `{"code": "NotFound"}`.
- `GET|POST /service/tickets/{id}/notes`: `text` (required) and at least one of `detailDescriptionFlag`,
  `internalAnalysisFlag`, `resolutionFlag` (the strictest plausible rule: a note shows in one of those tabs).
- Rate limit: past `rateLimit.requests` calls in `rateLimit.seconds` (per login company), 429 with a numeric
  `Retry-After` (seconds), as ConnectWise's developer guide describes its capacity limits.
Tickets, notes and status live in `world.psa_connectwise` for the control API (`GET /state`, `psa_connectwise`).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox.world import iso

if TYPE_CHECKING:
    from sandbox.world import World

API = "/{codebase}/apis/3.0"
SUMMARY_MAX = 100
EXTERNAL_XREF_MAX = 100
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 25, 1000

# What the stand-in holds when the seed names nothing else: one board with the statuses a new ConnectWise board
# comes with, the default priorities, one customer company. Tests seed their own (see sandbox/README.md).
DEFAULT_BOARDS: list[dict[str, Any]] = [{
    "name": "Help Desk",
    "statuses": [{"name": "New", "default": True}, {"name": "In Progress"}, {"name": "Waiting Customer"},
                 {"name": "Completed", "closed": True}, {"name": "Closed", "closed": True}],
    "types": ["Incident", "Problem", "Request"],
}]
DEFAULT_PRIORITIES: list[dict[str, Any]] = [
    {"name": "Priority 1 - Emergency Response"}, {"name": "Priority 2 - Quick Response"},
    {"name": "Priority 3 - Normal Response", "default": True}, {"name": "Priority 4 - Schedule Maintenance"},
]


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """ConnectWise's error body for an injected fault."""
    default = "TooManyRequests" if status == 429 else "ConnectWiseApi"
    return {"code": code or default, "message": message or "Injected fault."}


def utf16_length(text: str) -> int:
    """The length .NET gives a string: UTF-16 code units (a character beyond the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


class Refused(Exception):
    """An answer other than success, in ConnectWise's error format."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors, self.headers = status, code, message, errors, headers

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return web.json_response(body, status=self.status, headers=self.headers)


def invalid(field: str, code: str, message: str, resource: str = "ticket") -> Refused:
    return Refused(400, "InvalidObject", f"{resource} object is invalid",
                   [{"code": code, "message": message, "resource": resource, "field": field}])


# The conditions language

_TOKEN = re.compile(r"""\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>)
                         |(?P<date>\[[^\]]*\])|(?P<word>[A-Za-z_][A-Za-z0-9_/.]*)|(?P<num>-?\d+(?:\.\d+)?))""",
                    re.VERBOSE)
Row = dict[str, Any]
Predicate = Callable[[Row], bool]


def _tokens(text: str) -> list[tuple[str, str]]:
    out, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise Refused(400, "InvalidObject", f"conditions: cannot read {text[position:position + 20]!r}")
        kind = cast(str, match.lastgroup)
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _lookup(row: Row, path: str) -> tuple[bool, Any]:
    value: Any = row
    for part in path.split("/"):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        actual, expected = actual.casefold(), expected.casefold()  # SQL Server's default collation ignores case
    if op in ("like", "contains"):
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        if op == "contains":
            return expected in actual
        pattern = "".join(".*" if c == "%" else re.escape(c) for c in expected)
        return re.fullmatch(pattern, actual, re.DOTALL) is not None
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if actual is None or expected is None:
        return False
    try:
        return bool({"<": actual < expected, ">": actual > expected, "<=": actual <= expected,
                     ">=": actual >= expected}[op])
    except TypeError:
        return False


def parse_conditions(text: str, fields: frozenset[str]) -> Predicate:
    """A predicate over rows for a `conditions` string; Refused(400) for a malformed one or an unknown field."""
    tokens = _tokens(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise Refused(400, "InvalidObject", "conditions: unexpected end")
        position += 1
        return tokens[position - 1]

    def keyword(word: str) -> bool:
        token = peek()
        return token is not None and token[0] == "word" and token[1].lower() == word

    def value() -> Any:
        kind, text_ = take()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text_[1:-1])
        if kind == "num":
            return float(text_) if "." in text_ else int(text_)
        if kind == "date":
            return text_[1:-1]
        if kind == "word" and text_.lower() in ("true", "false"):
            return text_.lower() == "true"
        if kind == "word" and text_.lower() == "null":
            return None
        raise Refused(400, "InvalidObject", f"conditions: expected a value, found {text_!r}")

    def comparison() -> Predicate:
        kind, field = take()
        if kind == "lp":
            inner = either()
            if take()[0] != "rp":
                raise Refused(400, "InvalidObject", "conditions: missing )")
            return inner
        if kind != "word":
            raise Refused(400, "InvalidObject", f"conditions: expected a field, found {field!r}")
        if field.split("/")[0] not in fields:
            raise Refused(400, "InvalidObject", f"conditions: {field} is not a field of this entity")
        if keyword("not"):
            take()
            if not keyword("like"):
                raise Refused(400, "InvalidObject", "conditions: expected like after not")
            take()
            expected = value()
            return lambda row: not _compare(_lookup(row, field)[1], "like", expected)
        kind, op = take()
        if not (kind == "op" or (kind == "word" and op.lower() in ("like", "contains"))):
            raise Refused(400, "InvalidObject", f"conditions: expected an operator, found {op!r}")
        op = op.lower()
        expected = value()
        return lambda row: _compare(_lookup(row, field)[1], op, expected)

    def both() -> Predicate:
        parts = [comparison()]
        while keyword("and"):
            take()
            parts.append(comparison())
        return lambda row: all(p(row) for p in parts)

    def either() -> Predicate:
        parts = [both()]
        while keyword("or"):
            take()
            parts.append(both())
        return lambda row: any(p(row) for p in parts)

    predicate = either()
    if position != len(tokens):
        raise Refused(400, "InvalidObject", f"conditions: unexpected {tokens[position][1]!r}")
    return predicate


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text, nulls last; text without regard to case."""
    if value is None:
        return (2, 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value).casefold())


def select(rows: list[Row], query: Any, fields: frozenset[str]) -> list[Row]:
    """Rows filtered by `conditions`, ordered by `orderBy`, paged by `page` / `pageSize`, as the list GETs do."""
    conditions = query.get("conditions", "")
    if conditions.strip():
        predicate = parse_conditions(conditions, fields)
        rows = [r for r in rows if predicate(r)]
    order = query.get("orderBy", "").strip()
    if order:
        name, _, direction = order.partition(" ")
        if name.split("/")[0] not in fields:
            raise Refused(400, "InvalidObject", f"orderBy: {name} is not a field of this entity")
        rows = sorted(rows, key=lambda r: _sort_key(_lookup(r, name)[1]), reverse=direction.strip().lower() == "desc")
    try:
        size = int(query.get("pageSize", PAGE_SIZE_DEFAULT))
        page = int(query.get("page", 1))
    except ValueError as exc:
        raise Refused(400, "InvalidObject", "page and pageSize must be integers") from exc
    if not 1 <= size <= PAGE_SIZE_MAX or page < 1:
        raise Refused(400, "InvalidObject", f"pageSize must be 1..{PAGE_SIZE_MAX} and page at least 1")
    return rows[(page - 1) * size: page * size]


# The state


@dataclass
class Member:
    public_key: str
    private_key: str
    member_id: str
    read_only: bool = False


class ConnectWiseState:
    """One ConnectWise Manage site: its login company, API members, clientIds, setup tables, tickets and notes."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.reset()

    def reset(self) -> None:
        self.company_id = "ssr_msp"
        self.members: list[Member] = []
        self.client_ids: set[str] = set()
        self.boards: dict[int, Row] = {}
        self.statuses: dict[int, list[Row]] = {}  # by board id
        self.types: dict[int, list[Row]] = {}  # by board id
        self.priorities: list[Row] = []
        self.companies: list[Row] = []
        self.tickets: dict[int, Row] = {}
        self.descriptions: dict[int, str] = {}  # initialDescription, never answered back
        self.notes: dict[int, list[Row]] = {}
        self.deleted: list[int] = []
        self.requests: list[dict[str, Any]] = []  # what was asked (method, path, query, member): never a credential
        self.rate_requests = 0  # 0: no limit
        self.rate_seconds = 60.0
        self._calls: deque[float] = deque()
        self._next_id = 1
        self._seed_setup(DEFAULT_BOARDS, DEFAULT_PRIORITIES, [])

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _seed_setup(self, boards: list[dict[str, Any]], priorities: list[dict[str, Any]],
                    companies: list[dict[str, Any]]) -> None:
        for board in boards:
            board_id = self._id()
            self.boards[board_id] = {"id": board_id, "name": str(board["name"]),
                                     "inactiveFlag": bool(board.get("inactive", False)), "projectFlag": False}
            self.statuses[board_id] = [
                {"id": self._id(), "name": str(s["name"]), "board": {"id": board_id, "name": str(board["name"])},
                 "closedStatus": bool(s.get("closed", False)), "defaultFlag": bool(s.get("default", False)),
                 "inactive": False, "sortOrder": n}
                for n, s in enumerate(board.get("statuses", []))]
            self.types[board_id] = [{"id": self._id(), "name": str(t), "board": {"id": board_id}}
                                    for t in board.get("types", [])]
        for priority in priorities:
            self.priorities.append({"id": self._id(), "name": str(priority["name"]),
                                    "defaultFlag": bool(priority.get("default", False)),
                                    "sortOrder": len(self.priorities)})
        for company in companies:
            self.companies.append({"id": self._id(), "identifier": str(company["identifier"]),
                                   "name": str(company.get("name", company["identifier"])),
                                   "deletedFlag": False})

    def seed(self, section: dict[str, Any]) -> None:
        """`companyId`, `members` [{publicKey, privateKey, memberId?, readOnly?}], `clientIds`, `boards` (replace the
        default board: [{name, statuses: [{name, closed?, default?}], types?, inactive?}]), `priorities` (replace:
        [{name, default?}]), `companies` (add: [{identifier, name}]), `rateLimit` {requests, seconds}."""
        if "companyId" in section:
            self.company_id = str(section["companyId"])
        for member in section.get("members", []):
            self.members.append(Member(str(member["publicKey"]), str(member["privateKey"]),
                                       str(member.get("memberId", "ssr-api")), bool(member.get("readOnly", False))))
        self.client_ids.update(str(c) for c in section.get("clientIds", []))
        if "boards" in section:
            self.boards, self.statuses, self.types = {}, {}, {}
            self._seed_setup(section["boards"], [], [])
        if "priorities" in section:
            self.priorities = []
            self._seed_setup([], section["priorities"], [])
        self._seed_setup([], [], section.get("companies", []))
        if "rateLimit" in section:
            limit = section["rateLimit"] or {}
            self.rate_requests = int(limit.get("requests", 0))
            self.rate_seconds = float(limit.get("seconds", 60))
            if self.rate_requests < 0 or self.rate_seconds <= 0:
                raise ValueError("rateLimit: requests >= 0 and seconds > 0")
            self._calls.clear()

    def dump(self) -> dict[str, Any]:
        return {
            "tickets": [{**t, "initialDescription": self.descriptions.get(t["id"], ""),
                         "notes": self.notes.get(t["id"], [])} for t in self.tickets.values()],
            "deleted": list(self.deleted),
            "boards": [{**b, "statuses": self.statuses[b["id"]], "types": self.types[b["id"]]}
                       for b in self.boards.values()],
            "priorities": self.priorities,
            "companies": self.companies,
            "requests": list(self.requests),
        }

    # Authentication and the rate limit

    def authenticate(self, request: web.Request) -> Member:
        """The API member the request authenticates as; Refused(401) otherwise."""
        client_id = request.headers.get("clientId", "")
        if not client_id or not any(_same(client_id, known) for known in self.client_ids):
            raise Refused(401, "Unauthorized", "A valid clientId header is required: "
                                               "https://developer.connectwise.com/ClientID")
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode() if scheme.lower() == "basic" else ""
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        login, _, private_key = decoded.partition(":")
        company, _, public_key = login.partition("+")
        for member in self.members:
            if (_same(company, self.company_id) and _same(public_key, member.public_key)
                    and _same(private_key, member.private_key)):
                return member
        raise Refused(401, "Unauthorized", "Incorrect public/private key")

    def throttle(self) -> None:
        """Refused(429) with Retry-After past the seeded limit (counted per login company, a sliding window)."""
        if not self.rate_requests:
            return
        now = self._world.now().timestamp()
        while self._calls and self._calls[0] <= now - self.rate_seconds:
            self._calls.popleft()
        if len(self._calls) >= self.rate_requests:
            wait = max(1, math.ceil(self._calls[0] + self.rate_seconds - now))
            raise Refused(429, "TooManyRequests", "Request volume exceeds capacity limits; retry later.",
                          headers={"Retry-After": str(wait)})
        self._calls.append(now)

    # Setup tables

    def board(self, ref: Any) -> Row | None:
        return self._resolve(list(self.boards.values()), ref, ("id", "name"), active="inactiveFlag")

    def company(self, ref: Any) -> Row | None:
        return self._resolve(self.companies, ref, ("id", "identifier", "name"), active="deletedFlag")

    def priority(self, ref: Any) -> Row | None:
        return self._resolve(self.priorities, ref, ("id", "name"))

    @staticmethod
    def _resolve(rows: list[Row], ref: Any, keys: tuple[str, ...], active: str = "") -> Row | None:
        """The row a reference names (by its first key present, names without regard to case); None if none."""
        if not isinstance(ref, dict):
            return None
        for key in keys:
            if key in ref and ref[key] not in (None, ""):
                wanted = ref[key]
                for row in rows:
                    value = row.get(key)
                    same = (value.casefold() == wanted.casefold() if isinstance(value, str) and isinstance(
                        wanted, str) else value == wanted)
                    if same and not (active and row.get(active)):
                        return row
                return None
        return None

    # Tickets

    def create(self, body: Any, member: Member) -> Row:
        if not isinstance(body, dict):
            raise Refused(400, "InvalidObject", "The request body must be a ticket object")
        summary = body.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise invalid("summary", "NullValue", "The field summary is required.")
        for field, limit in (("summary", SUMMARY_MAX), ("externalXRef", EXTERNAL_XREF_MAX)):
            value = body.get(field)
            if value is not None and (not isinstance(value, str) or utf16_length(value) > limit):
                raise invalid(field, "MaxLengthField",
                              f"The field {field} must be a string with a maximum length of {limit}.")
        if "board" not in body:
            raise invalid("board", "NullValue", "The field board is required.")
        board = self.board(body["board"])
        if board is None:
            raise invalid("board", "NotFound", f"Service Board {_named(body['board'])} not found")
        if "company" not in body:
            raise invalid("company", "NullValue", "The field company is required.")
        company = self.company(body["company"])
        if company is None:
            raise invalid("company", "NotFound", f"Company {_named(body['company'])} not found")
        status = (self._board_status(board, body["status"]) if "status" in body
                  else next((s for s in self.statuses[board["id"]] if s["defaultFlag"]), None))
        if status is None:
            raise invalid(_field("status", body.get("status")), "NotFound",
                          f"Service Status {_named(body.get('status'))} not found for Service Board {board['id']}")
        priority = (self.priority(body["priority"]) if "priority" in body
                    else next((p for p in self.priorities if p["defaultFlag"]), None))
        if priority is None:
            raise invalid(_field("priority", body.get("priority")), "NotFound",
                          f"Priority {_named(body.get('priority'))} not found")
        kind = None
        if body.get("type") is not None:
            kind = self._resolve(self.types[board["id"]], body["type"], ("id", "name"))
            if kind is None:
                raise invalid(_field("type", body["type"]), "NotFound",
                              f"Service Type {_named(body['type'])} not found for Service Board {board['id']}")
        ticket_id = self._id()
        now = iso(self._world.now())
        ticket: Row = {
            "id": ticket_id, "summary": summary, "recordType": "ServiceTicket",
            "board": {"id": board["id"], "name": board["name"]},
            "status": {"id": status["id"], "name": status["name"]},
            "company": {"id": company["id"], "identifier": company["identifier"], "name": company["name"]},
            "priority": {"id": priority["id"], "name": priority["name"]},
            "type": {"id": kind["id"], "name": kind["name"]} if kind else None,
            "externalXRef": body.get("externalXRef"),
            "closedFlag": False, "closedDate": None, "closedBy": None,
            "_info": {"dateEntered": now, "enteredBy": member.member_id, "lastUpdated": now,
                      "updatedBy": member.member_id},
        }
        self._set_status(ticket, status, member)
        self.tickets[ticket_id] = ticket
        description = body.get("initialDescription")
        self.notes[ticket_id] = []
        if isinstance(description, str) and description:
            self.descriptions[ticket_id] = description
            self._add_note(ticket_id, {"text": description, "detailDescriptionFlag": True}, member)
        return ticket

    def _board_status(self, board: Row, ref: Any) -> Row | None:
        return self._resolve(self.statuses[board["id"]], ref, ("id", "name"), active="inactive")

    def _set_status(self, ticket: Row, status: Row, member: Member) -> None:
        ticket["status"] = {"id": status["id"], "name": status["name"]}
        if status["closedStatus"] and not ticket["closedFlag"]:
            ticket.update(closedFlag=True, closedDate=iso(self._world.now()), closedBy=member.member_id)
        elif not status["closedStatus"]:
            ticket.update(closedFlag=False, closedDate=None, closedBy=None)

    def ticket(self, ticket_id: str) -> Row:
        found = self.tickets.get(int(ticket_id)) if ticket_id.isdigit() else None
        if found is None:
            raise Refused(404, "NotFound", f"Ticket recordId: {ticket_id} not found.")
        return found

    def patch(self, ticket_id: str, body: Any, member: Member) -> Row:
        ticket = self.ticket(ticket_id)
        if not isinstance(body, list) or not body:
            raise Refused(400, "InvalidObject", "The request body must be a JSON Patch array of operations")
        changed = dict(ticket)
        for operation in body:
            if not isinstance(operation, dict) or operation.get("op") not in ("replace", "add"):
                raise Refused(400, "InvalidObject", "Each operation must be {op: replace|add, path, value}")
            path, value = str(operation.get("path", "")).strip("/"), operation.get("value")
            if path == "board":
                moved = self.board(value)
                if moved is None:
                    raise invalid(_field("board", value), "NotFound", f"Service Board {_named(value)} not found")
                changed["board"] = {"id": moved["id"], "name": moved["name"]}
            elif path == "status":
                board = self.boards[changed["board"]["id"]]
                status = self._board_status(board, value)
                if status is None:
                    raise invalid(_field("status", value), "NotFound",
                                  f"Service Status {_named(value)} not found for Service Board {board['id']}")
                self._set_status(changed, status, member)
            elif path == "summary":
                if not isinstance(value, str) or not value.strip() or utf16_length(value) > SUMMARY_MAX:
                    raise invalid("summary", "MaxLengthField",
                                  f"The field summary must be a string with a maximum length of {SUMMARY_MAX}.")
                changed["summary"] = value
            elif path == "priority":
                priority = self.priority(value)
                if priority is None:
                    raise invalid(_field("priority", value), "NotFound", f"Priority {_named(value)} not found")
                changed["priority"] = {"id": priority["id"], "name": priority["name"]}
            else:
                raise Refused(400, "InvalidObject", f"The path {path!r} cannot be patched on this stand-in")
        board_id = changed["board"]["id"]
        if not any(s["id"] == changed["status"]["id"] for s in self.statuses[board_id]):
            # Statuses belong to a board: a ticket moved to another board needs one of that board's statuses.
            raise invalid("status/id", "NotFound",
                          f"Service Status {changed['status']['id']} not found for Service Board {board_id}")
        changed["_info"] = {**ticket["_info"], "lastUpdated": iso(self._world.now()), "updatedBy": member.member_id}
        ticket.clear()
        ticket.update(changed)
        return ticket

    def delete(self, ticket_id: str) -> None:
        ticket = self.ticket(ticket_id)
        del self.tickets[ticket["id"]]
        self.notes.pop(ticket["id"], None)
        self.deleted.append(ticket["id"])

    def add_note(self, ticket_id: str, body: Any, member: Member) -> Row:
        ticket = self.ticket(ticket_id)
        if not isinstance(body, dict):
            raise Refused(400, "InvalidObject", "The request body must be a note object")
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            raise invalid("text", "NullValue", "The field text is required.", resource="ticketNote")
        if not any(body.get(f) is True for f in ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")):
            raise invalid("detailDescriptionFlag", "InvalidField", "At least one of detailDescriptionFlag, "
                          "internalAnalysisFlag or resolutionFlag must be true.", resource="ticketNote")
        return self._add_note(ticket["id"], body, member)

    def _add_note(self, ticket_id: int, body: Row, member: Member) -> Row:
        note = {"id": self._id(), "ticketId": ticket_id, "text": body["text"],
                "detailDescriptionFlag": body.get("detailDescriptionFlag") is True,
                "internalAnalysisFlag": body.get("internalAnalysisFlag") is True,
                "resolutionFlag": body.get("resolutionFlag") is True,
                "member": {"identifier": member.member_id}, "dateCreated": iso(self._world.now()),
                "createdBy": member.member_id}
        self.notes[ticket_id].append(note)
        return note


def _same(given: str, known: str) -> bool:
    """A constant-time comparison that takes any text (compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode(), known.encode())


def _named(ref: Any) -> str:
    if isinstance(ref, dict):
        for key in ("id", "identifier", "name"):
            if ref.get(key) not in (None, ""):
                return str(ref[key])
    return repr(ref)


def _field(base: str, ref: Any) -> str:
    return f"{base}/id" if isinstance(ref, dict) and "id" in ref else f"{base}/name"


TICKET_FIELDS = frozenset({"id", "summary", "recordType", "board", "status", "company", "priority", "type",
                           "externalXRef", "closedFlag", "closedDate", "closedBy", "_info"})
BOARD_FIELDS = frozenset({"id", "name", "inactiveFlag", "projectFlag"})
STATUS_FIELDS = frozenset({"id", "name", "board", "closedStatus", "defaultFlag", "inactive", "sortOrder"})
TYPE_FIELDS = frozenset({"id", "name", "board"})
PRIORITY_FIELDS = frozenset({"id", "name", "defaultFlag", "sortOrder"})
COMPANY_FIELDS = frozenset({"id", "identifier", "name", "deletedFlag"})
NOTE_FIELDS = frozenset({"id", "ticketId", "text", "detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag",
                         "member", "dateCreated", "createdBy"})


def build_app(world: World) -> web.Application:
    """The ConnectWise Manage API's aiohttp application, serving `world.psa_connectwise`."""

    def state() -> ConnectWiseState:
        return cast(ConnectWiseState, world.psa_connectwise)

    async def json_body(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise Refused(400, "InvalidObject", "The request body is not valid JSON") from exc

    @web.middleware
    async def connectwise(request: web.Request, handler: Any) -> web.StreamResponse:
        """Authentication, the rate limit, the read-only member's 403 and ConnectWise's error format, for every
        route; each call is recorded (method, path, query, member) for the tests."""
        try:
            member = state().authenticate(request)
            state().throttle()
            state().requests.append({"method": request.method, "path": request.path,
                                     "query": dict(request.query), "member": member.member_id})
            if member.read_only and request.method in ("POST", "PATCH", "PUT", "DELETE"):
                raise Refused(403, "Security", "You do not have security permission to perform this action.")
            request["member"] = member
            response: web.StreamResponse = await handler(request)
            return response
        except Refused as refused:
            return refused.response()
        except web.HTTPNotFound:
            return web.json_response({"code": "NotFound", "message": "The endpoint does not exist."}, status=404)

    routes = web.RouteTableDef()

    @routes.get(API + "/service/tickets")
    async def list_tickets(request: web.Request) -> web.Response:
        return web.json_response(select(list(state().tickets.values()), request.query, TICKET_FIELDS))

    @routes.post(API + "/service/tickets")
    async def create_ticket(request: web.Request) -> web.Response:
        return web.json_response(state().create(await json_body(request), request["member"]), status=201)

    @routes.get(API + "/service/tickets/{id}")
    async def get_ticket(request: web.Request) -> web.Response:
        return web.json_response(state().ticket(request.match_info["id"]))

    @routes.patch(API + "/service/tickets/{id}")
    async def patch_ticket(request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(state().patch(request.match_info["id"], body, request["member"]))

    @routes.delete(API + "/service/tickets/{id}")
    async def delete_ticket(request: web.Request) -> web.Response:
        state().delete(request.match_info["id"])
        return web.Response(status=204)

    @routes.get(API + "/service/tickets/{id}/notes")
    async def list_notes(request: web.Request) -> web.Response:
        ticket = state().ticket(request.match_info["id"])
        return web.json_response(select(state().notes[ticket["id"]], request.query, NOTE_FIELDS))

    @routes.post(API + "/service/tickets/{id}/notes")
    async def add_note(request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(state().add_note(request.match_info["id"], body, request["member"]), status=201)

    @routes.get(API + "/service/boards")
    async def list_boards(request: web.Request) -> web.Response:
        return web.json_response(select(list(state().boards.values()), request.query, BOARD_FIELDS))

    def board_of(request: web.Request) -> int:
        """The id of the board the path names (Refused 404 when there is no such board)."""
        board_id = request.match_info["id"]
        if not board_id.isdigit() or int(board_id) not in state().boards:
            raise Refused(404, "NotFound", f"Board recordId: {board_id} not found.")
        return int(board_id)

    @routes.get(API + "/service/boards/{id}")
    async def get_board(request: web.Request) -> web.Response:
        return web.json_response(state().boards[board_of(request)])

    @routes.get(API + "/service/boards/{id}/statuses")
    async def list_statuses(request: web.Request) -> web.Response:
        return web.json_response(select(state().statuses[board_of(request)], request.query, STATUS_FIELDS))

    @routes.get(API + "/service/boards/{id}/types")
    async def list_types(request: web.Request) -> web.Response:
        return web.json_response(select(state().types[board_of(request)], request.query, TYPE_FIELDS))

    @routes.get(API + "/service/priorities")
    async def list_priorities(request: web.Request) -> web.Response:
        return web.json_response(select(state().priorities, request.query, PRIORITY_FIELDS))

    @routes.get(API + "/company/companies")
    async def list_companies(request: web.Request) -> web.Response:
        return web.json_response(select(state().companies, request.query, COMPANY_FIELDS))

    app = web.Application(middlewares=[connectwise])
    app.add_routes(routes)
    return app
