"""Change control's approvals over HTTP (issue 26): the list, and a person's decision on one request.

GET /api/approvals[?status=pending|approved|postponed|rejected] (Rotator.Read: what the status view already shows
of each request) and POST /api/approvals/{tenantId}/{appId} {requestId, action, until?, reason?} (Rotator.Operate).
A decision is recorded first (shared/approvals.py), then the target is assessed and, when the decision lets its
rotation go, the rotation is reserved and queued for a worker, as the timer's plan does; a crash between the two
is picked up by the resume timer (the decision is in the approvals book).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import azure.functions as func

from shared import approvals as approvals_service
from shared.approvals import InvalidDecision, approval_document, list_approvals
from shared.bootstrap import Services, invocation_services
from shared.change_control import ApprovalRequest, ApprovalStatus
from shared.domain import ROTATION_ID, Actor, actor_of
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.api import _body, _fields
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, path_guid
from shared.protocol.context import Outcome

bp = func.Blueprint()  # type: ignore[no-untyped-call]
AUTH = func.AuthLevel.ANONYMOUS  # App Service Authentication signs the caller in; `authorize` checks the role


@bp.route(route="approvals", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def approvals(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/approvals[?status=...]: every customer's approval request, oldest first."""
    allow(req, "GET")
    authorize(req, Role.READ)
    raw = req.params.get("status")
    wanted = None
    if raw is not None:
        if raw not in {s.value for s in ApprovalStatus}:
            raise HttpError(400, "InvalidQuery", "status must be one of "
                            f"{', '.join(s.value for s in ApprovalStatus)}")
        wanted = ApprovalStatus(raw)
    async with invocation_services() as svc:
        docs = await list_approvals(_book(svc), svc.state, wanted)
    return json_response({"approvals": docs})


@bp.route(route="approvals/{tenantId}/{appId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def approval(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/approvals/{tenantId}/{appId} {requestId, action, until?, reason?}: approve, postpone (until a date)
    or reject the customer's pending request (Rotator.Operate); audited with the caller."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    tenant_id, app_id = path_guid(req, "tenantId"), path_guid(req, "appId")
    # The request id is 32 hex digits, which the body's secret check takes for a secret: only the free text is checked.
    body = _fields(_body(req, refuse_secrets=False), {"requestId", "action"}, {"until", "reason"})
    request_id = body["requestId"]
    if not isinstance(request_id, str) or not ROTATION_ID.fullmatch(request_id):
        raise HttpError(400, "InvalidRequestId", "requestId must be the 32 hexadecimal digits of the request")
    actor = actor_of(Actor.MANUAL, who.name)
    async with invocation_services() as svc:
        decided, outcome = await decide_and_reserve(svc, tenant_id, app_id, request_id, str(body["action"]),
                                                    actor=actor, until=body.get("until"),
                                                    reason=body.get("reason"))
    return json_response({"approval": approval_document(decided), "outcome": asdict(outcome)})


def _book(svc: Services) -> Any:
    if svc.approvals is None:
        raise HttpError(500, "ConfigurationError", "the approvals book is not configured")
    return svc.approvals


async def decide_and_reserve(svc: Services, tenant_id: str, app_id: str, request_id: str, action: str, *,
                             actor: str, until: object = None, reason: object = None,
                             via: str = "") -> tuple[ApprovalRequest, Outcome]:
    """The decision and the reservation that follows (shared/approvals.py); a bad decision is a 400."""
    try:
        return await approvals_service.decide_and_reserve(_book(svc), svc.engine, svc.queue, tenant_id, app_id,
                                                          request_id, action, actor=actor, until=until,
                                                          reason=reason, via=via)
    except InvalidDecision as error:
        raise HttpError(400, error.code, error.message) from None
