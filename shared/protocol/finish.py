"""Stage pushed: the new version becomes `current` in Key Vault, the old one `previous`; back to idle.
Stage idle: remove superseded credentials after the grace period, and expired ones, by the retirement rules."""

from __future__ import annotations

import time

from shared.domain import AssessmentStatus, Stage, VersionStage, days_until, retirement_plan
from shared.errors import RotationError
from shared.ports import StoredVersion
from shared.protocol.context import Advance


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
    if new.stage is not VersionStage.CURRENT:
        await secrets.promote(run.target, new)
    run.forget_application()  # read after the new credential was made: retirement below uses it too
    app = await run.application()
    now = run.now()
    live = {c.key_id for c in app.credentials if not c.expired(now)}
    for version in versions:
        if version.version == new.version:
            continue
        wanted = superseded_stage(version, live)
        if wanted is not None and wanted is not version.stage:
            await secrets.demote(run.target, version, wanted)
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
    await run.event("finish", "ok", detail=f"current key {s.new_key_id}", rotation_id=s.rotation_id)


def superseded_stage(version: StoredVersion, live: set[str]) -> VersionStage | None:
    """The stage of a version that is not the new one: `retired` once its credential is gone, else `previous`
    for one that was `current` (or still `previous`); None leaves it as it is (pending, unknown, retired)."""
    if version.stage not in (VersionStage.CURRENT, VersionStage.PREVIOUS):
        return None
    return VersionStage.PREVIOUS if version.key_id in live else VersionStage.RETIRED


async def retire(run: Advance) -> None:
    """Idle: remove superseded credentials after the grace period, and expired ones, by the rules.

    Every removal is tried, whatever happened to the one before; each failure is recorded and all are reported.
    """
    state = run.target.state
    # The snapshot read earlier in this advance is enough: only credentials listed in it are removed.
    app = await run.application()
    removals, others = retirement_plan(app.credentials, state, run.now(), run.config.retire_other_expired)
    if len(others) != run.target.observed.other_credentials:
        # Reported, never removed: live credentials someone else made on the app.
        await run.save(run.target.with_observed(other_credentials=len(others)))
    present = {c.key_id for c in app.credentials}
    failures: list[str] = []
    for removal in removals:
        started = time.monotonic()
        try:
            await run.ports.directory.remove_password(run.target.tenant_id, app.object_id, removal.key_id)
        except RotationError as error:
            await run.event("retire", "failed", error, started=started, detail=f"key {removal.key_id}")
            failures.append(f"key {removal.key_id}: {error.code}")
            continue
        present.discard(removal.key_id)
        await run.event("retire", removal.reason, started=started, detail=f"key {removal.key_id}")
    remaining = tuple(k for k in state.superseded if k in present)
    if remaining != state.superseded:
        await run.save(run.target.with_state(superseded=remaining))
    gone = {r.key_id for r in removals} - present
    if gone:
        try:
            await mark_retired(run, gone)
        except RotationError as error:
            await run.event("retire", "tag-failed", error)
            failures.append(f"Key Vault tags: {error.code}")
    if failures:
        raise RotationError(f"{len(failures)} retirement step(s) failed: {'; '.join(failures)}",
                            code="RetirementIncomplete")


async def mark_retired(run: Advance, key_ids: set[str]) -> None:
    """Tag the stored versions of removed credentials `retired` (after the removal, never before)."""
    for version in await run.ports.secrets.versions(run.target):
        if version.key_id in key_ids and version.stage in (VersionStage.CURRENT, VersionStage.PREVIOUS):
            await run.ports.secrets.demote(run.target, version, VersionStage.RETIRED)
