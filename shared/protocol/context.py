"""One advance of one target: its latest row and ETag, the lease, audit events, alerts and the outcome.

Every step of the protocol takes an `Advance`; it never reaches the engine. Writes go through `save` (ETag-guarded):
a concurrent writer makes it raise Conflict, never a lost update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NoReturn

from shared.conditions import holding, may_hold_any
from shared.domain import Actor, Application, AssessmentStatus, Stage, Target, actor_of
from shared.errors import RotationError
from shared.ports import (
    Alert,
    Alerter,
    ApprovalLinks,
    Approvals,
    Clock,
    Destination,
    Directory,
    Event,
    ReportedUse,
    SecretStore,
    SignInLog,
    StateStore,
    TokenProbe,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """The policy knobs of the engine (from Settings; tests set them directly)."""

    renew_before_days: int = 30
    lifetime_days: int = 180
    retire_grace: timedelta = timedelta(hours=24)
    verify_timeout: timedelta = timedelta(seconds=120)
    push_max_attempts: int = 5
    scan_concurrency: int = 32
    manual_cooldown: timedelta = timedelta(minutes=60)
    stuck_after: timedelta = timedelta(hours=24)
    retire_other_expired: bool = False
    lease: timedelta = timedelta(minutes=5)
    store_attempts: int = 3
    create_attempts: int = 3
    sync_window: timedelta = timedelta(hours=24)  # a destination's own sync must prove the new secret within this
    # A superseded key goes only once it has not signed in for this long (where sign-in evidence is available).
    retire_quiet: timedelta = timedelta(hours=26)
    # A side effect (addPassword, a Key Vault write, removePassword, a push, a tag move) starts only with more than
    # this left of the lease, so it is answered before the lease runs out (every write request is cut at 30 s).
    lease_margin: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Ports:
    """What the protocol's steps talk to."""

    state: StateStore
    directory: Directory
    secrets: SecretStore
    probe: TokenProbe
    destinations: Mapping[str, Destination]
    alerter: Alerter
    clock: Clock
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    sign_ins: SignInLog | None = None  # Entra's sign-in records; None: retirement relies on the destinations alone
    approvals: Approvals | None = None  # change control's approvals book; None: approval mode cannot be served
    links: ApprovalLinks | None = None  # signed links to decide a request from its alert; None: none in alerts


@dataclass(frozen=True)
class Outcome:
    """How one advance of one target ended (what an operator or the summary sees; never a secret)."""

    tenant_id: str
    app_id: str
    result: str  # healthy, rotated, busy, failed, skipped, would-rotate, ...
    status: str = ""
    stage: str = ""
    rotation_id: str = ""
    days_left: int | None = None
    error_code: str = ""
    message: str = ""


def outcome(target: Target, result: str, **extra: str) -> Outcome:
    """The outcome of an advance that ended with the target in this state."""
    return Outcome(
        target.tenant_id,
        target.app_id,
        result,
        status=target.observed.status,
        stage=target.state.stage.value,
        rotation_id=target.state.rotation_id,
        days_left=target.observed.days_left,
        **extra,
    )


def leased_by_other(target: Target, owner: str, now: datetime) -> bool:
    """Another runner holds this target's lease and it has not run out."""
    s = target.state
    return bool(s.lease_owner) and s.lease_owner != owner and s.lease_until is not None and s.lease_until > now


class AuditUnwritten(RotationError):
    """A step's audit record could not be written: the advance stops (logged whole and alerted first)."""


