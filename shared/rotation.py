"""The rotation engine: passes, manual rotations, pushes and acknowledgements; it dispatches by stage.

The protocol's steps live in shared/protocol (one module per step, DESIGN.md). Every step first persists where it
is going (ETag-guarded), then acts, then persists where it got to, so a crash at any point is resumed by re-running
the step. A lease on the row keeps two runners (timer and manual) from working one target at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from shared.domain import Ack, Actor, Stage, Target, actor_of, retirement_due
from shared.errors import Conflict, NotFound, RotationError
from shared.ports import (
    Alerter,
    ApprovalLinks,
    Approvals,
    Clock,
    Destination,
    Directory,
    Event,
    SecretStore,
    SignInLog,
    StateStore,
    TokenProbe,
)
from shared.protocol.adopt import adopt
from shared.protocol.assess import consider, preview
from shared.protocol.change import decided_requests, waiting_due
from shared.protocol.context import (
    Advance,
    AuditUnwritten,
    EngineConfig,
    Outcome,
    Ports,
    Stop,
    leased_by_other,
    outcome,
)
from shared.protocol.create import create
from shared.protocol.deliver import deliver
from shared.protocol.finish import finish, follow_entra, retire
from shared.protocol.verify import verify

__all__ = ["Engine", "EngineConfig", "Outcome", "PassSummary"]

log = logging.getLogger(__name__)


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
        sign_ins: SignInLog | None = None,
        approvals: Approvals | None = None,
        links: ApprovalLinks | None = None,
    ) -> None:
        self.ports = Ports(state, directory, secrets, probe, destinations, alerter, clock, sleep, sign_ins,
                           approvals, links)
        self.state = state
        self.directory = directory
        self.secrets = secrets
        self.probe = probe
        self.destinations = destinations
        self.clock = clock
        self.config = config
        self.owner = uuid.uuid4().hex

    def renewed(self) -> Engine:
        """An engine over the same ports and settings with a lease owner of its own (one per invocation)."""
        p = self.ports
        return Engine(state=p.state, directory=p.directory, secrets=p.secrets, probe=p.probe,
                      destinations=p.destinations, alerter=p.alerter, clock=p.clock, config=self.config,
                      sleep=p.sleep, sign_ins=p.sign_ins, approvals=p.approvals, links=p.links)

    # ---------------------------------------------------------------- entry points

    async def run_pass(self, actor: Actor = Actor.TIMER, *, assess_only: bool = False) -> PassSummary:
        """One timer pass: resume rotations in flight, then assess every enabled target and rotate the due.

        With assess_only, only look: record each idle target's status, start nothing, resume nothing.
        """
        return await self._pass(actor, assess_only=assess_only)

    async def resume_pass(self, actor: Actor = Actor.TIMER) -> PassSummary:
        """The short-cadence pass: take only the rotations in flight further; idle targets are not touched."""
        return await self._pass(actor, only_in_flight=True)

    async def _pass(self, actor: Actor, *, assess_only: bool = False, only_in_flight: bool = False) -> PassSummary:
        started = time.monotonic()
        # Each target is advanced from the row the listing returned (with its ETag), not read again.
        rows = [(t, etag) for t, etag in await self.state.list_targets() if t.enabled]

        async def one(row: tuple[Target, str]) -> Outcome:
            target = row[0]
            return await self.advance(target.tenant_id, target.app_id, actor, only_in_flight=only_in_flight,
                                      assess_only=assess_only, listed=row)

        in_flight = [r for r in rows if r[0].state.stage is not Stage.IDLE]
        resting = [r for r in rows if r[0].state.stage is Stage.IDLE]
        outcomes = await self._each(in_flight, one)
        if not only_in_flight:
            outcomes += await self._each(resting, one)
        else:
            # A due rotation whose change-control wait ended (a window opened, a postponement ended, the force day
            # came) or whose request a person decided is looked at by the short-cadence pass, not a day later.
            now = self.clock.now()
            decided = await decided_requests(self.ports.approvals, [t for t, _ in resting])
            ended = [r for r in resting if waiting_due(r[0], now, decided)]
            outcomes += await self._each(ended, lambda row: self.advance(
                row[0].tenant_id, row[0].app_id, actor, assess_only=assess_only, listed=row))
        await self.ports.alerter.redeliver()
        summary = PassSummary(outcomes, int((time.monotonic() - started) * 1000))
        log.info(
            "resume pass finished" if only_in_flight else "rotation pass finished",
            extra={
                "event": "pass",
                "kind": "resume" if only_in_flight else "rotation",
                "actor": actor.value,
                "targets": len(outcomes),
                "by_status": summary.by_status,
                "by_result": summary.by_result,
                "duration_ms": summary.duration_ms,
            },
        )
        return summary

    async def _each(self, rows: list[tuple[Target, str]],
                    work: Callable[[tuple[Target, str]], Awaitable[Outcome]]) -> list[Outcome]:
        """`work` on every target, SCAN_CONCURRENCY at once: that many workers take the next target in turn, so a
        pass over thousands holds that many tasks, not one per target."""
        outcomes: list[Outcome | None] = [None] * len(rows)
        queue = iter(enumerate(rows))

        async def worker() -> None:
            for index, row in queue:
                outcomes[index] = await work(row)

        await asyncio.gather(*(worker() for _ in range(min(self.config.scan_concurrency, len(rows)))))
        return [o for o in outcomes if o is not None]

    async def rotate_now(
        self, tenant_id: str, app_id: str, *, force: bool = False, dry_run: bool = False,
        actor: Actor | str = Actor.MANUAL, reserve_only: bool = False,
    ) -> Outcome:
        """An operator's immediate rotation of one target, through the same protocol; `actor` is who asked
        (e.g. "manual:alice@msp.example"), recorded on every audit event of the rotation. With reserve_only the
        rotation is only reserved (result "reserved", its rotation id) for a queue worker to take further.

        The checks (nothing in flight, not leased, outside the cool-down) and the lease are one decision: the lease
        is written only if the row is still the one checked (ETag), and the rotation then runs on that leased row.
        A rotation that starts or finishes in between makes the lease write fail, and the checks are made again.
        """
        for _ in range(3):
            target, etag = await self.state.get_target(tenant_id, app_id)
            self._may_rotate(target, force)
            if dry_run:
                return await preview(self.directory, self.destinations, target, self.clock.now(), self.config)
            run = Advance(self.ports, self.config, self.owner, target, etag, actor)
            try:
                await run.take_lease()
            except Conflict:
                continue  # the row changed since it was checked: check the new one
            return await self._advance(run, force=True, reserve_only=reserve_only)
        raise Conflict(f"{tenant_id}/{app_id} keeps changing; try again", code="RotationInFlight")

    def _may_rotate(self, target: Target, force: bool) -> None:
        """Refuse a manual rotation while one is in flight, or (unless forced) within the cool-down."""
        now = self.clock.now()
        if target.state.stage is not Stage.IDLE or leased_by_other(target, self.owner, now):
            raise Conflict(
                f"a rotation of {target.key} is in flight (stage {target.state.stage.value})", code="RotationInFlight"
            )
        last = target.observed.last_rotation_at
        if not force and last is not None and now - last < self.config.manual_cooldown:
            raise Conflict(
                f"{target.key} was rotated at {last.isoformat()}; repeat within the cool-down needs force",
                code="CoolDown",
            )

    async def push_now(self, tenant_id: str, app_id: str, actor: Actor | str = Actor.EVENT) -> Outcome:
        """Deliver a verified secret to its destinations now (and finish the rotation when all confirm)."""
        target, _ = await self.state.get_target(tenant_id, app_id)
        if target.state.stage in (Stage.VERIFIED, Stage.PUSHED):
            return await self.advance(tenant_id, app_id, actor)
        return outcome(target, "nothing-to-push", message=f"stage is {target.state.stage.value}")

    async def adopt_version(self, tenant_id: str, app_id: str, version: str,
                            actor: Actor | str = Actor.EVENT) -> Outcome:
        """A version of the target's Key Vault secret that someone wrote by hand: prove it, then push it through the
        protocol (shared/protocol/adopt.py). Results: rotated / push-incomplete (adopted), own-version,
        already-adopted, unknown-version, not-adopted (refused or not adoptable now), busy, failed."""
        target, etag = await self.state.get_target(tenant_id, app_id)
        run = Advance(self.ports, self.config, self.owner, target, etag, actor)
        try:
            await adopt(run, version)
        except Stop as stop:
            return stop.outcome
        except Conflict as error:
            return run.outcome("busy", error_code=error.code, message=error.message)
        except RotationError as error:
            await run.event("adopt", "failed", error)
            return run.outcome("failed", error_code=error.code, message=error.message)
        return await self._advance(run)  # the row is `verified` and leased: push, finish, release

    async def acknowledge(
        self, tenant_id: str, app_id: str, destination: str, key_id: str, actor: Actor | str = Actor.MANUAL
    ) -> Outcome:
        """A human confirms a destination holds the rotating secret (notify-only, or one held after its push changed
        other settings: the human checked and restored them); finish when all confirmed."""
        target, etag = await self.state.get_target(tenant_id, app_id)
        config = next((d for d in target.destinations if d.name == destination), None)
        if config is None:
            raise NotFound(f"{target.key} has no destination named {destination!r}", code="DestinationNotFound")
        s = target.state
        held = bool(s.new_key_id) and s.held.get(destination) == s.new_key_id
        if config.kind != "notify-only" and not held:
            raise Conflict(f"destination {destination!r} is {config.kind}: the rotator confirms it itself (a human "
                           "acknowledges it only when it is held after drift)", code="NotNotifyOnly")
        if s.stage is not Stage.VERIFIED or not s.new_key_id:
            raise Conflict(f"{target.key} has no verified secret waiting for acknowledgement (stage {s.stage.value})",
                           code="NothingToAcknowledge")
        if key_id.lower() != s.new_key_id.lower():
            raise Conflict(f"key {key_id} is not the one being rolled out ({s.new_key_id})", code="KeyMismatch")
        acks = {**s.acks, destination: Ack(s.new_key_id, self.clock.now())}
        failures = {k: v for k, v in s.push_failures.items() if k != destination}
        holds = {k: v for k, v in s.held.items() if k != destination}
        # ETag-guarded: a concurrent push or acknowledgement makes this a 409, never a lost update.
        await self.state.replace_target(target.with_state(acks=acks, push_failures=failures, held=holds), etag)
        await self.state.record(Event(tenant_id, app_id, f"push:{destination}", "acknowledged", actor_of(actor),
                                      s.rotation_id, at=self.clock.now()))
        return await self.push_now(tenant_id, app_id, actor)

    async def advance(
        self, tenant_id: str, app_id: str, actor: Actor | str, *, force: bool = False, assess_only: bool = False,
        only_in_flight: bool = False, reserve_only: bool = False, retire_only: bool = False,
        listed: tuple[Target, str] | None = None,
    ) -> Outcome:
        """Take one target as far through the protocol as it can go now (with only_in_flight: only a target
        whose rotation is in flight, decided on the row the lease is taken on; with reserve_only: an idle target is
        assessed and, when due, reserved (stage creating, result "reserved") for a queue worker to take further;
        with retire_only: a rotation in flight, or an idle target's retirement whose grace is over, never a new
        rotation).

        `listed` is the row and ETag a pass's listing returned: the target is advanced from it without reading it
        again. Every write is ETag-guarded, so a row changed since the listing is never overwritten; when that
        attempt ends busy having written nothing (a write lost to a newer row, or a lease seen in the listing), the
        target is read again and advanced from the row as it is now.
        """
        def on(target: Target, etag: str) -> Awaitable[tuple[Outcome, bool]]:
            return self._advance_row(target, etag, actor, force=force, assess_only=assess_only,
                                     only_in_flight=only_in_flight, reserve_only=reserve_only,
                                     retire_only=retire_only)

        if listed is not None:
            result, wrote = await on(*listed)
            if result.result != "busy" or wrote:
                return result
        try:
            target, etag = await self.state.get_target(tenant_id, app_id)
        except NotFound as error:
            return Outcome(tenant_id, app_id, "failed", error_code=error.code, message=error.message)
        result, _ = await on(target, etag)
        return result

    async def _advance_row(
        self, target: Target, etag: str, actor: Actor | str, *, force: bool, assess_only: bool,
        only_in_flight: bool, reserve_only: bool, retire_only: bool = False,
    ) -> tuple[Outcome, bool]:
        """advance() on a row read with `etag`; the outcome, and whether any write of the row succeeded."""
        now = self.clock.now()
        if only_in_flight and target.state.stage is Stage.IDLE:
            return outcome(target, "skipped", message="nothing in flight"), False
        if retire_only and target.state.stage is Stage.IDLE and not retirement_due(target, now):
            return outcome(target, "skipped", message="nothing in flight, no retirement due"), False
        if leased_by_other(target, self.owner, now):
            return outcome(target, "busy", message="another run holds this target"), False
        run = Advance(self.ports, self.config, self.owner, target, etag, actor)
        if target.state.stage is Stage.IDLE and not force:
            # Assessed before any write: the lease is taken with the first step that has work to do (reserving a
            # rotation, retiring credentials), so a healthy target costs at most one write.
            result = await self._advance(run, force, assess_only, reserve_only, retire_only)
        else:
            try:
                await run.take_lease()
            except Conflict:
                return outcome(target, "busy", message="another run took this target first"), False
            result = await self._advance(run, force, assess_only, reserve_only, retire_only)
        return result, run.etag != etag

    async def _advance(
        self, run: Advance, force: bool = False, assess_only: bool = False, reserve_only: bool = False,
        retire_only: bool = False,
    ) -> Outcome:
        """Run the protocol on a target whose lease this advance holds; release the lease at the end, then settle
        the target's alerts by the row it ended with."""
        started = run.target
        try:
            if reserve_only:
                return await self._reserve(run, force)
            if retire_only and run.target.state.stage is Stage.IDLE:
                return await self._retire(run)
            return await self._go(run, force, assess_only)
        except Stop as stop:
            return stop.outcome
        except Conflict as error:
            run.stale = True
            return run.outcome("busy", error_code=error.code, message=error.message)
        except AuditUnwritten as error:
            # Told already (an error log holding the event, an alert); writing "advance failed" would fail alike.
            return run.outcome("failed", error_code=error.code, message=error.message)
        except RotationError as error:
            await run.event("advance", "failed", error)
            return run.outcome("failed", error_code=error.code, message=error.message)
        finally:
            await run.release()
            await run.settle_alerts(started)

    @staticmethod
    async def _reserve(run: Advance, force: bool) -> Outcome:
        """Assess an idle target and reserve its rotation when due (or forced); a target in flight is left as is."""
        if run.target.state.stage is Stage.IDLE and await consider(run, force):
            return run.outcome("reserved")
        if run.target.state.stage is not Stage.IDLE:
            return run.outcome("in-flight")
        # A key the row knows that is gone from the app just read (deleted by hand): its Key Vault tags follow now,
        # not only once a retirement is due; a target with no such key reads nothing from Key Vault.
        app = await run.application()
        await follow_entra(run, app, {c.key_id for c in app.credentials})
        return run.outcome(run.target.observed.status or "checked")

    @staticmethod
    async def _retire(run: Advance) -> Outcome:
        """An idle target's due retirement: assess it (recording what is seen, reserving nothing, even when due) and
        remove what the retirement rules allow."""
        await consider(run, force=False, reserve=False)
        await retire(run)
        return run.outcome(run.target.observed.status or "checked")

    @staticmethod
    async def _go(run: Advance, force: bool, assess_only: bool) -> Outcome:
        """Dispatch by stage until the target rests or a step stops."""
        if assess_only:
            if run.target.state.stage is Stage.IDLE:
                await consider(run, force=False, reserve=False)
            return run.outcome(run.target.observed.status or "in-flight")
        rotated = False
        if run.target.state.stage is not Stage.IDLE:
            await run.check_stuck()
        while True:
            stage = run.target.state.stage
            if stage is Stage.IDLE:
                if rotated:
                    await retire(run)
                    return run.outcome("rotated")
                if not await consider(run, force):
                    await retire(run)
                    return run.outcome(run.target.observed.status or "checked")
            elif stage is Stage.CREATING:
                await create(run)
            elif stage is Stage.PENDING:
                await verify(run)
            elif stage is Stage.VERIFIED:
                await deliver(run)
            elif stage is Stage.PUSHED:
                await finish(run)
                rotated = True
