"""A HaloPSA stand-in: the OAuth2 token endpoint and the ticket API the HaloPSA desk uses.

Each behaviour names its public source in sandbox/README.md ("HaloPSA"); where HaloPSA's behaviour is not published,
the strictest plausible one is modelled and said so there. In short:
- `POST /auth/token` (form): `grant_type=client_credentials`, `client_id`, `client_secret`, `scope` (space
  separated; each scope must be granted to the application, `all` grants every scope); `?tenant=` required when the
  seed names a hosted tenant. Bad client: 401 `{"error": "invalid_client"}`; a scope not granted: 400
  `{"error": "invalid_scope"}`; another grant type: 400 `{"error": "unsupported_grant_type"}`.
- `/api/...` with `Authorization: Bearer <token>`: no, unknown or expired token 401 with
  `WWW-Authenticate: Bearer error="invalid_token"` and no body; a token without the endpoint's scope 403, no body.
- `GET /api/Team`, `/api/Priority`, `/api/TicketType`, `/api/Status`, `/api/Outcome` (read:tickets): arrays;
  `GET /api/Client?search=` (read:customers): `{"record_count", "clients"}`.
- `POST /api/Tickets` (edit:tickets): a JSON array; an entry without `id` creates, with `id` updates; unknown
  client, team, priority, ticket type or status, an empty or over-long summary: 400 `{"ClassName":
  "System.Exception", "Message": ...}`, nothing saved. One entry: the ticket object; several: an array.
- `GET /api/Tickets` (read:tickets): `search` (summary and details) / `search_summary` as SQL Server's
  `LIKE '%term%'` (`[...]`, `%` and `_` are patterns), `open_only`, `closed_only`, `client_id`, `count`;
  `{"record_count", "tickets"}`. `GET /api/Tickets/{id}`: the ticket; deleted or unknown 404.
- `DELETE /api/Tickets/{id}` (edit:tickets): the ticket is deleted (then 404 everywhere).
- `POST /api/Actions` (edit:tickets): a JSON array of actions; each needs `ticket_id` (404 when deleted or
  unknown) and `outcome` (a name) or `outcome_id` (else 400 "An Outcome must be entered for this Action");
  `note` / `note_html`, `hiddenfromuser`, `new_status` (an unknown status 400) moves the ticket.
- A rolling window per instance (default 300 requests per 300 s; seed `rate_limit`): past it 429
  `{"Message": "Rate Limit Reached - N Requests per rolling M minute window"}`, with `Retry-After` only when the
  seed asks (`retry_after: true`); refused requests do not count.
Everything is kept for the tests (`GET /state` on the control API: `psa_halopsa`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox.world import iso

if TYPE_CHECKING:
    from sandbox.world import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_LIFETIME = timedelta(hours=1)
SUMMARY_LIMIT = 255  # UTF-16 code units (an nvarchar column): not published, the strictest plausible
CLOSED_STATUS_ID = 9  # Halo's built-in "Closed"
READ, EDIT, CUSTOMERS = "read:tickets", "edit:tickets", "read:customers"

Lookup = list[dict[str, Any]]
DEFAULT_TEAMS: Lookup = [{"id": 1, "name": "1st Line Support"}, {"id": 2, "name": "2nd Line Support"}]
DEFAULT_PRIORITIES: Lookup = [{"id": n, "priorityid": n, "name": name}
                              for n, name in ((1, "Critical"), (2, "High"), (3, "Medium"), (4, "Low"))]
DEFAULT_TICKET_TYPES: Lookup = [{"id": 1, "name": "Incident"}, {"id": 3, "name": "Service Request"},
                                {"id": 4, "name": "Problem"}]
DEFAULT_STATUSES: Lookup = [{"id": 1, "name": "New"}, {"id": 2, "name": "In Progress"},
                            {"id": 4, "name": "Waiting on User"}, {"id": 9, "name": "Closed", "closed": True},
                            {"id": 10, "name": "Resolved", "closed": True}]
DEFAULT_OUTCOMES: Lookup = [{"id": 1, "outcome": "Note"}, {"id": 7, "outcome": "Private Note"},
                            {"id": 9, "outcome": "Resolved"}]
DEFAULT_CLIENTS: Lookup = [{"id": 12, "name": "Fabrikam"}]


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """An injected fault's body, in the shape Halo's API errors take (a serialized .NET exception)."""
    return {"ClassName": code or "System.Exception", "Message": message or "An error has occurred."}


def _refusal(message: str, status: int = 400) -> web.Response:
    return web.json_response({"ClassName": "System.Exception", "Message": message}, status=status)


def like(term: str) -> re.Pattern[str]:
    """SQL Server's `LIKE '%term%'` (case-insensitive collation) as a regex: `%`, `_` and `[...]` are patterns."""
    out, i = [], 0
    while i < len(term):
        char = term[i]
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        elif char == "[" and "]" in term[i + 1:]:
            end = term.index("]", i + 1)
            body = term[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            klass = "[" + ("^" if negate else "") + re.sub(r"([\\\]\[])", r"\\\1", body) + "]"
            try:
                re.compile(klass)
            except re.error:
                klass = "(?!)"  # a reversed range (`[r-0]`) matches nothing, as in SQL Server
            out.append(klass)
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Application:
    client_id: str
    client_secret: str
    scopes: frozenset[str]
    agent: str


@dataclass
class Token:
    client_id: str
    scopes: frozenset[str]
    expires: datetime


@dataclass
class RateLimit:
    requests: int = 300
    window_seconds: float = 300.0
    retry_after: bool = False
    seen: deque[datetime] = field(default_factory=deque)


class HaloPsaState:
    """One Halo instance: its API applications, lookups, tickets and actions, and its rate limit."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.reset()

    def reset(self) -> None:
        self.tenant = ""
        self.applications: dict[str, Application] = {}
        self.tokens: dict[str, Token] = {}
        self.teams = [dict(t) for t in DEFAULT_TEAMS]
        self.priorities = [dict(p) for p in DEFAULT_PRIORITIES]
        self.ticket_types = [dict(t) for t in DEFAULT_TICKET_TYPES]
        self.statuses = [dict(s) for s in DEFAULT_STATUSES]
        self.outcomes = [dict(o) for o in DEFAULT_OUTCOMES]
        self.clients = [dict(c) for c in DEFAULT_CLIENTS]
        self.tickets: dict[int, dict[str, Any]] = {}
        self.actions: list[dict[str, Any]] = []
        self.deleted: set[int] = set()
        self.limit = RateLimit()
        self.throttled = 0  # requests answered 429, for the tests
        self._next_ticket = 1001
        self._next_action = 1

    def seed(self, section: dict[str, Any]) -> None:
        if "tenant" in section:
            self.tenant = str(section["tenant"] or "")
        for app in section.get("applications", []):
            granted = app.get("scopes", "all")
            scopes = frozenset(granted.split() if isinstance(granted, str) else (str(s) for s in granted))
            self.applications[str(app["client_id"])] = Application(
                str(app["client_id"]), str(app["client_secret"]), scopes, str(app.get("agent") or "API Agent"))
        for lookup in ("teams", "priorities", "ticket_types", "statuses", "outcomes", "clients"):
            if lookup in section:  # a list given replaces the defaults: the instance has exactly these
                setattr(self, lookup, [dict(item) for item in section[lookup]])
        if "rate_limit" in section:
            doc = section["rate_limit"]
            requests, window = int(doc.get("requests", 300)), float(doc.get("window_seconds", 300))
            if requests < 1 or window <= 0:
                raise ValueError("rate_limit needs requests >= 1 and window_seconds > 0")
            # The requests already counted stay counted: a new limit applies to the same window.
            self.limit = RateLimit(requests, window, bool(doc.get("retry_after", False)), self.limit.seen)

    def dump(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "tickets": [dict(t) for t in self.tickets.values()],
            "actions": [dict(a) for a in self.actions],
            "deleted": sorted(self.deleted),
            "throttled": self.throttled,
            "rateLimit": {"requests": self.limit.requests, "windowSeconds": self.limit.window_seconds,
                          "retryAfter": self.limit.retry_after, "used": len(self.limit.seen)},
        }

    # The rolling window

    def admit(self) -> float | None:
        """None when the request is within the window (and counted); else the seconds until a slot frees."""
        now, limit = self._world.now(), self.limit
        horizon = now - timedelta(seconds=limit.window_seconds)
        while limit.seen and limit.seen[0] <= horizon:
            limit.seen.popleft()
        if len(limit.seen) >= limit.requests:
            self.throttled += 1
            return max(1.0, (limit.seen[0] - horizon).total_seconds())
        limit.seen.append(now)
        return None

    # Lookups

    def status(self, status_id: Any) -> dict[str, Any] | None:
        return next((s for s in self.statuses if _same_id(s.get("id"), status_id)), None)

    def is_closed(self, status_id: Any) -> bool:
        found = self.status(status_id)
        return bool(found and found.get("closed"))

    def outcome(self, action: dict[str, Any]) -> dict[str, Any] | None:
        if action.get("outcome_id") not in (None, "", 0):
            return next((o for o in self.outcomes if _same_id(o["id"], action["outcome_id"])), None)
        name = str(action.get("outcome") or "").strip().lower()
        return next((o for o in self.outcomes if str(o["outcome"]).lower() == name), None) if name else None

    def ticket(self, ticket_id: Any) -> dict[str, Any] | None:
        try:
            number = int(ticket_id)
        except (TypeError, ValueError):
            return None
        return None if number in self.deleted else self.tickets.get(number)

    # Writes

    def _merged(self, entry: dict[str, Any]) -> dict[str, Any] | str:
        """The entry over the ticket it updates (if any), or why Halo would refuse it."""
        existing: dict[str, Any] = {}
        if entry.get("id") not in (None, "", 0):
            found = self.ticket(entry["id"])
            if found is None:
                return f"Ticket {entry['id']} not found"
            existing = found
        merged = {**existing, **{k: v for k, v in entry.items() if not k.startswith("_")}}
        summary = str(merged.get("summary") or "")
        if not summary.strip():
            return "A summary must be entered"
        if utf16_length(summary) > SUMMARY_LIMIT:
            return f"String or binary data would be truncated: summary is longer than {SUMMARY_LIMIT} characters"
        if not any(_same_id(c["id"], merged.get("client_id")) for c in self.clients):
            return f"Client {merged.get('client_id')!r} does not exist"
        if merged.get("team") not in (None, "") and not any(
                str(t["name"]).lower() == str(merged["team"]).lower() for t in self.teams):
            return f"Team {merged['team']!r} does not exist"
        if merged.get("team_id") not in (None, "", 0) and not any(_same_id(t["id"], merged["team_id"])
                                                                  for t in self.teams):
            return f"Team {merged['team_id']!r} does not exist"
        if merged.get("priority_id") not in (None, "", 0) and not any(
                _same_id(p.get("priorityid", p["id"]), merged["priority_id"]) for p in self.priorities):
            return f"Priority {merged['priority_id']!r} does not exist"
        if merged.get("tickettype_id") not in (None, "", 0) and not any(
                _same_id(t["id"], merged["tickettype_id"]) for t in self.ticket_types):
            return f"Ticket type {merged['tickettype_id']!r} does not exist"
        if self.status(merged.get("status_id") or 1) is None:
            return f"Status {merged.get('status_id')!r} does not exist"
        return merged

    def save_tickets(self, entries: list[dict[str, Any]], agent: str) -> list[dict[str, Any]] | str:
        """The saved tickets, or why Halo would refuse one of the entries (then nothing is saved)."""
        merged = [self._merged(entry) for entry in entries]
        refused = next((m for m in merged if isinstance(m, str)), None)
        if refused is not None:
            return refused
        saved = []
        for ticket in cast(list[dict[str, Any]], merged):
            now = iso(self._world.now())
            if "id" not in ticket or ticket["id"] in (None, "", 0):
                ticket["id"] = self._next_ticket
                self._next_ticket += 1
                ticket["datecreated"] = now
                ticket["reportedby"] = agent
            client = next(c for c in self.clients if _same_id(c["id"], ticket["client_id"]))
            status_id = int(ticket.get("status_id") or 1)
            ticket.update(id=int(ticket["id"]), status_id=status_id, client_id=int(client["id"]),
                          client_name=client["name"], hasbeenclosed=self.is_closed(status_id), lastactiondate=now,
                          deleted=False)
            self.tickets[ticket["id"]] = ticket
            saved.append(ticket)
        return saved

    def add_action(self, entry: dict[str, Any], agent: str) -> tuple[int, dict[str, Any] | str]:
        """(200, the action) or (status, why Halo would refuse it): nothing saved on a refusal."""
        ticket = self.ticket(entry.get("ticket_id"))
        if ticket is None:
            return 404, f"Ticket {entry.get('ticket_id')!r} not found"
        outcome = self.outcome(entry)
        if outcome is None:
            return 400, "An Outcome must be entered for this Action"
        new_status = entry.get("new_status")
        if new_status not in (None, "", 0, -1) and self.status(new_status) is None:
            return 400, f"Status {new_status!r} does not exist"
        action = {
            "id": self._next_action, "ticket_id": ticket["id"], "outcome": outcome["outcome"],
            "outcome_id": outcome["id"], "note": entry.get("note_html") or entry.get("note") or "",
            "hiddenfromuser": bool(entry.get("hiddenfromuser", False)), "who": agent,
            "datetime": iso(self._world.now()), "new_status": new_status,
        }
        self._next_action += 1
        self.actions.append(action)
        if new_status not in (None, "", 0, -1):
            ticket.update(status_id=int(new_status), hasbeenclosed=self.is_closed(new_status))
        ticket["lastactiondate"] = action["datetime"]
        return 200, action


def _same_id(a: Any, b: Any) -> bool:
    try:
        return int(a) == int(b)
    except (TypeError, ValueError):
        return False


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def build_app(world: World) -> web.Application:
    """The stand-in's application, keeping its state in `world.psa_halopsa`."""

    def state() -> HaloPsaState:
        return cast(HaloPsaState, world.psa_halopsa)

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = state().admit()
        if wait is not None:
            limit = state().limit
            minutes = f"{limit.window_seconds / 60:g}"
            headers = {"Retry-After": str(int(-(-wait // 1)))} if limit.retry_after else {}
            return web.json_response(
                {"Message": f"Rate Limit Reached - {limit.requests} Requests per rolling {minutes} minute window"},
                status=429, headers=headers)
        return await handler(request)

    def authorized(request: web.Request, *scopes: str) -> Token | web.Response:
        header = request.headers.get("Authorization", "")
        token = state().tokens.get(header[7:]) if header[:7].lower() == "bearer " else None
        if token is None or token.expires <= world.now():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if "all" not in token.scopes and not any(s in token.scopes for s in scopes):
            return web.Response(status=403)
        return token

    def agent(token: Token) -> str:
        app = state().applications.get(token.client_id)
        return app.agent if app else "API Agent"

    async def token_endpoint(request: web.Request) -> web.Response:
        form = await request.post()
        if state().tenant and request.query.get("tenant", "").lower() != state().tenant.lower():
            return web.json_response({"error": "invalid_request", "error_description": "unknown tenant"}, status=400)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        app = state().applications.get(str(form.get("client_id") or ""))
        if app is None or not secrets.compare_digest(app.client_secret, str(form.get("client_secret") or "")):
            return web.json_response({"error": "invalid_client"}, status=401)
        asked = frozenset(str(form.get("scope") or "").split())
        if not asked or ("all" not in app.scopes and not asked <= app.scopes):
            return web.json_response({"error": "invalid_scope"}, status=400)
        value = secrets.token_urlsafe(32)
        state().tokens[value] = Token(app.client_id, asked, world.now() + TOKEN_LIFETIME)
        return web.json_response({"access_token": value, "token_type": "Bearer",
                                  "expires_in": int(TOKEN_LIFETIME.total_seconds()), "scope": " ".join(sorted(asked))})

    def lookup(items: Callable[[], list[dict[str, Any]]]) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            token = authorized(request, READ)
            if isinstance(token, web.Response):
                return token
            return web.json_response([{k: v for k, v in item.items() if k != "closed"} for item in items()])
        return answer

    async def clients(request: web.Request) -> web.StreamResponse:
        token = authorized(request, CUSTOMERS)
        if isinstance(token, web.Response):
            return token
        term = request.query.get("search", "")
        found = [c for c in state().clients if not term or like(term).search(str(c["name"]))]
        return web.json_response({"record_count": len(found), "clients": found})

    async def edit_array(request: web.Request) -> tuple[Token, list[dict[str, Any]]] | web.Response:
        """An edit's token and its body, a JSON array of objects; a refusal otherwise (the token checked first)."""
        token = authorized(request, EDIT)
        if isinstance(token, web.Response):
            return token
        try:
            doc = json.loads(await request.text())
        except ValueError:
            return _refusal("The request body is not valid JSON")
        if not isinstance(doc, list) or not doc or not all(isinstance(item, dict) for item in doc):
            return _refusal("The request body must be a JSON array of objects")
        return token, doc

    def ticket_for(request: web.Request, scope: str, ticket_id: int) -> dict[str, Any] | web.Response:
        """The ticket, for a caller with the scope (401/403, or 404 when there is no such ticket)."""
        token = authorized(request, scope)
        if isinstance(token, web.Response):
            return token
        ticket = state().ticket(ticket_id)
        if ticket is None:
            return _refusal(f"Ticket {ticket_id} not found", 404)
        return ticket

    async def post_tickets(request: web.Request) -> web.StreamResponse:
        edit = await edit_array(request)
        if isinstance(edit, web.Response):
            return edit
        token, doc = edit
        saved = state().save_tickets([dict(entry) for entry in doc], agent(token))
        if isinstance(saved, str):
            return _refusal(saved)
        return web.json_response(saved[0] if len(saved) == 1 else saved)

    async def list_tickets(request: web.Request) -> web.StreamResponse:
        token = authorized(request, READ)
        if isinstance(token, web.Response):
            return token
        query = request.query
        found = [t for t in state().tickets.values() if t["id"] not in state().deleted]
        if query.get("search"):
            pattern = like(query["search"])
            found = [t for t in found if pattern.search(str(t.get("summary", ""))) or pattern.search(
                str(t.get("details_html") or t.get("details") or "")) or str(t["id"]) == query["search"]]
        if query.get("search_summary"):
            pattern = like(query["search_summary"])
            found = [t for t in found if pattern.search(str(t.get("summary", "")))]
        if _truthy(query.get("open_only")):
            found = [t for t in found if not t["hasbeenclosed"]]
        if _truthy(query.get("closed_only")):
            found = [t for t in found if t["hasbeenclosed"]]
        if query.get("client_id"):
            found = [t for t in found if _same_id(t["client_id"], query["client_id"])]
        total = len(found)
        if query.get("count", "").isdigit():
            found = found[: int(query["count"])]
        return web.json_response({"record_count": total, "tickets": found})

    async def get_ticket(request: web.Request, ticket_id: int) -> web.StreamResponse:
        ticket = ticket_for(request, READ, ticket_id)
        if isinstance(ticket, web.Response):
            return ticket
        return web.json_response(ticket)

    async def delete_ticket(request: web.Request, ticket_id: int) -> web.StreamResponse:
        ticket = ticket_for(request, EDIT, ticket_id)
        if isinstance(ticket, web.Response):
            return ticket
        state().deleted.add(int(ticket["id"]))
        ticket["deleted"] = True
        return web.Response(status=200)

    async def post_actions(request: web.Request) -> web.StreamResponse:
        edit = await edit_array(request)
        if isinstance(edit, web.Response):
            return edit
        token, doc = edit
        # Checked before anything is saved: one refused entry refuses the whole request.
        for entry in doc:
            if state().ticket(entry.get("ticket_id")) is None:
                return _refusal(f"Ticket {entry.get('ticket_id')!r} not found", 404)
            if state().outcome(entry) is None:
                return _refusal("An Outcome must be entered for this Action")
        results = [state().add_action(dict(entry), agent(token)) for entry in doc]
        refused = next((r for r in results if r[0] != 200), None)
        if refused is not None:
            return _refusal(str(refused[1]), refused[0])
        actions = [r[1] for r in results]
        return web.json_response(actions[0] if len(actions) == 1 else actions)

    # Halo's API answers whatever the path's case (ASP.NET routing): clients write /api/Tickets and /api/tickets.
    routes: dict[tuple[str, str], Handler] = {
        ("POST", "/auth/token"): token_endpoint,
        ("GET", "/api/team"): lookup(lambda: state().teams),
        ("GET", "/api/priority"): lookup(lambda: state().priorities),
        ("GET", "/api/tickettype"): lookup(lambda: state().ticket_types),
        ("GET", "/api/status"): lookup(lambda: state().statuses),
        ("GET", "/api/outcome"): lookup(lambda: state().outcomes),
        ("GET", "/api/client"): clients,
        ("POST", "/api/tickets"): post_tickets,
        ("GET", "/api/tickets"): list_tickets,
        ("POST", "/api/actions"): post_actions,
    }
    by_id: dict[str, Callable[[web.Request, int], Awaitable[web.StreamResponse]]] = {
        "GET": get_ticket, "DELETE": delete_ticket}

    async def dispatch(request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/").lower()
        handler = routes.get((request.method, path))
        if handler is not None:
            return await handler(request)
        one = re.fullmatch(r"/api/tickets/(\d+)", path)
        if one and request.method in by_id:
            return await by_id[request.method](request, int(one.group(1)))
        return web.json_response({"Message": "No HTTP resource was found that matches the request URI."}, status=404)

    app = web.Application(middlewares=[rate_limit])
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
