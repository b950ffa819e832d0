"""Fan-out on a Storage queue: the timers decide which customers have work and enqueue one message each; the
queue-triggered function advances one customer per message, on as many instances as the platform scales to.

- The rotation timer (`plan_pass`) resumes nothing itself: a target in flight is enqueued as it is; an idle target
  is assessed and, when due or expired, reserved (stage creating, with its rotation id: the same ETag-guarded write
  as in an in-process pass) and enqueued; an idle target whose superseded credential's grace period is over is
  enqueued for retirement. Healthy customers cost one Graph read and no message.
- The resume timer (`plan_pass(only_in_flight=True)`) enqueues the targets in flight, reading nothing else.
- A worker (`work_on`) advances its target through the engine (lease, ETags): a message delivered twice, or two
  messages for one target, make one rotation. A target another runner holds ("busy") is looked at again when that
  lease has run out: the message is re-enqueued with that delay, so a worker killed mid-rotation is finished by
  another one without waiting for the next timer.
- A message that fails `maxDequeueCount` times (host.json) is moved by the host to the poison queue; `poisoned`
  raises an alert and marks the target `needsHuman`, so it shows in status and on the dashboard.

A reservation whose message is lost (the queue unreachable) stays in flight and the resume timer enqueues it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from shared.domain import Actor, Stage, Target, actor_of, retirement_due
from shared.errors import NotFound, RotationError
from shared.ports import Alert, Event, Work, WorkQueue, WorkReason
from shared.protocol.change import decided_requests, waiting_due
from shared.rotation import Engine, Outcome
from shared.work import POISON_QUEUE_NAME

log = logging.getLogger(__name__)

BUSY_MARGIN_SECONDS = 30  # after a held lease runs out, before the target is looked at again
RETIRE = WorkReason.RETIRE  # the reason of a message sent to retire superseded credentials (its target is idle)


@dataclass
class PlanSummary:
    """One planning pass: what was enqueued, why, and what was only looked at."""

    enqueued: Counter[str] = field(default_factory=Counter)
    looked_at: int = 0
    failed: int = 0
    duration_ms: int = 0


async def plan_pass(engine: Engine, queue: WorkQueue, actor: Actor = Actor.TIMER, *,
                    only_in_flight: bool = False) -> PlanSummary:
    """Enqueue every enabled target with work; reserve the due ones first (see the module's docstring)."""
    started = time.monotonic()
    summary = PlanSummary()
    label = actor_of(actor)
    # Each target is assessed from the row the listing returned (with its ETag), not read again (Engine.advance).
    rows = [(t, etag) for t, etag in await engine.state.list_targets() if t.enabled]
    bound = asyncio.Semaphore(engine.config.scan_concurrency)
    now = engine.clock.now()
    decided = await decided_requests(engine.ports.approvals, [t for t, _ in rows]) if only_in_flight else frozenset()

    async def put(target: Target, reason: WorkReason) -> None:
        try:
            await queue.enqueue(Work(target.tenant_id, target.app_id, label, reason))
            summary.enqueued[reason.value] += 1
        except RotationError as error:
            # The reservation (if any) stays in flight: the resume timer enqueues it again.
            summary.failed += 1
            log.error("could not enqueue work", extra={"event": "fanout", "target": target.key,
                                                       "error_code": error.code})

    async def plan(row: tuple[Target, str]) -> None:
        target = row[0]
        async with bound:
            if target.state.stage is not Stage.IDLE:
                await put(target, WorkReason.IN_FLIGHT)
                return
            if only_in_flight and not waiting_due(target, now, decided):
                return  # idle: only a rotation whose change-control wait ended (or was decided) is looked at
            result = await engine.advance(target.tenant_id, target.app_id, actor, reserve_only=True,
                                          listed=row)
            summary.looked_at += 1
            if result.result in ("reserved", "in-flight"):
                await put(target, WorkReason.DUE if result.result == "reserved" else WorkReason.IN_FLIGHT)
            elif result.result == "failed":
                summary.failed += 1
                log.warning("could not assess a target", extra={"event": "fanout", "target": target.key,
                                                                "error_code": result.error_code,
                                                                "error": result.message})
            elif retirement_due(target, engine.clock.now()):
                await put(target, RETIRE)

    await asyncio.gather(*(plan(row) for row in rows))
    await engine.ports.alerter.redeliver()  # what the alert channel refused since: a resolved note, today's alert
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    log.info(
        "resume fan-out finished" if only_in_flight else "rotation fan-out finished",
        extra={"event": "fanout", "kind": "resume" if only_in_flight else "rotation", "actor": label,
               "targets": len(rows), "enqueued": dict(summary.enqueued), "failed": summary.failed,
               "duration_ms": summary.duration_ms},
    )
    return summary


async def work_on(engine: Engine, queue: WorkQueue, work: Work) -> Outcome:
    """Advance the message's target as far as it goes now. Held by another runner: look again once that lease has
    run out (a new message with that delay), so a crashed runner's rotation is finished by a worker.

    A message never starts a rotation, whatever its reason: it advances only what the target's row already decided,
    a rotation reserved (by the timer's plan or an operator's request) or in flight, or, for a retire message, a
    retirement whose grace period is over (removing credentials, reserving nothing). A message whose target is idle
    with nothing due (a duplicate, a late copy, one written by anything else) does nothing."""
    retiring = work.reason == RETIRE
    result = await engine.advance(work.tenant_id, work.app_id, work.actor, only_in_flight=not retiring,
                                  retire_only=retiring)
    if result.result == "busy":
        delay = int(engine.config.lease.total_seconds()) + BUSY_MARGIN_SECONDS
        again = RETIRE if retiring else WorkReason.BUSY_RETRY
        await queue.enqueue(Work(work.tenant_id, work.app_id, work.actor, again), delay_seconds=delay)
    log.info("work done", extra={"event": "work", "target": f"{work.tenant_id}/{work.app_id}",
                                 "reason": WorkReason(work.reason).value, "result": result.result,
                                 "stage": result.stage})
    return result


async def poisoned(engine: Engine, work: Work) -> None:
    """A work message the workers failed on every time (host.json's maxDequeueCount): tell a human, and mark the
    target so status shows it (cleared by its next finished rotation)."""
    reason = WorkReason(work.reason).value
    message = (f"every attempt to work on this customer failed ({reason}) and the message went to the poison "
               f"queue {POISON_QUEUE_NAME}: see the function's logs, fix the cause, then rotate again or wait for "
               f"the next timer")
    try:
        target, etag = await engine.state.get_target(work.tenant_id, work.app_id)
    except NotFound:
        log.error("poison message for an unknown target",
                  extra={"event": "poison", "target": f"{work.tenant_id}/{work.app_id}"})
        return
    await engine.ports.alerter.raise_alert(
        Alert("poison-message", target.tenant_id, target.app_id, message, target.customer,
              {"reason": reason, "queue": POISON_QUEUE_NAME})
    )
    await engine.state.record(Event(target.tenant_id, target.app_id, "queue", "poisoned", work.actor,
                                    target.state.rotation_id, at=engine.clock.now(), error_code="PoisonMessage",
                                    detail=f"work {reason} poisoned"))
    try:
        await engine.state.replace_target(target.with_observed(needs_human=message), etag)
    except RotationError:
        pass  # the row moved on (a later run): the alert and the audit event stand
