"""The tickets' HTTP routes: the open tickets (Read) and a test ticket (Operate), docs/tickets.md."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, read_json

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="tickets", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def tickets(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/tickets: every ticket not closed (customer, condition, number, url, opened, last note, state, the
    last refusal) and the routing in force; `system` is null and the list empty when no ticket system is set."""
    allow(req, "GET")
    authorize(req, Role.READ)
    from shared.tickets.routing import parse_routing
    from shared.tickets.service import tickets_document

    async with invocation_services() as svc:
        book = svc.tickets
        routing = book.routing if book is not None else parse_routing(svc.settings.ticket_routing)
        rows = await book.open_tickets() if book is not None else []
        return json_response(tickets_document(svc.settings.ticket_system, rows, routing))


@bp.route(route="tickets/test", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def ticket_test(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/tickets/test [{"condition": name}]: open a test ticket on the default route (or that condition's),
    audited with the caller; answers the PSA's number and url, or its error code. 409 NoTicketSystem without one."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    from shared.tickets.routing import KNOWN, Routing
    from shared.tickets.service import send_test_ticket

    condition = ""
    if req.get_body():
        body = read_json(req)
        if not isinstance(body, dict) or set(body) - {"condition"}:
            raise HttpError(422, "InvalidRequest", "send no body, or {\"condition\": name} to test that condition's "
                            "route")
        condition = body.get("condition", "")
        if not isinstance(condition, str) or (condition and condition not in KNOWN
                                              and not condition.endswith("-drift")):
            raise HttpError(422, "InvalidRequest", f"condition must be one of {', '.join(sorted(KNOWN))} or "
                            "<kind>-drift")
    async with invocation_services() as svc:
        book = svc.tickets
        if book is None:
            answer = await send_test_ticket(None, "", Routing(), svc.state, who.name, svc.engine.clock.now())
        else:
            answer = await send_test_ticket(book.desk_factory, book.kind, book.routing, svc.state, who.name,
                                            svc.engine.clock.now(), "expiring-1d" if condition == "expiring"
                                            else condition)
    return json_response(answer)
