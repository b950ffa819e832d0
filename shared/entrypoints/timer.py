"""The timer trigger: one rotation pass on the ROTATION_SCHEDULE (no run_on_startup)."""

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
