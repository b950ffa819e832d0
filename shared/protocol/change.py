"""Change control at the reservation of a due rotation (issue 26): shared/change_control.py decides on plain data;
this step reads the approval request it needs, makes one when due, records what the rotation waits for on the row,
and tells people (an approval asked for, a forced rotation, an expiry that `neverForce` lets come).

The approval request is written (an insert, or an ETag-guarded replace) before the row says the rotation waits for
it, and a person's decision is one ETag-guarded write of that request: a crash at any point leaves either no
request (the next pass makes it), or a request whose decision the next pass reads. Nothing is ever lost: the
resume timer looks at targets whose wait has ended or whose request was decided (`waiting_due`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from shared.change_control import (
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    Mode,
    Verdict,
    decide,
    in_window,
    next_window,
)
from shared.conditions import APPROVAL_REQUESTED as REQUESTED
from shared.conditions import CHANGE_BLOCKING as BLOCKING
from shared.conditions import ROTATION_FORCED as FORCED
from shared.domain import Assessment, Stage, Target
from shared.errors import Conflict, RotationError
from shared.ports import Approvals
from shared.protocol.context import Advance

log = logging.getLogger(__name__)

WAITING_FIELDS = {"waiting": "", "waiting_until": None, "approval_id": "", "approval_status": "",
                  "change_blocking": False}


def cleared(seen: Target) -> Target:
    """The target with nothing waiting for change control."""
    return seen.with_observed(**WAITING_FIELDS)


async def gate(run: Advance, found: Assessment, seen: Target) -> tuple[Target, bool, str]:
    """Whether the due rotation `found` may be reserved now: the target with what it waits for recorded, True to
    reserve, and what to add to the reservation's audit record (why change control let it go)."""
    control = run.target.policy.change_control
    if control is None or control.mode is Mode.AUTO:
        await withdraw(run, "the customer's change control is auto")
        return cleared(seen), True, ""
    now = run.now()
    key = found.replaces[0] if found.replaces else ""
    expires = found.current.end if found.current else None
    held = await _request(run) if control.mode is Mode.APPROVAL else None
    mine = held[0] if held is not None and held[0].key_id == key else None
    decision = decide(control, now, expires, mine.approval if mine else None)
    if decision.verdict is Verdict.FORCED:
        # Told before the reservation is written: a crash between the two leaves an alert for a rotation the next
        # pass forces again, never a forced rotation nobody heard of.
        await run.alert(FORCED, f"rotating {decision.why}", mode=control.mode.value,
                        forceOn=_iso(decision.force_on), nextWindow=_iso(decision.next_window.start
                                                                         if decision.next_window else None))
        await withdraw(run, f"forced: {decision.why}", held)
        return cleared(seen), True, f"; change control ({control.mode.value}): forced, {decision.why}"
    if decision.verdict is Verdict.ALLOWED:
        await withdraw(run, decision.why, held)
        return cleared(seen), True, f"; change control ({control.mode.value}): {decision.why}"
    if decision.request == "new":
        mine = await _ask(run, held, key, expires, decision)
    named = run.target.observed.approval_id
    if mine is not None and mine.status is ApprovalStatus.PENDING and mine.request_id != named:
        # Audited when the row first names the request (the request is written first): a crash in between makes
        # the next pass audit it then, so no request goes unaudited (a crash after the record repeats it, at most).
        after = f" after the postponement to {held[0].until.isoformat()}" if held is not None \
            and held[0].request_id != mine.request_id and held[0].status is ApprovalStatus.POSTPONED \
            and held[0].until else ""
        await run.event("approval", "requested", detail=f"request {mine.request_id} for key {key or '(none)'}{after}")
    status = mine.status.value if mine is not None else ""
    waiting = decision.waiting_for if decision.verdict is Verdict.WAITING else ""
    seen = seen.with_observed(waiting=waiting, waiting_until=decision.look_again,
                              approval_id=mine.request_id if mine else "", approval_status=status,
                              change_blocking=decision.blocking)
    if (waiting, status, decision.blocking) != (run.target.observed.waiting, run.target.observed.approval_status,
                                                run.target.observed.change_blocking):
        await run.event("change-control", decision.verdict.value if not waiting else f"waiting-{waiting}",
                        detail=_waiting_detail(decision))
    if decision.blocking:
        await run.alert(BLOCKING, f"the secret expires at {_iso(expires) or 'an unknown time'} and the customer is "
                        f"set to never force: the rotation still waits ({decision.why}); the Proofpoint sync breaks at "
                        "expiry unless someone approves, opens a window or rotates it now", mode=control.mode.value,
                        expires=_iso(expires) or "")
    if mine is not None and mine.status is ApprovalStatus.PENDING:
        links = await _links(run, mine)
        await run.alert(REQUESTED, f"a rotation of the Proofpoint sync secret waits for approval (request "
                        f"{mine.request_id}, the secret expires at {_iso(expires) or 'an unknown time'}"
                        + (f", it goes ahead anyway from {_iso(decision.force_on)}" if decision.force_on
                           and not control.never_force else "")
                        + "): approve, postpone or reject it on the dashboard"
                        + (" or through a link below" if links else ""),
                        requestId=mine.request_id, **{f"{action}Link": url for action, url in links.items()})
    return seen, False, ""


