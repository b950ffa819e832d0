"""Stage idle: observe the app registration, decide whether it needs a new secret, reserve a rotation id.

One ETag-guarded write both records what was observed and reserves the rotation: the row never says "due"
without a rotation id, and two runners cannot both reserve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta

from shared.conditions import DRIFT_SUFFIX
from shared.domain import (
    Application,
    Assessment,
    AssessmentStatus,
    Credential,
    DestinationConfig,
    Stage,
    Target,
    assess,
    lifetime_days,
    new_rotation_id,
    renew_before,
)
from shared.drift import (
    DRIFT_UNREADABLE,
    DriftFinding,
    drift_check_due,
    drift_message,
    drift_unreadable,
    find_drift,
)
from shared.errors import AppNotFound, NotOwner, RotationError, Unreachable
from shared.ports import CheckableDestination, Destination, DestinationCheck, Directory, Ownership, UsageReporter
from shared.protocol import change
from shared.protocol.context import Advance, EngineConfig, Outcome
from shared.tenant_rules import foreign_details, foreign_message, not_owner_message, owner_details

SIGN_IN_LOG_KEPT = timedelta(days=30)  # Entra keeps sign-ins 30 days (P1/P2): no read reaches further back


def assessment(target: Target, app: Application, now: datetime, config: EngineConfig) -> Assessment:
    """The target's secret lifetime now, by its policy."""
    renew = renew_before(target.policy, config.renew_before_days)
    return assess(app, now, renew, target.state.current_key_id)


def failed_status(error: RotationError) -> AssessmentStatus:
    """The status of a target whose app registration could not be read."""
    return AssessmentStatus.APP_NOT_FOUND if isinstance(error, AppNotFound) else AssessmentStatus.UNREACHABLE


async def app_and_ownership(
    reading: Awaitable[Application], directory: Directory, target: Target
) -> tuple[Application, Ownership]:
    """The app registration (`reading` it) and who owns it, read side by side: one round trip, since both address
    the app by its appId. When both fail, the app read's error is the one raised."""
    app, ownership = await asyncio.gather(
        reading, directory.ownership(target.tenant_id, target.app_id), return_exceptions=True
    )
    if isinstance(app, BaseException):
        raise app
    if isinstance(ownership, BaseException):
        raise ownership
    return app, ownership


async def observe(run: Advance) -> tuple[Assessment, Target]:
    """Read the app registration and assess it; record and alert a target that cannot be read, or that the rotator
    may read but not change (Application.ReadWrite.OwnedBy reads every app, writes only owned ones), and stop.
    Returns the assessment and the target with it recorded (and, when due, what its destinations report)."""
    now = run.now()
    try:
        run.forget_application()
        app, ownership = await app_and_ownership(run.application(), run.ports.directory, run.target)
    except (AppNotFound, Unreachable) as error:
        await run.refused("assess", failed_status(error), error)
    found = assessment(run.target, app, now, run.config)
    if found.status is AssessmentStatus.EXPIRED:
        await run.alert("expired", "the Proofpoint sync secret has expired: the sync is failing until rotated")
    if not ownership.owned:
        # Found before any write (a rotation would only fail on addPassword's 403); the app was read, so the
        # secret's lifetime is recorded too: it says how soon an admin must add the owner.
        denied = NotOwner(not_owner_message(app, ownership.principal), code="NotOwner")
        await run.refused("assess", AssessmentStatus.NOT_OWNER, denied, seen=observed(run.target, found, now),
                          details=owner_details(ownership.principal))
    found, seen = await drift_checked(run, app, found, now)
    if found.foreign is not None:
        await run.alert("foreign-credential", foreign_message(found.foreign), **foreign_details(found.foreign))
    return found, seen


