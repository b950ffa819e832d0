"""The timer triggers: the daily rotation fan-out (ROTATION_SCHEDULE), the short-cadence resume fan-out
(RESUME_SCHEDULE) and the credential inventory (INVENTORY_SCHEDULE); never on startup. The first two only decide
which customers have work and enqueue one message per customer on the rotation work queue (shared/fanout.py);
`advance_target` (entrypoints/queue.py) does the work. The inventory reads every tenant's credentials itself."""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.bulk_onboarding import prune_runs, sweep_sessions
from shared.domain import Actor
from shared.errors import RotationError
from shared.fanout import plan_pass
from shared.inventory_pass import take_inventory
from shared.offboarding import sweep_retention
from shared.warning_pass import take_warnings

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def rotation_timer(timer: func.TimerRequest) -> None:
    """Assess every enabled target, reserve the due ones, enqueue every target with work (due, in flight,
    retirement due)."""
    async with invocation_services() as svc:
        await plan_pass(svc.engine, svc.work_queue, Actor.TIMER)
        try:
            # Offboarded customers whose Key Vault retention (OFFBOARD_RETENTION_DAYS) has passed: once a day is
            # enough, and a failure here must not cost the pass (the next day tries again).
            await sweep_retention(svc.secret_retention, svc.state, svc.engine.clock.now())
        except RotationError as error:
            log.warning("retention sweep failed: %s (%s)", error.code, error.message)
        if svc.partner_sessions is not None:
            try:
                # Partner sessions (refresh tokens) of onboarding runs past their expiry: an abandoned sign-in or
                # a tab closed mid-run leaves none behind for more than a day past it.
                await sweep_sessions(svc.partner_sessions, svc.engine.clock.now())
            except RotationError as error:
                log.warning("partner session sweep failed: %s (%s)", error.code, error.message)
        if svc.onboarding_runs is not None:
            try:
                # Onboarding runs finished more than ONBOARDING_RETENTION_DAYS ago, and losing starts' rows: the run
                # state does not grow with history (the audit trail is elsewhere and kept).
                await prune_runs(svc.onboarding_runs, svc.engine.clock.now(),
                                 timedelta(days=svc.settings.onboarding_retention_days))
            except RotationError as error:
                log.warning("onboarding run prune failed: %s (%s)", error.code, error.message)


@bp.timer_trigger(arg_name="timer", schedule="%RESUME_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def resume_timer(timer: func.TimerRequest) -> None:
    """Enqueue the rotations in flight (creating, pending, verified, pushed); idle targets are not touched."""
    async with invocation_services() as svc:
        await plan_pass(svc.engine, svc.work_queue, Actor.TIMER, only_in_flight=True)


@bp.timer_trigger(arg_name="timer", schedule="%INVENTORY_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def inventory_timer(timer: func.TimerRequest) -> None:
    """The credential inventory: every app and service principal credential of every customer tenant, read-only,
    on its own schedule so the rotation pass's healthy scan does no inventory work (shared/inventory_pass.py); then
    the staged expiry warnings over what it read (shared/warning_pass.py)."""
    async with invocation_services() as svc:
        await take_inventory(svc)
        await take_warnings(svc)