async def _links(run: Advance, request: ApprovalRequest) -> dict[str, str]:
    """The signed links for the alert; none when they cannot be made now (the dashboard decides as well)."""
    if run.ports.links is None:
        return {}
    try:
        return await run.ports.links.links(request)
    except RotationError as error:
        log.warning("approval links not made (%s): the alert points to the dashboard", error.code,
                    extra={"event": "change-control", "target": run.target.key, "error_code": error.code})
        return {}


def _waiting_detail(decision: Decision) -> str:
    extra = ""
    if decision.next_window is not None:
        extra = (f"; next window {decision.next_window.local.isoformat()} {decision.next_window.time_zone} "
                 f"({decision.next_window.start.isoformat()})")
    if decision.force_on is not None:
        extra += f"; force day {decision.force_on.isoformat()}"
    return decision.why + extra


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _approvals(run: Advance) -> Approvals:
    if run.ports.approvals is None:
        raise RotationError("approval mode needs the approvals book, which this process was built without",
                            code="ApprovalsUnavailable")
    return run.ports.approvals


async def _request(run: Advance) -> tuple[ApprovalRequest, str] | None:
    return await _approvals(run).get(run.target.tenant_id, run.target.app_id)


async def _ask(run: Advance, held: tuple[ApprovalRequest, str] | None, key: str, expires: datetime | None,
               decision: Decision) -> ApprovalRequest:
    """A new pending request for `key`: first for this key, or after a postponement ended. Another runner making one
    at the same time wins (ETag): its request is the one."""
    t = run.target
    request = ApprovalRequest(t.tenant_id, t.app_id, uuid.uuid4().hex, key, ApprovalStatus.PENDING, run.now(),
                              t.customer, expires, None if (t.policy.change_control and
                                                             t.policy.change_control.never_force)
                              else decision.force_on)
    try:
        await _approvals(run).put(request, held[1] if held is not None else None)
    except Conflict:
        again = await _request(run)
        if again is None:
            raise
        return again[0]
    return request


async def withdraw(run: Advance, why: str, held: tuple[ApprovalRequest, str] | None = None) -> None:
    """Remove the target's request that no longer applies (the rotation goes ahead without it, or the key it was
    for is gone), audited; an approved request for the key being replaced is kept as the record of who approved."""
    if held is None:
        if not run.target.observed.approval_id or run.ports.approvals is None:
            return  # the row names no request: none was made (a request is written before the row names it)
        held = await _request(run)
        if held is None:
            return
    request, etag = held
    if request.status is ApprovalStatus.APPROVED and why.startswith("approved"):
        return
    try:
        await _approvals(run).remove(request.tenant_id, request.app_id, etag)
    except Conflict:
        return  # decided meanwhile: the next pass reads the decision
    await run.event("approval", "withdrawn", detail=f"request {request.request_id} ({request.status.value}): {why}")


def waiting_due(target: Target, now: datetime, decided: frozenset[str] = frozenset()) -> bool:
    """An idle target whose due rotation waits for change control and should be looked at now: its wait ended (a
    window opened, a postponement ended, the force day came) or a person decided its request (`decided`: request ids
    no longer pending)."""
    o = target.observed
    if target.state.stage is not Stage.IDLE or not (o.waiting or o.approval_status):
        return False
    ended = o.waiting_until is not None and o.waiting_until <= now
    return ended or (bool(o.approval_id) and o.approval_id in decided and o.approval_status == "pending")


async def decided_requests(approvals: Approvals | None, rows: Sequence[Target]) -> frozenset[str]:
    """The ids of requests that rows still show pending but a person has decided (one read of the book, and only
    when some row waits for approval)."""
    if approvals is None or not any(t.observed.approval_status == "pending" for t in rows):
        return frozenset()
    try:
        requests = await approvals.list_requests()
    except RotationError as error:
        # The resume pass goes on: the daily pass assesses every target and reads each request itself.
        log.warning("approvals book unreadable (%s): decided requests wait for the daily pass", error.code,
                    extra={"event": "change-control", "outcome": "unreadable", "error_code": error.code})
        return frozenset()
    return frozenset(r.request_id for r in requests if r.status is not ApprovalStatus.PENDING)


async def bypassed(run: Advance) -> str:
    """An operator's rotation now goes ahead whatever the change control says: an MSP engineer who
    presses "rotate now" expects it to happen. What it bypassed is audited with the reservation, and a request
    waiting for a decision is withdrawn (the key it was for is being replaced)."""
    control = run.target.policy.change_control
    if control is None or control.mode is Mode.AUTO:
        return ""
    now = run.now()
    if control.mode is Mode.WINDOW:
        if in_window(control, now):
            return "; change control (window): inside a maintenance window"
        coming = next_window(control, now)
        where = f", next window {coming.local.isoformat()} {coming.time_zone}" if coming else ""
        await withdraw(run, "rotated by an operator outside the maintenance windows")
        return f"; change control (window): manual rotation OUTSIDE the maintenance windows{where}"
    await withdraw(run, "rotated by an operator without waiting for the approval")
    return "; change control (approval): manual rotation WITHOUT approval"