async def drift_checked(
    run: Advance, app: Application, found: Assessment, now: datetime
) -> tuple[Assessment, Target]:
    """When due (`drift_check_due`, or a foreign credential not yet seen in use), read what each destination that
    reports it says of the app and secret it uses: the credential it demonstrably uses decides which foreign
    credential is adopted (none when it uses the rotator's key), and what differs is drift, recorded and alerted.
    A healthy target is read every 30 days (DRIFT_CHECK_DAYS), one with drift daily, one whose replaced key waits
    for retirement at every pass; a target due, expired or missing is about to be rotated (the push reads the
    settings anyway)."""
    seen = observed(run.target, found, now)
    t, last = run.target, run.target.observed.drift_checked_at
    if found.status.needs_rotation or not t.destinations:
        return found, seen
    # A newer credential someone else made, not yet seen in use: looked at daily while it is new (the sign-in log's
    # 30 days), then on the regular schedule (a destination that never reports an expiry cannot confirm it).
    foreign = found.foreign
    unconfirmed = foreign is not None and foreign.key_id not in t.observed.uses.values() \
        and (last is None or now - last >= timedelta(days=1)) \
        and (foreign.start is None or now - foreign.start <= SIGN_IN_LOG_KEPT)
    # While drift holds, looked at daily: a human who fixed Proofpoint sees it clear the next day.
    drifting = bool(t.observed.drift) and (last is None or now - last >= timedelta(days=1))
    # While a replaced key waits for retirement, at every pass: the key Proofpoint still uses must never be removed
    # (finish.retire keeps what `uses` names), and Proofpoint's sync decides when it stops using it.
    retiring = bool(t.state.superseded)
    scheduled = drift_check_due(t, now)
    # While the last checks could not read the settings, at every pass until one does (the condition then clears).
    retrying = t.observed.drift_unreadable_since is not None
    if not (unconfirmed or drifting or retiring or scheduled or retrying):
        return found, seen
    # Which destinations report their use, asked only once a check is due: a runtime-checkable Protocol's isinstance
    # costs more than the whole decision above, on every healthy target of every pass.
    reporters: list[tuple[DestinationConfig, UsageReporter]] = []
    for config in t.destinations:
        destination = run.ports.destinations.get(config.kind)
        if isinstance(destination, UsageReporter):
            reporters.append((config, destination))
    if not reporters:
        return found, seen
    started = time.monotonic()
    findings: list[DriftFinding] = []
    for reporting, reporter in reporters:
        try:
            report = await reporter.reported_use(reporting)
        except RotationError as error:
            # Read again at the next pass (the check stays due); what was known stays as it was. Failing for two
            # days is told (each such pass: the alert book tells it once a day), before the row records it.
            await run.event("drift-check", "unreadable", error, started=started)
            since = t.observed.drift_unreadable_since or now
            if drift_unreadable(since, now):
                await run.alert(DRIFT_UNREADABLE, f"{reporting.name}: the {reporting.kind} settings of this customer "
                                f"could not be read at any drift check since {since.isoformat()} ({error.code}): "
                                "drift between it and Entra ID cannot be checked", error_code=error.code)
            return found, seen.with_observed(drift_unreadable_since=since)
        run.reported[reporting.name] = report  # the retire step's sync check reads its last sync from it
        findings.append(find_drift(report, t, app, now))
    uses = {f.destination: f.uses.key_id for f in findings if f.uses is not None}
    used = set(uses.values())
    if len(used) == 1:
        # The credential the destinations demonstrably use decides the foreign one (never a guess when they say).
        renew = renew_before(t.policy, run.config.renew_before_days)
        found = assess(app, now, renew, t.state.current_key_id, used_key_id=next(iter(used)))
        if found.foreign is not None and not await signed_in(run, app, found.foreign, now, started):
            # Where Entra's sign-in log can say, a key Proofpoint names but that never signed in is not yet shown in
            # use: not adopted; it is looked at again the next day (not in `uses`), and adopted once it signs in.
            found = assess(app, now, renew, t.state.current_key_id, used_key_id=t.state.current_key_id)
            uses = {name: key for name, key in uses.items() if key not in used}
        seen = observed(t, found, now)
    drift = {f.destination: "; ".join(f.problems) for f in findings if f.problems}
    # A check out of schedule that changed nothing leaves the row as it was: a target whose replaced key waits is read
    # at every pass, and is not written for it.
    kept = tuple(sorted({k for f in findings if f.problems for k in f.keeps}))
    changed = drift != t.observed.drift or uses != t.observed.uses or kept != t.observed.drift_kept
    seen = seen.with_observed(drift=drift, drift_kept=kept, uses=uses,
                              drift_checked_at=now if scheduled or changed else last, drift_unreadable_since=None)
    if drift != t.observed.drift:
        await run.event("drift-check", "drift" if drift else "cleared", started=started,
                        detail=drift_message(drift) if drift else "the destinations use this app and its key")
    kinds = {c.name: c.kind for c in t.destinations}
    for name, text in sorted(drift.items()):
        await run.alert(f"{kinds[name]}{DRIFT_SUFFIX}", f"{name}: {text}", destination=name,
                        error_code="ProofpointDrift" if kinds[name] == "proofpoint" else "DestinationDrift")
    return found, seen


async def signed_in(run: Advance, app: Application, candidate: Credential, now: datetime, started: float) -> bool:
    """Whether a newer credential someone else made, which a destination names, signed in since it was made, where
    Entra's sign-in log can say (True when it cannot: no log, a tenant that refuses the read, a failed read; the
    destination's word is then the proof, as before). Read only for such a credential: rare, never on a healthy scan.
    """
    log = run.ports.sign_ins
    if log is None:
        return True
    since = max(candidate.start or now - SIGN_IN_LOG_KEPT, now - SIGN_IN_LOG_KEPT)
    try:
        evidence = await log.credential_sign_ins(run.target.tenant_id, app.app_id, since)
    except RotationError as error:
        await run.event("drift-check", "sign-ins unreadable", error, started=started)
        return True
    if not evidence.available:
        return True
    seen = evidence.credentials.get(candidate.key_id)
    if seen is None or seen.last_sign_in is None:
        await run.event("drift-check", "not-adopted", started=started,
                        detail=f"key {candidate.key_id} is named by the destination's expiry but has not signed in "
                               f"since {since.isoformat()} (sign-in log read at {evidence.read_at.isoformat()})")
        return False
    where = f" from {seen.last_ip_address}" if seen.last_ip_address else ""
    await run.event("drift-check", "adopted", started=started,
                    detail=f"key {candidate.key_id} is named by the destination's expiry and signed in at "
                           f"{seen.last_sign_in.isoformat()}{where}")
    return True


