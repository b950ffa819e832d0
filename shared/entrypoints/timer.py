"""The timer triggers: the daily rotation pass (ROTATION_SCHEDULE) and the short-cadence resume pass
(RESUME_SCHEDULE); never on startup."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import services
from shared.domain import Actor

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def rotation_timer(timer: func.TimerRequest) -> None:
    """Resume rotations in flight, assess every enabled target, rotate what is due, push and retire."""
    async with services() as svc:
        await svc.engine.run_pass(Actor.TIMER)


@bp.timer_trigger(arg_name="timer", schedule="%RESUME_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def resume_timer(timer: func.TimerRequest) -> None:
    """Take rotations in flight (creating, pending, verified, pushed) further; idle targets are not touched."""
    async with services() as svc:
        await svc.engine.resume_pass(Actor.TIMER)
