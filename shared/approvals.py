"""Approvals (change control's approval mode): a person's decision on the request made for a due rotation, and the
approvals as the API lists them. What the HTTP API, the signed links and the command line call.

A decision is one ETag-guarded write of the target's request (pending -> approved / postponed / rejected), audited
with who, when and why; the reservation that follows reads it (right after, through the engine; after a crash, at
the resume timer's next pass: shared/protocol/change.py waiting_due). A decision on a request that is no longer
pending, or on an id that is not the target's request now (a newer request replaced it), is refused (Conflict), so
a stale page or link never decides the wrong rotation.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from shared.change_control import ApprovalRequest, ApprovalStatus
from shared.domain import ACTOR_NAME_MAX, unprintable
from shared.errors import Conflict, NotFound, RotationError
from shared.ports import Approvals, Event, StateStore, Work, WorkQueue, WorkReason
from shared.rotation import Engine, Outcome

log = logging.getLogger(__name__)

ACTIONS = {"approve": ApprovalStatus.APPROVED, "postpone": ApprovalStatus.POSTPONED,
           "reject": ApprovalStatus.REJECTED}
MAX_REASON = 500
MAX_POSTPONE = timedelta(days=365)


class InvalidDecision(ValueError):
    """A decision that breaks a rule (a postpone without a future date, a reason too long); nothing was written."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def approval_document(r: ApprovalRequest) -> dict[str, Any]:
    """One approval as the API shows it (never a secret)."""
    return {
        "tenantId": r.tenant_id, "appId": r.app_id, "customer": r.customer, "requestId": r.request_id,
        "status": r.status.value, "requestedAt": _iso(r.requested_at), "expires": _iso(r.expires),
        "forceOn": _iso(r.force_on), "decidedBy": r.decided_by or None, "decidedAt": _iso(r.decided_at),
        "until": _iso(r.until), "reason": r.reason or None,
    }


async def list_approvals(approvals: Approvals, state: StateStore,
                         status: ApprovalStatus | None = None) -> list[dict[str, Any]]:
    """Every registered target's request (only those with `status`, when given), the oldest request first. A request
    whose target was removed from the registry since is not listed (nothing rotates it any more)."""
    registered = {(t.tenant_id, t.app_id) for t, _ in await state.list_targets()}
    found = [r for r in await approvals.list_requests()
             if (status is None or r.status is status) and (r.tenant_id, r.app_id) in registered]
    found.sort(key=lambda r: (r.requested_at, r.customer.lower(), r.tenant_id, r.app_id))
    return [approval_document(r) for r in found]


def clean_reason(reason: object) -> str:
    """A decision's reason: one line of text, at most MAX_REASON characters (InvalidDecision otherwise)."""
    if reason is None:
        return ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidDecision("InvalidReason", f"reason must be text of at most {MAX_REASON} characters")
    if any(unprintable(c) for c in reason):
        raise InvalidDecision("InvalidReason", "reason must be one line of text (no control characters)")
    from shared.destinations.options import looks_like_secret

    if any(looks_like_secret(word) for word in [reason, *reason.split()]):
        # It would be stored, audited and shown: never a secret value (the message does not repeat it).
        raise InvalidDecision("InvalidReason", "reason looks like it holds a secret value; leave it out")
    return reason.strip()


def parse_until(raw: object, now: datetime) -> datetime:
    """A postponement's end: an ISO 8601 date ("2026-12-20": its start in UTC) or date-time with an offset, in the
    future and at most a year ahead (InvalidDecision otherwise)."""
    if not isinstance(raw, str) or not raw or len(raw) > 40:
        raise InvalidDecision("InvalidUntil", "postpone needs until: a future date (2026-12-20) or date-time with "
                              "an offset (2026-12-20T08:00:00+01:00)")
    try:
        moment = datetime.fromisoformat(raw if "T" in raw else f"{raw}T00:00:00+00:00")
    except ValueError:
        raise InvalidDecision("InvalidUntil", "until is not an ISO 8601 date or date-time") from None
    if moment.tzinfo is None:
        raise InvalidDecision("InvalidUntil", "until needs an offset (Z or +01:00): a time without one is ambiguous")
    if moment <= now:
        raise InvalidDecision("InvalidUntil", f"until must be in the future (it is {now.isoformat()} now)")
    if moment - now > MAX_POSTPONE:
        raise InvalidDecision("InvalidUntil", "until must be within a year")
    return moment