class Stop(Exception):
    """Ends one advance early with an outcome (a step that cannot progress now)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.result)
        self.outcome = outcome


class Advance:
    """One advance of one target: holds its latest row and ETag; what every step reads and writes through."""

    def __init__(
        self, ports: Ports, config: EngineConfig, owner: str, target: Target, etag: str, actor: Actor | str
    ) -> None:
        self.ports = ports
        self.config = config
        self.owner = owner
        self.target = target
        self.etag = etag
        self.actor = actor_of(actor)  # "timer", "event", "manual:alice@msp.example": on every audit event
        self._app: Application | None = None
        # What each destination reported of its use in this advance's drift check (by destination name): the retire
        # step's sync check reads the last sync from it rather than asking for the same settings again.
        self.reported: dict[str, ReportedUse] = {}
        # True from addPassword's answer until its value is in Key Vault: the one window where stopping would leave
        # a live credential whose value nobody holds, so a failed audit write there is told but does not stop.
        self.value_only_in_memory = False
        self.alerted = False  # this advance raised an alert: settle it even if the row shows nothing at either end
        self.stale = False  # another runner wrote the row since: its row, not ours, says what holds

    def now(self) -> datetime:
        return self.ports.clock.now()

    # ---------------------------------------------------------------- the row

    async def save(self, target: Target) -> None:
        """Write the row if nobody else did since we read it (Conflict otherwise). A row this advance holds the
        lease on is written with the lease renewed, so a rotation longer than the lease stays leased while each of
        its steps is shorter than it."""
        if target.state.lease_owner == self.owner and target.state.lease_until is not None:
            target = target.with_state(lease_until=self.now() + self.config.lease)
        self.etag = await self.ports.state.replace_target(target, self.etag)
        self.target = target

    async def move(self, stage: Stage, **changes: object) -> None:
        await self.save(self.target.with_state(stage=stage, stage_since=self.now(), **changes))

    async def take_lease(self) -> None:
        """Claim the target for this advance (Conflict when another runner wrote the row first)."""
        await self.save(self.target.with_state(**self.lease()))

    def lease(self) -> dict[str, object]:
        """The row's lease fields for this advance (to write with the step that needs it)."""
        return {"lease_owner": self.owner, "lease_until": self.now() + self.config.lease}

    async def hold_lease(self) -> None:
        """Take the lease unless this advance holds it: an idle target is assessed without it, and leased only when
        there is work to do (ETag-guarded: Conflict when another runner changed the row since it was read)."""
        s = self.target.state
        if s.lease_owner != self.owner or s.lease_until is None or s.lease_until <= self.now():
            await self.take_lease()

    def lease_held(self) -> bool:
        """This advance holds the lease with more than the margin left (no other runner can have taken over)."""
        s = self.target.state
        return s.lease_owner == self.owner and s.lease_until is not None \
            and s.lease_until - self.now() > self.config.lease_margin

    async def keep_lease(self) -> None:
        """Before a side effect: a runner whose lease has (nearly) passed renews it by an ETag-guarded write, which
        raises Conflict when another runner wrote the row since; free while the lease has more than the margin left
        (every write of the row renews it)."""
        if not self.lease_held():
            await self.take_lease()

    async def record_observation(self, seen: Target) -> None:
        """Write what an assessment found, only when it differs from the row by more than the time it was checked:
        a daily pass over healthy targets writes a row when its days left moved, never three times."""
        # One copy, not two: the observation has 22 fields, and this runs for every target of every pass.
        if (seen.state is not self.target.state and seen.state != self.target.state) \
                or replace(seen.observed, checked_at=self.target.observed.checked_at) != self.target.observed:
            await self.save(seen)

    async def release(self) -> None:
        if self.target.state.lease_owner != self.owner:
            return
        try:
            await self.save(self.target.with_state(lease_owner="", lease_until=None))
        except RotationError:
            log.warning("could not release the lease", extra={"event": "lease", "target": self.target.key})

    # ---------------------------------------------------------------- the directory

    async def application(self) -> Application:
        """The app registration, read once per advance (until `forget_application`)."""
        if self._app is None:
            self._app = await self.ports.directory.get_application(self.target.tenant_id, self.target.app_id)
        return self._app

    def forget_application(self) -> None:
        """Read the app again at the next `application()`, and the destinations too: what was read before (a push
        since, a new assessment) no longer holds."""
        self._app = None
        self.reported = {}

    # ---------------------------------------------------------------- what it tells

    async def event(
        self, step: str, outcome: str, error: RotationError | None = None, *, started: float | None = None,
        detail: str = "", rotation_id: str = "",
    ) -> None:
        """One audit record and one structured log line for a protocol step (never a secret)."""
        duration = int((time.monotonic() - started) * 1000) if started is not None else 0
        record = Event(
            tenant_id=self.target.tenant_id,
            app_id=self.target.app_id,
            step=step,
            outcome=outcome,
            actor=self.actor,
            rotation_id=rotation_id or self.target.state.rotation_id,
            duration_ms=duration,
            error_code=error.code if error else "",
            detail=(error.message if error else detail)[:1000],
            at=self.now(),
        )
        level = logging.WARNING if error else logging.INFO
        log.log(
            level,
            "%s %s: %s",
            step,
            outcome,
            self.target.key,
            extra={
                "event": "step",
                "target": self.target.key,
                "tenant_id": self.target.tenant_id,
                "app_id": self.target.app_id,
                "rotation_id": record.rotation_id,
                "step": step,
                "outcome": outcome,
                "actor": record.actor,
                "duration_ms": duration,
                "error_code": record.error_code,
            },
        )
        try:
            await self.ports.state.record(record)
        except RotationError as error:
            # The audit trail must not silently lose a step: the event goes to the log whole (nothing in it is
            # secret), a human is told, and this advance stops here, a point every step survives (a crash could
            # have struck here too); the row says where the rotation stands and the next run takes it on.
            log.error("audit record not written: %s %s of %s", step, outcome, self.target.key, extra={
                "event": "audit-unwritten", "target": self.target.key, "tenant_id": record.tenant_id,
                "app_id": record.app_id, "rotation_id": record.rotation_id, "step": step, "outcome": outcome,
                "actor": record.actor, "at": record.at.isoformat() if record.at else "",
                "duration_ms": duration, "error_code": record.error_code, "detail": record.detail,
                "audit_error_code": error.code,
            })
            await self.alert("audit-unwritten", f"the audit record of step {step} ({outcome}) could not be written "
                             f"({error.code}); the function's log holds it; the rotation stops at its next step that "
                             "can stop safely and goes on at the next run", step=step, error_code=error.code)
            if self.value_only_in_memory:
                return  # the store comes first; its own audit record stops the advance if the store is still down
            raise AuditUnwritten(f"the audit record of step {step} could not be written ({error.code})",
                                 code="AuditWriteFailed") from error

    async def alert(self, condition: str, message: str, **details: str) -> None:
        self.alerted = True
        await self.ports.alerter.raise_alert(
            Alert(condition, self.target.tenant_id, self.target.app_id, message, self.target.customer, details)
        )

    async def settle_alerts(self, started: Target) -> None:
        """After an advance: resolve the target's open alerts its row no longer shows. A row that neither started nor
        ended with a possible condition, and raised none (a healthy idle target), costs no look into the alert book
        (an expired secret rotated in one advance opens and clears its condition in it: that is settled)."""
        now = self.now()
        if self.stale:
            return  # resolving by an outdated row could close what the other runner just raised
        # The conditions of the row it ended with are derived once (a daily pass does this for every customer); the
        # row it started with is looked at only when the advance wrote another one.
        held = holding(self.target, now, self.config.stuck_after)
        if not (self.alerted or held or self.target.state.stage is not Stage.IDLE
                or (started is not self.target and may_hold_any(started, now, self.config.stuck_after))):
            return
        await self.ports.alerter.settle(self.target.tenant_id, self.target.app_id, held)

    def outcome(self, result: str, **extra: str) -> Outcome:
        return outcome(self.target, result, **extra)

    def stop(self, result: str, error: RotationError | None = None, message: str = "") -> Stop:
        """The exception that ends this advance with `result` (raise it)."""
        return Stop(
            self.outcome(result, error_code=error.code if error else "", message=error.message if error else message)
        )

    async def abandon(self, step: str, error: RotationError) -> NoReturn:
        """End this rotation without a new secret (the old one stays untouched), tell a human, stop."""
        await self.event("abandon", "failed", error)  # while the row still names the rotation
        await self.move(Stage.IDLE, rotation_id="", new_key_id="", new_version="", new_expires=None, replaces=())
        await self.save(self.target.with_observed(last_outcome=f"failed: {error.code}", error_code=error.code,
                                                  error_message=error.message))
        await self.alert("rotation-failed", f"{step} failed: {error.message}", error_code=error.code)
        raise self.stop("failed", error)

    async def refused(
        self, step: str, status: AssessmentStatus, error: RotationError, *, seen: Target | None = None,
        details: dict[str, str] | None = None,
    ) -> NoReturn:
        """The tenant refuses the rotator (no consent, no owner, a policy): back to idle with nothing in flight,
        record the status, tell a human, stop. Nothing was created, so nothing is left to clean up. `seen` is the
        target with what could still be observed (its secret's lifetime when the app was read)."""
        now = self.now()
        target = seen or self.target
        rotation_id = target.state.rotation_id  # the event names the rotation this refusal ended
        if target.state.stage is not Stage.IDLE:
            target = target.with_state(stage=Stage.IDLE, stage_since=now, rotation_id="", new_key_id="",
                                       new_version="", new_expires=None, replaces=())
            target = target.with_observed(last_outcome=f"failed: {error.code}")
        unread = status in (AssessmentStatus.APP_NOT_FOUND, AssessmentStatus.UNREACHABLE)
        await self.save(target.with_observed(
            status=status.value, checked_at=now, error_code=error.code, error_message=error.message,
            **({"days_left": None, "expires": None} if unread else {}),
        ))
        await self.event(step, status.value, error, rotation_id=rotation_id)
        await self.alert(status.value, error.message, error_code=error.code, **(details or {}))
        raise self.stop(status.value, error) from error

    async def check_stuck(self) -> None:
        """Alert when the rotation has sat in one stage longer than allowed."""
        since = self.target.state.stage_since
        if since is not None and self.now() - since > self.config.stuck_after:
            await self.alert(
                "stuck",
                f"rotation {self.target.state.rotation_id} has been in stage {self.target.state.stage.value} "
                f"since {since.isoformat()}",
                stage=self.target.state.stage.value,
            )
