"""Stage idle: observe the app registration, decide whether it needs a new secret, reserve a rotation id.

One ETag-guarded write both records what was observed and reserves the rotation: the row never says "due"
without a rotation id, and two runners cannot both reserve.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from shared.domain import (
    Application,
    Assessment,
    AssessmentStatus,
    Stage,
    Target,
    assess,
    lifetime_days,
    new_rotation_id,
    renew_before,
)
from shared.errors import AppNotFound, RotationError, Unreachable
from shared.ports import CheckableDestination, Destination, DestinationCheck, Directory
from shared.protocol.context import Advance, EngineConfig, Outcome


def assessment(target: Target, app: Application, now: datetime, config: EngineConfig) -> Assessment:
    """The target's secret lifetime now, by its policy."""
    renew = renew_before(target.policy, config.renew_before_days)
    return assess(app, now, renew, target.state.current_key_id)


def failed_status(error: RotationError) -> AssessmentStatus:
    """The status of a target whose app registration could not be read."""
    return AssessmentStatus.APP_NOT_FOUND if isinstance(error, AppNotFound) else AssessmentStatus.UNREACHABLE


async def observe(run: Advance) -> Assessment:
    """Read the app registration and assess it; record and alert a target that cannot be read (and stop)."""
    now = run.now()
    try:
        run.forget_application()
        app = await run.application()
    except (AppNotFound, Unreachable) as error:
        status = failed_status(error)
        await run.save(
            run.target.with_observed(
                status=status.value, days_left=None, expires=None, checked_at=now,
                error_code=error.code, error_message=error.message,
            )
        )
        await run.event("assess", status.value, error)
        await run.alert(status.value, error.message, error_code=error.code)
        raise run.stop(status.value, error) from error
    found = assessment(run.target, app, now, run.config)
    if found.status is AssessmentStatus.EXPIRED:
        await run.alert("expired", "the Proofpoint sync secret has expired: the sync is failing until rotated")
    return found


def observed(target: Target, found: Assessment, now: datetime) -> Target:
    """The target with this assessment recorded."""
    return target.with_observed(
        status=found.status.value,
        days_left=found.days_left,
        expires=found.current.end if found.current else None,
        checked_at=now,
        error_code="",
        error_message="",
    )


async def consider(run: Advance, force: bool, reserve: bool = True) -> bool:
    """Assess the target; reserve a rotation (stage creating) when it is due or forced. True when reserved."""
    found = await observe(run)
    now = run.now()
    seen = observed(run.target, found, now)
    if not reserve or not (found.status.needs_rotation or force):
        await run.save(seen)
        return False
    await run.save(
        seen.with_state(
            stage=Stage.CREATING,
            stage_since=now,
            rotation_id=new_rotation_id(),
            actor=run.actor.value,
            replaces=(found.current.key_id,) if found.current else (),
            new_key_id="",
            new_version="",
            new_expires=None,
            push_failures={},
        )
    )
    await run.event("reserve", "ok", detail=f"status {found.status.value}")
    return True


async def preview(
    directory: Directory, destinations: Mapping[str, Destination], target: Target, now: datetime,
    config: EngineConfig,
) -> Outcome:
    """A dry run: what a rotation of this target would do now, with a live read-only check of every destination
    that can test its registration (Proofpoint: login, stack, settings); changes nothing."""
    try:
        app = await directory.get_application(target.tenant_id, target.app_id)
    except (AppNotFound, Unreachable) as error:
        return Outcome(target.tenant_id, target.app_id, "would-fail", status=failed_status(error).value,
                       stage=target.state.stage.value, error_code=error.code, message=error.message)
    found = assessment(target, app, now, config)
    checks = await check_destinations(destinations, target)
    problems = [f"{c.destination}: {p}" for c in checks for p in c.problems]
    if problems:
        return Outcome(target.tenant_id, target.app_id, "would-fail", status=found.status.value,
                       stage=target.state.stage.value, days_left=found.days_left,
                       error_code="DestinationCheckFailed", message="; ".join(problems))
    checked = "; ".join(f"{c.destination}: {', '.join(c.findings)}" for c in checks)
    return Outcome(
        target.tenant_id,
        target.app_id,
        "would-rotate",
        status=found.status.value,
        stage=target.state.stage.value,
        days_left=found.days_left,
        message=(
            f"would add a secret valid {lifetime_days(target.policy, config.lifetime_days)} days, store it in "
            f"Key Vault as {target.secret_name}, verify it and push it to "
            f"{len(target.destinations)} destination(s)" + (f". Checked {checked}" if checked else "")
        ),
    )


async def check_destinations(destinations: Mapping[str, Destination], target: Target) -> list[DestinationCheck]:
    """Read-only checks of the target's destinations that can test their registration."""
    checks: list[DestinationCheck] = []
    for config in target.destinations:
        destination = destinations.get(config.kind)
        if isinstance(destination, CheckableDestination):
            checks.append(await destination.check(config))
    return checks
