"""Stage pushed: the new version becomes `current` in Key Vault, the old one `previous`; back to idle.
Stage idle: remove superseded credentials after the grace period, and expired ones, by the retirement rules;
superseded ones only once every destination that reports its own sync (Proofpoint) has synced since the push, and,
where Entra's sign-in records are readable, the new key signed in since the push and the old one went quiet."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from shared.domain import (
    Application,
    AssessmentStatus,
    Credential,
    RotationState,
    Stage,
    VersionStage,
    days_until,
    retirement_plan,
)
from shared.errors import RotationError
from shared.ports import StoredVersion
from shared.protocol.context import Advance
from shared.protocol.evidence import sign_in_proof
from shared.sync_proof import SYNC_NOT_CONFIRMED, check_syncs


async def finish(run: Advance) -> None:
    """Move the Key Vault stages to the new version and record the rotation as done.

    Safe to re-run from any point: the new version is promoted first (there is always a `current`), then every
    other `current` becomes `previous`; a version becomes `retired` only once its credential is gone or expired,
    never by its position, so a credential still live in its grace period keeps its value reachable.
    """
    s = run.target.state
    secrets = run.ports.secrets
    versions = await secrets.versions(run.target)
    new = next((v for v in versions if v.version == s.new_version), None)
    if new is None:
        # Never demote anything without the new version to promote: Key Vault would be left without a `current`.
        raise RotationError(f"Key Vault version {s.new_version} of rotation {s.rotation_id} is gone",
                            code="NewVersionMissing")
    if new.stage is not VersionStage.CURRENT or (s.new_key_id and new.key_id != s.new_key_id):
        # An adopted hand-written version learns here which credential it holds (its key id), as the rotator's own
        # versions carry it from their first write.
        await secrets.promote(run.target, new, s.new_key_id)
    run.forget_application()  # read after the new credential was made: retirement below uses it too
    app = await run.application()
    now = run.now()
    await reconcile_tags(run, versions, live_keys(app.credentials, now), keep=new.version)
    superseded = tuple(sorted((set(s.superseded) | set(s.replaces)) - {s.new_key_id}))
    await run.save(
        run.target.with_state(
            stage=Stage.IDLE,
            stage_since=now,
            current_key_id=s.new_key_id,
            current_version=s.new_version,
            superseded=superseded,
            retire_after=now + run.config.retire_grace,
            rotation_id="",
            new_key_id="",
            new_version="",
            new_expires=None,
            replaces=(),
            push_failures={},
            held={},
            baselines={},
        ).with_observed(
            status=AssessmentStatus.HEALTHY.value,
            days_left=days_until(s.new_expires, now) if s.new_expires else None,
            expires=s.new_expires,
            last_rotation_at=now,
            last_outcome="rotated",
            needs_human="",
            error_code="",
            error_message="",
            drift={},  # the push read its app id and key back: what an earlier check found is gone (drift.py)
            uses={},
            drift_unreadable_since=None,  # and it read the settings
        )
    )
    await run.event("finish", "ok", detail=f"current key {s.new_key_id}", rotation_id=s.rotation_id)


def live_keys(credentials: Iterable[Credential], now: datetime) -> set[str]:
    return {c.key_id for c in credentials if not c.expired(now)}


def superseded_stage(version: StoredVersion, live: set[str]) -> VersionStage | None:
    """The stage of a version that is not the one in use: derived from what Entra ID holds, never from what one
    pass did. `retired` once its credential is gone or expired (a `pending` one too: left by a rotation that was
    abandoned or taken over, or by a late write); else `previous` for one that was `current`; None leaves it as
    it is (a live pending one, unknown, retired)."""
    if version.stage not in (VersionStage.CURRENT, VersionStage.PREVIOUS, VersionStage.PENDING):
        return None
    if version.key_id not in live:
        return VersionStage.RETIRED
    return VersionStage.PREVIOUS if version.stage is VersionStage.CURRENT else None


async def reconcile_tags(run: Advance, versions: Iterable[StoredVersion], live: set[str], keep: str) -> None:
    """Move every version's tag to what Entra ID holds now (`superseded_stage`), all but `keep`, the version in
    use (never demoted: Key Vault keeps a `current`). Idempotent: a re-run after a crash moves what is left."""
    for version in versions:
        if version.version == keep:
            continue
        wanted = superseded_stage(version, live)
        if wanted is not None and wanted is not version.stage:
            await run.ports.secrets.demote(run.target, version, wanted)


def gone_keys(state: RotationState, present: set[str]) -> tuple[str, ...]:
    """The keys the row knows from superseded versions (`superseded`, `retiring`) that Entra ID no longer holds:
    removed by this pass, by one killed before its tag move, or by hand (the Entra portal). Read from the app this
    pass has already read: the signal that the Key Vault tags must be reconciled."""
    return tuple(k for k in dict.fromkeys((*state.retiring, *state.superseded)) if k not in present)


async def follow_entra(run: Advance, app: Application, present: set[str]) -> str:
    """When a key the row knows is gone from Entra ID (`gone_keys`): tag its Key Vault versions as Entra ID holds
    now (`reconcile_tags`), then forget it. The row keeps the key until the tags moved, so a kill in between is
    finished by the next pass. Reads nothing from Key Vault when no known key is gone. Returns what failed (the
    tags, recorded as an event; the key stays known and the next pass tries again), or "" when nothing did."""
    if not gone_keys(run.target.state, present):
        return ""
    await run.hold_lease()  # work to do: an idle target was assessed without the lease
    state = run.target.state
    live = live_keys((c for c in app.credentials if c.key_id in present), run.now())
    try:
        await reconcile_tags(run, await run.ports.secrets.versions(run.target), live, keep=state.current_version)
    except RotationError as error:
        await run.event("retire", "tag-failed", error)
        return f"Key Vault tags: {error.code}"
    await run.save(run.target.with_state(superseded=tuple(k for k in state.superseded if k in present),
                                         retiring=tuple(k for k in state.retiring if k in present)))
    return ""


async def retire(run: Advance) -> None:
    """Idle: remove superseded credentials after the grace period, and expired ones, by the rules; then tag the
    Key Vault versions of every credential gone `retired` (`follow_entra`), whoever removed it.

    Every removal is tried, whatever happened to the one before; each failure is recorded and all are reported.
    The keys being removed are written to the row (`retiring`) before the first removal and cleared only once the
    tags follow Entra ID, so a crash between a removal and its tag move is finished by the next pass. A healthy
    target with no known key gone from Entra ID reads nothing from Key Vault.
    """
    # The snapshot read earlier in this advance is enough: only credentials listed in it are removed.
    app = await run.application()
    present = {c.key_id for c in app.credentials}
    awaiting = any(a.awaiting_sync for a in run.target.state.acks.values())
    removable, _ = retirement_plan(app.credentials, run.target.state, run.now(), run.config.retire_other_expired)
    if awaiting or removable or run.target.state.retiring or gone_keys(run.target.state, present):
        await run.hold_lease()  # work to do: an idle target was assessed without the lease
    proven = await sync_proof(run)
    # Where Entra's sign-in records are readable: the new key signed in since the push, the old ones went quiet.
    evidence = await sign_in_proof(run, app)
    state = run.target.state
    # A key a destination demonstrably uses (its reported expiry names it, after its sync: shared/drift.py) is never
    # removed, whatever else allows it: the drift alert tells a human; the next check (daily while drift holds)
    # frees it.
    # A superseded key a drift finding names (Proofpoint's expiry matching several keys, none the rotator's: it may
    # be the one in use) is kept alike until the drift clears.
    named = frozenset(k for k in state.superseded if k in run.target.observed.drift_kept)
    reported = frozenset(run.target.observed.uses.values()) | named
    removals, others = retirement_plan(app.credentials, state, run.now(), run.config.retire_other_expired,
                                       sync_proven=proven and evidence.allows, keep=evidence.keep | reported)
    if len(others) != run.target.observed.other_credentials:
        # Reported, never removed: live credentials someone else made on the app.
        await run.save(run.target.with_observed(other_credentials=len(others)))
    if removals:
        retiring = tuple(dict.fromkeys((*state.retiring, *(r.key_id for r in removals))))
        if retiring != state.retiring:
            await run.save(run.target.with_state(retiring=retiring))  # before the first removal (write-ahead)
    failures: list[str] = []
    for removal in removals:
        await run.keep_lease()
        started = time.monotonic()
        try:
            await run.ports.directory.remove_password(run.target.tenant_id, app.object_id, removal.key_id)
        except RotationError as error:
            await run.event("retire", "failed", error, started=started, detail=f"key {removal.key_id}")
            failures.append(f"key {removal.key_id}: {error.code}")
            continue
        present.discard(removal.key_id)  # a failed removal stays present: retried next pass
        # A superseded key's record names the evidence that let it go (sign-ins, or the destinations' syncs).
        basis = f"; {evidence.basis}" if removal.reason == "superseded" and evidence.basis else ""
        await run.event("retire", removal.reason, started=started, detail=f"key {removal.key_id}{basis}")
    if tags_failed := await follow_entra(run, app, present):
        failures.append(tags_failed)
    if failures:
        raise RotationError(f"{len(failures)} retirement step(s) failed: {'; '.join(failures)}",
                            code="RetirementIncomplete")


async def sync_proof(run: Advance) -> bool:
    """Whether every destination that reports its own sync has synced with the secret in use since the push.

    Read-only towards the destinations. A sync that moved past the push is recorded on the acknowledgement (never
    asked again); a day without one keeps the old secret, flags the target (`needsHuman`) and raises
    `sync-not-confirmed` once, on entering that state; a confirmed sync clears the flag. Re-running converges:
    the verdict is recomputed from the row and the destination's answer.
    """
    if not any(a.awaiting_sync for a in run.target.state.acks.values()):
        return True
    check = await check_syncs(run.target, run.ports.destinations, run.now(), run.config.sync_window, run.reported)
    for name in check.confirmed:
        await run.event(f"sync:{name}", "confirmed", detail=f"last successful sync {check.acks[name].synced_at}")
    for name, error in check.errors.items():
        await run.event(f"sync:{name}", "unreadable", error)
    flag = "; ".join(check.overdue.values())
    flagged = run.target.observed.needs_human
    was_sync_flag = flagged.startswith(SYNC_NOT_CONFIRMED)
    needs_human = f"{SYNC_NOT_CONFIRMED}: {flag}" if flag else ("" if was_sync_flag else flagged)
    if flag and not was_sync_flag:
        # Before the flag is saved: a crash in between raises it again on the next pass, never loses it.
        await run.event("sync", SYNC_NOT_CONFIRMED, detail=flag)
        await run.alert(SYNC_NOT_CONFIRMED, flag, destinations=", ".join(check.overdue))
    if check.confirmed or needs_human != flagged:
        await run.save(run.target.with_state(acks=check.acks).with_observed(needs_human=needs_human))
    return check.all_confirmed
