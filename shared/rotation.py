"""The rotation service: drives each target through the crash-safe protocol of DESIGN.md.

Every step first persists where it is going (ETag-guarded), then acts, then persists where it got to,
so a crash at any point is resumed by re-running the step. A lease on the row keeps two runners
(timer and manual) from working one target at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain import (
    Ack,
    Actor,
    Application,
    Assessment,
    AssessmentStatus,
    Stage,
    Target,
    all_acknowledged,
    assess,
    credential_display_name,
    days_until,
    lifetime_days,
    new_rotation_id,
    renew_before,
    retirement_plan,
)
from shared.errors import (
    Ambiguous,
    AppNotFound,
    Conflict,
    DestinationRejected,
    NotFound,
    RotationError,
    Throttled,
    Unreachable,
)
from shared.ports import (
    Alert,
    Alerter,
    Clock,
    Delivery,
    Destination,
    Directory,
    Event,
    SecretStore,
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


@dataclass
class PassSummary:
    """One timer pass: counts per status and result, duration."""

    outcomes: list[Outcome] = field(default_factory=list)
    duration_ms: int = 0

    @property
    def by_status(self) -> dict[str, int]:
        return dict(Counter(o.status or "unknown" for o in self.outcomes))

    @property
    def by_result(self) -> dict[str, int]:
        return dict(Counter(o.result for o in self.outcomes))


class _Stop(Exception):
    """Ends one advance early with an outcome (a step that cannot progress now)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.result)
        self.outcome = outcome