async def decide_request(
    approvals: Approvals, state: StateStore, tenant_id: str, app_id: str, request_id: str, action: str, *,
    actor: str, now: datetime, until: object = None, reason: object = None, via: str = "",
) -> ApprovalRequest:
    """Record a person's decision on the target's pending request `request_id`; the request as decided.

    NotFound when the target has no request; Conflict StaleRequest (another request is the target's now) or
    NotPending (decided already: by whom and how is said); InvalidDecision for a bad action, until or reason."""
    if action not in ACTIONS:
        raise InvalidDecision("InvalidAction", f"action must be one of {', '.join(ACTIONS)}")
    text = clean_reason(reason)
    moment = parse_until(until, now) if action == "postpone" else None
    if action != "postpone" and until is not None:
        raise InvalidDecision("InvalidUntil", "until goes with postpone only")
    if len(actor) > ACTOR_NAME_MAX + 16:
        raise InvalidDecision("InvalidActor", "the actor's name is too long")
    held = await approvals.get(tenant_id, app_id)
    if held is None:
        raise NotFound(f"{tenant_id}/{app_id} has no approval request", code="ApprovalNotFound")
    await state.get_target(tenant_id, app_id)  # NotFound (TargetNotFound) when it was removed from the registry
    request, etag = held
    if request.request_id != request_id.lower():
        raise Conflict(f"request {request_id} is not the current request of {tenant_id}/{app_id} (a newer one, "
                       f"{request.request_id}, replaced it)", code="StaleRequest")
    if request.status is not ApprovalStatus.PENDING:
        by = f" by {request.decided_by}" if request.decided_by else ""
        raise Conflict(f"request {request_id} is {request.status.value}{by}, no longer pending", code="NotPending")
    decided = replace(request, status=ACTIONS[action], decided_by=actor, decided_at=now, until=moment, reason=text)
    try:
        await approvals.put(decided, etag)  # ETag-guarded: of two decisions at once, one wins, the other is a 409
    except Conflict as error:
        raise Conflict(f"request {request_id} was decided by someone else meanwhile; reload it",
                       code="NotPending") from error
    detail = f"request {request_id} {decided.status.value}"
    if moment is not None:
        detail += f" until {moment.isoformat()}"
    if text:
        detail += f": {text}"
    if via:
        detail += f" ({via})"
    await state.record(Event(tenant_id, app_id, "approval", decided.status.value, actor, at=now, detail=detail))
    return decided


async def decide_and_reserve(
    approvals: Approvals, engine: Engine, queue: WorkQueue | None, tenant_id: str, app_id: str, request_id: str,
    action: str, *, actor: str, until: object = None, reason: object = None, via: str = "",
) -> tuple[ApprovalRequest, Outcome]:
    """Record the decision, then assess the target at once: an approved rotation is reserved and queued for a worker
    (as the timer's plan does); a postponed or rejected one records that it waits, and the alert asking for a
    decision is resolved. A crash between the two is taken up by the resume timer (the decision is in the book)."""
    decided = await decide_request(approvals, engine.state, tenant_id, app_id, request_id, action, actor=actor,
                                   now=engine.clock.now(), until=until, reason=reason, via=via)
    outcome = await engine.advance(tenant_id, app_id, actor, reserve_only=True)
    if outcome.result == "reserved" and queue is not None:
        try:
            await queue.enqueue(Work(tenant_id, app_id, actor, WorkReason.DUE))
        except RotationError as error:
            # The rotation is reserved (in flight): the resume timer enqueues it again, so it is never lost.
            log.warning("approved rotation reserved but not queued (%s): the resume timer takes it", error.code)
    return decided, outcome
