"""The timer triggers: the daily rotation fan-out (ROTATION_SCHEDULE) and the short-cadence resume fan-out
(RESUME_SCHEDULE); never on startup. Each only decides which customers have work and enqueues one message per
customer on the rotation work queue (shared/fanout.py); `advance_target` (entrypoints/queue.py) does the work."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.domain import Actor
from shared.fanout import plan_pass

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def rotation_timer(timer: func.TimerRequest) -> None:
    """Assess every enabled target, reserve the due ones, enqueue every target with work (due, in flight,
    retirement due)."""
    async with invocation_services() as svc:
        await plan_pass(svc.engine, svc.work_queue, Actor.TIMER)


@bp.timer_trigger(arg_name="timer", schedule="%RESUME_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def resume_timer(timer: func.TimerRequest) -> None:
    """Enqueue the rotations in flight (creating, pending, verified, pushed); idle targets are not touched."""
    async with invocation_services() as svc:
        await plan_pass(svc.engine, svc.work_queue, Actor.TIMER, only_in_flight=True)