class Engine:
    """Assesses targets and moves each through creating -> pending -> verified -> pushed -> idle."""

    def __init__(
        self,
        *,
        state: StateStore,
        directory: Directory,
        secrets: SecretStore,
        probe: TokenProbe,
        destinations: Mapping[str, Destination],
        alerter: Alerter,
        clock: Clock,
        config: EngineConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.state = state
        self.directory = directory
        self.secrets = secrets
        self.probe = probe
        self.destinations = destinations
        self.alerter = alerter
        self.clock = clock
        self.config = config
        self.sleep = sleep
        self.owner = uuid.uuid4().hex

    # ---------------------------------------------------------------- entry points

    async def run_pass(self, actor: Actor = Actor.TIMER, *, assess_only: bool = False) -> PassSummary:
        """One timer pass: resume rotations in flight, then assess every enabled target and rotate the due.

        With assess_only, only look: record each idle target's status, start nothing, resume nothing.
        """
        started = time.monotonic()
        targets = [t for t, _ in await self.state.list_targets() if t.enabled]
        bound = asyncio.Semaphore(self.config.scan_concurrency)

        async def one(target: Target) -> Outcome:
            async with bound:
                return await self.advance(target.tenant_id, target.app_id, actor, assess_only=assess_only)

        in_flight = [t for t in targets if t.state.stage is not Stage.IDLE]
        resting = [t for t in targets if t.state.stage is Stage.IDLE]
        outcomes = list(await asyncio.gather(*(one(t) for t in in_flight)))
        outcomes += await asyncio.gather(*(one(t) for t in resting))
        summary = PassSummary(outcomes, int((time.monotonic() - started) * 1000))
        log.info(
            "rotation pass finished",
            extra={
                "event": "pass",
                "actor": actor.value,
                "targets": len(outcomes),
                "by_status": summary.by_status,
                "by_result": summary.by_result,
                "duration_ms": summary.duration_ms,
            },
        )
        return summary

    async def rotate_now(self, tenant_id: str, app_id: str, *, force: bool = False, dry_run: bool = False) -> Outcome:
        """An operator's immediate rotation of one target, through the same protocol."""
        target, _ = await self.state.get_target(tenant_id, app_id)
        now = self.clock.now()
        if target.state.stage is not Stage.IDLE or self._leased_by_other(target, now):
            raise Conflict(
                f"a rotation of {target.key} is in flight (stage {target.state.stage.value})", code="RotationInFlight"
            )
        last = target.observed.last_rotation_at
        if not force and last is not None and now - last < self.config.manual_cooldown:
            raise Conflict(
                f"{target.key} was rotated at {last.isoformat()}; repeat within the cool-down needs force",
                code="CoolDown",
            )
        if dry_run:
            return await self._dry_run(target)
        return await self.advance(tenant_id, app_id, Actor.MANUAL, force=True)

    async def push_now(self, tenant_id: str, app_id: str, actor: Actor = Actor.EVENT) -> Outcome:
        """Deliver a verified secret to its destinations now (and finish the rotation when all confirm)."""
        target, _ = await self.state.get_target(tenant_id, app_id)
        if target.state.stage in (Stage.VERIFIED, Stage.PUSHED):
            return await self.advance(tenant_id, app_id, actor)
        return self._outcome(target, "nothing-to-push", message=f"stage is {target.state.stage.value}")

    async def acknowledge(
        self, tenant_id: str, app_id: str, destination: str, key_id: str, actor: Actor = Actor.MANUAL
    ) -> Outcome:
        """A human confirms a destination holds the rotating secret (notify-only); finish when all confirmed."""
        target, etag = await self.state.get_target(tenant_id, app_id)
        config = next((d for d in target.destinations if d.name == destination), None)
        if config is None:
            raise NotFound(f"{target.key} has no destination named {destination!r}", code="DestinationNotFound")
        if config.kind != "notify-only":
            raise Conflict(f"destination {destination!r} is {config.kind}: the rotator confirms it itself",
                           code="NotNotifyOnly")
        s = target.state
        if s.stage is not Stage.VERIFIED or not s.new_key_id:
            raise Conflict(f"{target.key} has no verified secret waiting for acknowledgement (stage {s.stage.value})",
                           code="NothingToAcknowledge")
        if key_id.lower() != s.new_key_id.lower():
            raise Conflict(f"key {key_id} is not the one being rolled out ({s.new_key_id})", code="KeyMismatch")
        acks = {**s.acks, destination: Ack(s.new_key_id, self.clock.now())}
        failures = {k: v for k, v in s.push_failures.items() if k != destination}
        # ETag-guarded: a concurrent push or acknowledgement makes this a 409, never a lost update.
        await self.state.replace_target(target.with_state(acks=acks, push_failures=failures), etag)
        await self.state.record(Event(tenant_id, app_id, f"push:{destination}", "acknowledged", actor.value,
                                      s.rotation_id, at=self.clock.now()))
        return await self.push_now(tenant_id, app_id, actor)

    async def advance(
        self, tenant_id: str, app_id: str, actor: Actor, *, force: bool = False, assess_only: bool = False
    ) -> Outcome:
        """Take one target as far through the protocol as it can go now."""
        try:
            target, etag = await self.state.get_target(tenant_id, app_id)
        except NotFound as error:
            return Outcome(tenant_id, app_id, "failed", error_code=error.code, message=error.message)
        now = self.clock.now()
        if self._leased_by_other(target, now):
            return self._outcome(target, "busy", message="another run holds this target")
        run = _Run(self, target, etag, actor)
        try:
            await run.save(run.target.with_state(lease_owner=self.owner, lease_until=now + self.config.lease))
        except Conflict:
            return self._outcome(target, "busy", message="another run took this target first")
        try:
            return await run.go(force, assess_only)
        except _Stop as stop:
            return stop.outcome
        except Conflict as error:
            return self._outcome(run.target, "busy", error_code=error.code, message=error.message)
        except RotationError as error:
            await run.event("advance", "failed", error)
            return self._outcome(run.target, "failed", error_code=error.code, message=error.message)
        finally:
            await run.release()

    # ---------------------------------------------------------------- helpers

    def _leased_by_other(self, target: Target, now: datetime) -> bool:
        s = target.state
        return bool(s.lease_owner) and s.lease_owner != self.owner and s.lease_until is not None and s.lease_until > now

    def _outcome(self, target: Target, result: str, **extra: str) -> Outcome:
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

    async def _dry_run(self, target: Target) -> Outcome:
        try:
            app = await self.directory.get_application(target.tenant_id, target.app_id)
        except (AppNotFound, Unreachable) as error:
            status = AssessmentStatus.APP_NOT_FOUND if isinstance(error, AppNotFound) else AssessmentStatus.UNREACHABLE
            return Outcome(target.tenant_id, target.app_id, "would-fail", status=status.value,
                           stage=target.state.stage.value, error_code=error.code, message=error.message)
        assessment = self._assess(target, app)
        return Outcome(
            target.tenant_id,
            target.app_id,
            "would-rotate",
            status=assessment.status.value,
            stage=target.state.stage.value,
            days_left=assessment.days_left,
            message=(
                f"would add a secret valid {lifetime_days(target.policy, self.config.lifetime_days)} days, store it in "
                f"Key Vault as {target.secret_name}, verify it and push it to "
                f"{len(target.destinations)} destination(s)"
            ),
        )

    def _assess(self, target: Target, app: Application) -> Assessment:
        renew = renew_before(target.policy, self.config.renew_before_days)
        return assess(app, self.clock.now(), renew, target.state.current_key_id)


class _Run:
    """One advance of one target: holds its latest row and ETag, and performs the steps."""

    def __init__(self, engine: Engine, target: Target, etag: str, actor: Actor) -> None:
        self.e = engine
        self.target = target
        self.etag = etag
        self.actor = actor
        self.app: Application | None = None

    # ---------------------------------------------------------------- persistence

    async def save(self, target: Target) -> None:
        self.etag = await self.e.state.replace_target(target, self.etag)
        self.target = target

    async def move(self, stage: Stage, **changes: object) -> None:
        await self.save(self.target.with_state(stage=stage, stage_since=self.e.clock.now(), **changes))

    async def release(self) -> None:
        if self.target.state.lease_owner != self.e.owner:
            return
        try:
            await self.save(self.target.with_state(lease_owner="", lease_until=None))
        except RotationError:
            log.warning("could not release the lease", extra={"event": "lease", "target": self.target.key})

    async def event(
        self, step: str, outcome: str, error: RotationError | None = None, *, started: float | None = None,
        detail: str = "", rotation_id: str = "",
    ) -> None:
        duration = int((time.monotonic() - started) * 1000) if started is not None else 0
        record = Event(
            tenant_id=self.target.tenant_id,
            app_id=self.target.app_id,
            step=step,
            outcome=outcome,
            actor=self.actor.value,
            rotation_id=rotation_id or self.target.state.rotation_id,
            duration_ms=duration,
            error_code=error.code if error else "",
            detail=(error.message if error else detail)[:1000],
            at=self.e.clock.now(),
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
            await self.e.state.record(record)
        except RotationError:
            log.warning("audit record not written", extra={"event": "audit", "target": self.target.key})

    async def alert(self, condition: str, message: str, **details: str) -> None:
        await self.e.alerter.raise_alert(
            Alert(condition, self.target.tenant_id, self.target.app_id, message, self.target.customer, details)
        )

    def stop(self, result: str, error: RotationError | None = None, message: str = "") -> _Stop:
        return _Stop(
            self.e._outcome(
                self.target,
                result,
                error_code=error.code if error else "",
                message=error.message if error else message,
            )
        )

    # ---------------------------------------------------------------- the protocol

    async def go(self, force: bool, assess_only: bool = False) -> Outcome:
        if assess_only:
            if self.target.state.stage is Stage.IDLE:
                await self.consider(force=False, reserve=False)
            return self.e._outcome(self.target, self.target.observed.status or "in-flight")
        rotated = False
        if self.target.state.stage is not Stage.IDLE:
            await self.check_stuck()
        while True:
            stage = self.target.state.stage
            if stage is Stage.IDLE:
                if rotated:
                    await self.retire()
                    return self.e._outcome(self.target, "rotated")
                if not await self.consider(force):
                    await self.retire()
                    return self.e._outcome(self.target, self.target.observed.status or "checked")
            elif stage is Stage.CREATING:
                await self.create()
            elif stage is Stage.PENDING:
                await self.verify()
            elif stage is Stage.VERIFIED:
                await self.push()
            elif stage is Stage.PUSHED:
                await self.finish()
                self.app = None  # the snapshot predates the new credential: retirement must see it
                rotated = True

    async def application(self) -> Application:
        if self.app is None:
            self.app = await self.e.directory.get_application(self.target.tenant_id, self.target.app_id)
        return self.app

    async def check_stuck(self) -> None:
        since = self.target.state.stage_since
        if since is not None and self.e.clock.now() - since > self.e.config.stuck_after:
            await self.alert(
                "stuck",
                f"rotation {self.target.state.rotation_id} has been in stage {self.target.state.stage.value} "
                f"since {since.isoformat()}",
                stage=self.target.state.stage.value,
            )

    async def consider(self, force: bool, reserve: bool = True) -> bool:
        """Assess the target; reserve a rotation (stage creating) when it is due or forced."""
        now = self.e.clock.now()
        try:
            self.app = None
            app = await self.application()
        except (AppNotFound, Unreachable) as error:
            status = AssessmentStatus.APP_NOT_FOUND if isinstance(error, AppNotFound) else AssessmentStatus.UNREACHABLE
            await self.save(
                self.target.with_observed(
                    status=status.value, days_left=None, expires=None, checked_at=now,
                    error_code=error.code, error_message=error.message,
                )
            )
            await self.event("assess", status.value, error)
            await self.alert(status.value, error.message, error_code=error.code)
            raise self.stop(status.value, error) from error
        assessment = self.e._assess(self.target, app)
        observed = self.target.with_observed(
            status=assessment.status.value,
            days_left=assessment.days_left,
            expires=assessment.current.end if assessment.current else None,
            checked_at=now,
            error_code="",
            error_message="",
        )
        if assessment.status is AssessmentStatus.EXPIRED:
            await self.alert("expired", "the Proofpoint sync secret has expired: the sync is failing until rotated")
        if not reserve or not (assessment.status.needs_rotation or force):
            await self.save(observed)
            return False
        # One write records what was seen and reserves the rotation: the row never says "due" without an id.
        await self.save(
            observed.with_state(
                stage=Stage.CREATING,
                stage_since=now,
                rotation_id=new_rotation_id(),
                actor=self.actor.value,
                replaces=(assessment.current.key_id,) if assessment.current else (),
                new_key_id="",
                new_version="",
                new_expires=None,
                push_failures={},
            )
        )
        await self.event("reserve", "ok", detail=f"status {assessment.status.value}")
        return True

    async def create(self) -> None:
        """Stage creating: add the credential and put its value in Key Vault, or recover after a crash."""
        rotation_id = self.target.state.rotation_id
        # Read fresh when resuming; right after reserving, the assessment's read of this advance is current.
        app = await self.application()
        mine = [c for c in app.credentials if c.rotation_id == rotation_id]
        if mine:
            stored = await self.stored_version(rotation_id)
            if stored is not None:
                version, key_id, expires = stored
                await self.event("recover", "found-in-key-vault")
                await self.move(Stage.PENDING, new_key_id=key_id, new_version=version, new_expires=expires)
                return
            # The value of these credentials is lost: remove them, then start over with a new id.
            for credential in mine:
                await self.e.directory.remove_password(self.target.tenant_id, app.object_id, credential.key_id)
            await self.event("recover", "removed-lost-credential", detail=f"{len(mine)} credential(s)")
            await self.move(Stage.CREATING, rotation_id=new_rotation_id())
            return
        await self.add_and_store(app)

    async def stored_version(self, rotation_id: str) -> tuple[str, str, datetime | None] | None:
        for version in await self.e.secrets.list_versions(self.target.secret_name):
            if version.tags.get("rotation-id") == rotation_id and version.tags.get("key-id"):
                return version.version, version.tags["key-id"], version.expires
        return None

    async def add_and_store(self, app: Application) -> None:
        cfg = self.e.config
        state = self.target.state
        end = self.e.clock.now() + timedelta(days=lifetime_days(self.target.policy, cfg.lifetime_days))
        started = time.monotonic()
        new = None
        for attempt in range(1, cfg.create_attempts + 1):
            try:
                new = await self.e.directory.add_password(
                    self.target.tenant_id, app.object_id, credential_display_name(state.rotation_id), end
                )
                break
            except Throttled as error:
                # Throttling and concurrency violations say the write did not happen, so another try is safe.
                await self.event("create", "throttled", error)
                if attempt == cfg.create_attempts:
                    raise self.stop("failed", error) from error
                await self.e.sleep(error.retry_after or 2.0 * attempt)
            except Ambiguous as error:
                # The credential may exist: leave `creating`; the next run finds it by its display name.
                await self.event("create", "ambiguous", error)
                raise self.stop("failed", error) from error
            except (AppNotFound, Unreachable) as error:
                await self.abandon("create", error)
            except RotationError as error:
                # A definite refusal (e.g. the tenant's credential lifetime policy): nothing was created.
                await self.abandon("create", error)
        assert new is not None
        await self.event("create", "ok", started=started, detail=f"key {new.credential.key_id}")
        tags = {
            "stage": "pending",
            "rotation-id": state.rotation_id,
            "key-id": new.credential.key_id,
            "tenant-id": self.target.tenant_id,
            "app-id": self.target.app_id,
            "expires": new.credential.end.isoformat(),
        }
        started = time.monotonic()
        last_error: RotationError | None = None
        for attempt in range(1, cfg.store_attempts + 1):
            try:
                version = await self.e.secrets.add_version(
                    self.target.secret_name, new.secret, tags, new.credential.end
                )
                break
            except RotationError as error:
                last_error = error
                await self.event("store", "retry" if attempt < cfg.store_attempts else "failed", error)
                if attempt < cfg.store_attempts:
                    await self.e.sleep(error.retry_after or 1.0 * attempt)
        else:
            assert last_error is not None
            await self.compensate(app, new.credential.key_id, last_error)
            return
        await self.event("store", "ok", started=started, detail=f"version {version}")
        await self.move(Stage.PENDING, new_key_id=new.credential.key_id, new_version=version,
                        new_expires=new.credential.end)

    async def compensate(self, app: Application, key_id: str, error: RotationError) -> None:
        """Key Vault kept failing: remove the new credential so no live credential has a value nobody holds."""
        await self.e.directory.remove_password(self.target.tenant_id, app.object_id, key_id)
        await self.event("compensate", "removed-new-credential", error)
        await self.abandon("store", error)

    async def abandon(self, step: str, error: RotationError) -> None:
        """End this rotation without a new secret; the old one stays untouched."""
        await self.move(Stage.IDLE, rotation_id="", new_key_id="", new_version="", new_expires=None, replaces=())
        await self.save(self.target.with_observed(last_outcome=f"failed: {error.code}", error_code=error.code,
                                                  error_message=error.message))
        await self.alert("rotation-failed", f"{step} failed: {error.message}", error_code=error.code)
        raise self.stop("failed", error)

    async def verify(self) -> None:
        """Stage pending: prove the new secret gets a token (waiting out propagation delay)."""
        s = self.target.state
        secret = await self.e.secrets.get_value(self.target.secret_name, s.new_version)
        started = time.monotonic()
        deadline = self.e.clock.now() + self.e.config.verify_timeout
        delay = 1.0
        while True:
            problem = await self.e.probe.try_token(self.target.tenant_id, self.target.app_id, secret)
            if problem is None:
                break
            if self.e.clock.now() >= deadline:
                error = RotationError(f"the new secret does not get a token yet: {problem}", code="NotVerified")
                await self.event("verify", "failed", error, started=started)
                raise self.stop("unverified", error)
            await self.e.sleep(delay)
            delay = min(delay * 2, 10.0)
        await self.event("verify", "ok", started=started)
        await self.move(Stage.VERIFIED)

    async def push(self) -> None:
        """Stage verified: deliver the secret to each destination that has not confirmed it yet."""
        s = self.target.state
        pending = [d for d in self.target.destinations if (a := s.acks.get(d.name)) is None or a.key_id != s.new_key_id]
        if pending:
            secret = await self.e.secrets.get_value(self.target.secret_name, s.new_version)
            assert s.new_expires is not None
            delivery = Delivery(
                self.target.tenant_id, self.target.app_id, s.new_key_id, secret, s.new_expires,
                self.target.customer, self.target.secret_name, s.new_version,
            )
        for config in pending:
            started = time.monotonic()
            destination = self.e.destinations.get(config.kind)
            try:
                if destination is None:
                    raise DestinationRejected(f"no destination adapter of kind {config.kind!r}", code="UnknownKind")
                await destination.deliver(config, delivery)
            except RotationError as error:
                failures = dict(self.target.state.push_failures)
                failures[config.name] = failures.get(config.name, 0) + 1
                await self.save(self.target.with_state(push_failures=failures))
                await self.event(f"push:{config.name}", "failed", error, started=started)
                if error.code == "AwaitingAcknowledgement":
                    await self.alert("notify-only-waiting", error.message, destination=config.name)
                elif failures[config.name] >= self.e.config.push_max_attempts or isinstance(error, DestinationRejected):
                    await self.save(self.target.with_observed(needs_human=f"{config.name}: {error.message}"))
                    await self.alert("destination-failing", f"{config.name}: {error.message}",
                                     destination=config.name, error_code=error.code,
                                     attempts=str(failures[config.name]))
                continue
            acks = dict(self.target.state.acks)
            acks[config.name] = Ack(s.new_key_id, self.e.clock.now())
            failures = {k: v for k, v in self.target.state.push_failures.items() if k != config.name}
            await self.save(self.target.with_state(acks=acks, push_failures=failures))
            await self.event(f"push:{config.name}", "ok", started=started)
        if not all_acknowledged(self.target):
            raise self.stop("push-incomplete", message="some destinations have not confirmed the new secret")
        await self.move(Stage.PUSHED)

    async def finish(self) -> None:
        """Stage pushed: the new version becomes `current` in Key Vault, the old `previous`; back to idle."""
        s = self.target.state
        name = self.target.secret_name
        for version in await self.e.secrets.list_versions(name):
            stage = version.tags.get("stage")
            if version.version == s.new_version:
                if stage != "current":
                    await self.e.secrets.set_tags(name, version.version, {**version.tags, "stage": "current"})
            elif stage == "current":
                await self.e.secrets.set_tags(name, version.version, {**version.tags, "stage": "previous"})
            elif stage == "previous":
                await self.e.secrets.set_tags(name, version.version, {**version.tags, "stage": "retired"})
        now = self.e.clock.now()
        superseded = tuple(sorted((set(s.superseded) | set(s.replaces)) - {s.new_key_id}))
        await self.save(
            self.target.with_state(
                stage=Stage.IDLE,
                stage_since=now,
                current_key_id=s.new_key_id,
                current_version=s.new_version,
                superseded=superseded,
                retire_after=now + self.e.config.retire_grace,
                rotation_id="",
                new_key_id="",
                new_version="",
                new_expires=None,
                replaces=(),
                push_failures={},
            ).with_observed(
                status=AssessmentStatus.HEALTHY.value,
                days_left=days_until(s.new_expires, now) if s.new_expires else None,
                expires=s.new_expires,
                last_rotation_at=now,
                last_outcome="rotated",
                needs_human="",
                error_code="",
                error_message="",
            )
        )
        await self.event("finish", "ok", detail=f"current key {s.new_key_id}", rotation_id=s.rotation_id)

    async def retire(self) -> None:
        """Idle: remove superseded credentials after the grace period, and expired ones, by the rules."""
        state = self.target.state
        # The snapshot read earlier in this advance is enough: only credentials listed in it are removed.
        app = await self.application()
        removals, others = retirement_plan(app.credentials, state, self.e.clock.now(),
                                           self.e.config.retire_other_expired)
        if len(others) != self.target.observed.other_credentials:
            # Reported, never removed: live credentials someone else made on the app.
            await self.save(self.target.with_observed(other_credentials=len(others)))
        present = {c.key_id for c in app.credentials}
        for removal in removals:
            started = time.monotonic()
            await self.e.directory.remove_password(self.target.tenant_id, app.object_id, removal.key_id)
            present.discard(removal.key_id)
            await self.event("retire", removal.reason, started=started, detail=f"key {removal.key_id}")
        remaining = tuple(k for k in state.superseded if k in present)
        if remaining != state.superseded:
            await self.save(self.target.with_state(superseded=remaining))


