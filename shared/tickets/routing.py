"""Ticket routing: which conditions get a ticket at all, and where each is filed (docs/tickets.md, "Routing").

Pure: the app setting TICKET_ROUTING (a JSON object) parsed once at start into `Routing`, then `route(condition,
tenant_id)` answers the `TicketRoute` of a condition for a customer, or None when that condition gets no ticket.

    {"default": {"board": "Security", "priority": "Priority 3 - Normal", "type": "Alert", "status": "New",
                 "closedStatus": "Completed"},
     "conditions": {"expired": {"priority": "Priority 1 - Emergency"}, "sign-in-evidence-unreadable": false,
                    "expiring": {"board": "Renewals"}},
     "companies": {"<customer tenant id>": "<the PSA's company / account / client of that customer>"}}

A condition's entry overrides the default field by field; `false` gives it no ticket. Every condition that holds
and clears (shared/conditions.py RESOLVABLE, `<kind>-drift`) gets a ticket unless routed `false`; the staged expiry
warnings (`expiring-<N>d`) are routed by the one name `expiring` (their ticket is per credential, see book.py). The
one-off notices (a poisoned message, a capped lifetime...) never get a ticket: nothing would ever close it, and they
reach people by e-mail and the alert channel already.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.conditions import RESOLVABLE, resolvable, staged
from shared.domain import GUID
from shared.tickets.port import TicketRoute

# The routing name of every staged expiry warning (expiring-60d, expiring-30d...): one ticket per credential.
EXPIRING = "expiring"
# The JSON field of each TicketRoute field (camelCase, as the rest of the API).
ROUTE_FIELDS = {"board": "board", "priority": "priority", "type": "ticket_type", "status": "status",
                "closedStatus": "closed_status", "company": "company"}
# The names a `conditions` entry may use: every condition that clears, drift of any destination kind, `expiring`.
KNOWN = frozenset(RESOLVABLE | {EXPIRING})


class RoutingError(ValueError):
    """TICKET_ROUTING is malformed; the message says where."""


def routing_name(condition: str) -> str:
    """The name routing knows a condition by: `expiring` for every staged warning, else the condition itself."""
    return EXPIRING if staged(condition) else condition


def ticketed(condition: str) -> bool:
    """A condition with a lifecycle (it holds, then clears): only these can get a ticket."""
    return resolvable(condition)


@dataclass(frozen=True)
class Routing:
    """The parsed TICKET_ROUTING: a default route, per-condition overrides (None: no ticket), per-customer company."""

    default: TicketRoute = field(default_factory=TicketRoute)
    conditions: Mapping[str, TicketRoute | None] = field(default_factory=dict)
    companies: Mapping[str, str] = field(default_factory=dict)

    def route(self, condition: str, tenant_id: str) -> TicketRoute | None:
        """Where this condition's ticket for this customer goes; None when it gets no ticket."""
        if not ticketed(condition):
            return None
        name = routing_name(condition)
        route = self.conditions[name] if name in self.conditions else self.default
        if route is None:
            return None
        company = self.companies.get(tenant_id.lower(), "")
        return replace(route, company=company) if company and not route.company else route

    def document(self) -> dict[str, Any]:
        """The routing as JSON (what GET /api/tickets shows next to the tickets)."""
        return {"default": route_document(self.default),
                "conditions": {k: (route_document(v) if v is not None else False)
                               for k, v in sorted(self.conditions.items())},
                "companies": dict(sorted(self.companies.items()))}


def route_document(route: TicketRoute) -> dict[str, str]:
    return {name: getattr(route, attr) for name, attr in ROUTE_FIELDS.items() if getattr(route, attr)}


def _route(where: str, raw: Any, base: TicketRoute) -> TicketRoute:
    if not isinstance(raw, dict):
        raise RoutingError(f"TICKET_ROUTING {where} must be an object (or false for no ticket)")
    unknown = sorted(set(raw) - set(ROUTE_FIELDS))
    if unknown:
        raise RoutingError(f"TICKET_ROUTING {where}: unknown field {unknown[0]!r}; fields are "
                           f"{', '.join(ROUTE_FIELDS)}")
    values: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # Autotask and HaloPSA address queues and priorities by number
        if not isinstance(value, str) or len(value) > 200 or any(ord(c) < 32 for c in value):
            raise RoutingError(f"TICKET_ROUTING {where}.{name} must be a string or a number (at most 200 characters)")
        values[ROUTE_FIELDS[name]] = value.strip()
    return replace(base, **values)


def parse_routing(text: str) -> Routing:
    """TICKET_ROUTING as `Routing` ("" is every ticketed condition on the desk's defaults); RoutingError names the
    bad part."""
    if not text.strip():
        return Routing()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise RoutingError(f"TICKET_ROUTING is not JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(raw, dict):
        raise RoutingError("TICKET_ROUTING must be a JSON object with default, conditions and companies")
    unknown = sorted(set(raw) - {"default", "conditions", "companies"})
    if unknown:
        raise RoutingError(f"TICKET_ROUTING: unknown field {unknown[0]!r}; fields are default, conditions, companies")
    default = _route("default", raw.get("default", {}), TicketRoute())
    conditions: dict[str, TicketRoute | None] = {}
    raw_conditions = raw.get("conditions", {})
    if not isinstance(raw_conditions, dict):
        raise RoutingError("TICKET_ROUTING conditions must be an object: condition name -> route or false")
    for name, value in raw_conditions.items():
        if name not in KNOWN and not name.endswith("-drift"):
            raise RoutingError(f"TICKET_ROUTING conditions: {name!r} is not a condition that clears; one of "
                               f"{', '.join(sorted(KNOWN))} or <kind>-drift")
        if value is False:
            conditions[name] = None
        elif value is True:
            conditions[name] = default
        else:
            conditions[name] = _route(f"conditions.{name}", value, default)
    companies: dict[str, str] = {}
    raw_companies = raw.get("companies", {})
    if not isinstance(raw_companies, dict):
        raise RoutingError("TICKET_ROUTING companies must be an object: customer tenant id -> the PSA's company")
    for tenant, company in raw_companies.items():
        if not GUID.fullmatch(str(tenant)):
            raise RoutingError(f"TICKET_ROUTING companies: {tenant!r} is not a tenant id (a GUID)")
        if isinstance(company, int) and not isinstance(company, bool):
            company = str(company)
        if not isinstance(company, str) or not company.strip() or len(company) > 200:
            raise RoutingError(f"TICKET_ROUTING companies.{tenant} must be a non-empty string or number")
        companies[str(tenant).lower()] = company.strip()
    return Routing(default, conditions, companies)