def observed(target: Target, found: Assessment, now: datetime) -> Target:
    """The target with this assessment recorded (a foreign credential as its error, for the status to show)."""
    return target.with_observed(
        status=found.status.value,
        days_left=found.days_left,
        expires=found.current.end if found.current else None,
        checked_at=now,
        error_code="ForeignCredential" if found.foreign else "",
        error_message=foreign_message(found.foreign) if found.foreign else "",
    )


async def consider(run: Advance, force: bool, reserve: bool = True) -> bool:
    """Assess the target; reserve a rotation (stage creating) when it is due or forced. True when reserved."""
    found, seen = await observe(run)
    now = run.now()
    if not found.status.needs_rotation and not force:
        if run.target.observed.waiting or run.target.observed.approval_id:
            # Nothing is due any more (rotated by someone else, a policy changed): nothing waits, no request stands.
            await change.withdraw(run, f"no rotation is due (status {found.status.value})")
            seen = change.cleared(seen)
        await run.record_observation(seen)
        return False
    if not reserve:
        await run.record_observation(seen)
        return False
    note = ""
    if force:
        note = await change.bypassed(run)
        seen = change.cleared(seen)
    else:
        seen, go, note = await change.gate(run, found, seen)
        if not go:
            await run.record_observation(seen)
            return False
    # The reservation and the lease are one ETag-guarded write: an idle target was assessed without the lease.
    await run.save(
        seen.with_state(
            **run.lease(),
            stage=Stage.CREATING,
            stage_since=now,
            rotation_id=new_rotation_id(),
            actor=run.actor,
            replaces=found.replaces,  # never a foreign credential: the rotator does not fight it
            new_key_id="",
            new_version="",
            new_expires=None,
            push_failures={},
            held={},
            baselines={},
        )
    )
    await run.event("reserve", "ok", detail=f"status {found.status.value}{note}")
    return True


async def preview(
    directory: Directory, destinations: Mapping[str, Destination], target: Target, now: datetime,
    config: EngineConfig,
) -> Outcome:
    """A dry run: what a rotation of this target would do now, what the tenant would refuse, and a live read-only
    check of every destination that can test its registration (Proofpoint: login, stack, settings); changes
    nothing."""

    def would_fail(status: AssessmentStatus, code: str, message: str, days_left: int | None = None) -> Outcome:
        return Outcome(target.tenant_id, target.app_id, "would-fail", status=status.value,
                       stage=target.state.stage.value, days_left=days_left, error_code=code, message=message)

    try:
        app, ownership = await app_and_ownership(
            directory.get_application(target.tenant_id, target.app_id), directory, target)
    except (AppNotFound, Unreachable) as error:
        return would_fail(failed_status(error), error.code, error.message)
    found = assessment(target, app, now, config)
    if not ownership.owned:
        return would_fail(AssessmentStatus.NOT_OWNER, "NotOwner", not_owner_message(app, ownership.principal),
                          found.days_left)
    if target.observed.status == AssessmentStatus.POLICY_BLOCKED.value:
        # The policy itself is not readable with the rotator's permission; the last refusal is what is known.
        return would_fail(AssessmentStatus.POLICY_BLOCKED, target.observed.error_code,
                          f"the last attempt was refused: {target.observed.error_message}", found.days_left)
    lifetime = lifetime_days(target.policy, config.lifetime_days)
    cap = target.observed.lifetime_cap_days
    valid = f"{lifetime} days" + (
        f" (the tenant's app-management policy refused that last time and accepted {cap} days: expect {cap} days)"
        if cap is not None and cap < lifetime else ""
    )
    note = f"; {foreign_message(found.foreign)}" if found.foreign else ""
    if target.observed.drift:
        # What the last drift check found: a push sets this app and the new key in Proofpoint, which resolves it.
        note += f"; drift found at {drift_message(target.observed.drift)} (a push sets this app and the new key)"
    checks = await check_destinations(destinations, target)
    problems = [f"{c.destination}: {p}" for c in checks for p in c.problems]
    if problems:
        return would_fail(found.status, "DestinationCheckFailed", "; ".join(problems),
                          found.days_left)
    checked = "; ".join(f"{c.destination}: {', '.join(c.findings)}" for c in checks)
    return Outcome(
        target.tenant_id,
        target.app_id,
        "would-rotate",
        status=found.status.value,
        stage=target.state.stage.value,
        days_left=found.days_left,
        message=(
            f"would add a secret valid {valid}, store it in Key Vault as {target.secret_name}, verify it and push it "
            f"to {len(target.destinations)} destination(s){note}" + (f". Checked {checked}" if checked else "")
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
