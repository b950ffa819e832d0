"""What the entry points do with tickets: build the configured desk from its Key Vault secret, send a test ticket,
list the open tickets (GET /api/tickets) and each target's tickets (the status document's `tickets`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.errors import Conflict, RotationError
from shared.ports import Event, SecretStore, StateStore
from shared.tickets import desk
from shared.tickets.book import DeskFactory, Ticket, ticket_key
from shared.tickets.port import TicketDesk, TicketDraft, TicketError
from shared.tickets.routing import Routing, route_document

log = logging.getLogger(__name__)
# The audit partition of ticket events that concern no target (a test ticket), beside the test alert's.
ROTATOR_AUDIT = ("rotator", "tickets")


def desk_factory(kind: str, secret_name: str, secrets: SecretStore, *, ca_bundle: str = "") -> DeskFactory:
    """Builds the desk of `kind` from the JSON object in the Key Vault secret `secret_name` (read once per worker
    process, as every named credential: a changed secret is used after a restart). TicketError(TicketConfigInvalid)
    when it is unreadable or not usable; the secret's value is never in the error."""

    async def build() -> TicketDesk:
        try:
            raw = (await secrets.get_named(secret_name)).reveal()
        except RotationError as error:
            raise TicketError(f"the ticket system's Key Vault secret {secret_name!r} cannot be read ({error.code})",
                              code="TicketConfigInvalid") from None
        try:
            config = json.loads(raw)
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise TicketError(f"the Key Vault secret {secret_name!r} must hold the {kind} configuration as a JSON "
                              f"object (docs/tickets-{kind}.md)", code="TicketConfigInvalid")
        return desk(kind, {str(k): v for k, v in config.items()}, ca_bundle=ca_bundle)

    return build


async def send_test_ticket(build: DeskFactory | None, kind: str, routing: Routing, state: StateStore, actor: str,
                           at: datetime, condition: str = "") -> dict[str, Any]:
    """Open one test ticket on the route of `condition` (the default route when ""), audited with who sent it;
    answers the PSA's number and url, or the error code and message (never a credential). NoTicketSystem (Conflict)
    when none is configured."""
    if build is None:
        raise Conflict("no ticket system is configured: set TICKET_SYSTEM (connectwise, autotask, halopsa or webhook) "
                       "and TICKET_SECRET_NAME (its Key Vault secret)", code="NoTicketSystem")
    route = routing.route(condition, "") if condition else routing.default
    if route is None:
        raise Conflict(f"routing gives {condition!r} no ticket (TICKET_ROUTING)", code="ConditionNotTicketed")
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    draft = TicketDraft(ticket_key("test", stamp), "", "", "test",
                        f"Sync-secret rotator: test ticket ({stamp})",
                        f"A test ticket sent by {actor or 'an operator'}: the rotator's tickets reach this board"
                        f"{' on the route of ' + condition if condition else ''}. You may close it.", route)
    number = url = error_code = message = ""
    try:
        ticket = await (await build()).open(draft)
        number, url = ticket.number or ticket.id, ticket.url
    except TicketError as error:
        error_code, message = error.code, error.message
    outcome = "opened" if not error_code else "failed"
    log.info("test ticket %s", outcome, extra={"event": "ticket-test", "kind": kind, "outcome": outcome,
                                               "error_code": error_code, "actor": actor})
    await state.record(Event(*ROTATOR_AUDIT, "ticket-test", outcome, actor, error_code=error_code,
                             detail=f"{kind} ticket {number}" if number else f"{kind}: {message}"[:500], at=at))
    return {"system": kind, "opened": not error_code, "number": number or None, "url": url or None,
            "errorCode": error_code or None, "message": message or None, "route": route_document(route),
            "sent": {"title": draft.title, "at": at.isoformat()}}


def tickets_document(kind: str, tickets: Sequence[Ticket], routing: Routing) -> dict[str, Any]:
    """GET /api/tickets: the system, the tickets not closed and the routing in force."""
    return {"system": kind or None, "tickets": [t.document() for t in tickets], "routing": routing.document()}


def per_target(tickets: Sequence[Ticket]) -> Callable[[str, str], list[dict[str, Any]]]:
    """The `tickets` of a target's status document: its customer's open tickets that concern its app."""
    by_target: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tickets:
        if not t.get("Number") and not t.get("Url"):
            continue  # not opened yet: nothing to link to
        link = {"condition": t.get("Condition"), "number": t.get("Number") or None, "url": t.get("Url") or None}
        for app in str(t.get("AppIds")).split(","):
            by_target.setdefault((str(t.get("TenantId")).lower(), app.lower()), []).append(link)

    def of(tenant_id: str, app_id: str) -> list[dict[str, Any]]:
        return by_target.get((tenant_id.lower(), app_id.lower()), [])

    return of


def with_tickets(docs: Sequence[Mapping[str, Any]], tickets: Sequence[Ticket]) -> list[dict[str, Any]]:
    """Status documents with each target's `tickets` ([] when none)."""
    of = per_target(tickets)
    return [{**d, "tickets": of(str(d["tenantId"]), str(d["appId"]))} for d in docs]
