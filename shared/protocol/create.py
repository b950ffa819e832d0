"""Stage creating: add the credential and put its value in Key Vault at once; recover a crashed attempt.

The rotation id was reserved before anything was created, and the credential's display name carries it, so a
re-run finds what an interrupted run made: its value in Key Vault (continue) or lost (remove it, start over).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import NoReturn

from shared.domain import (
    Application,
    AssessmentStatus,
    Stage,
    VersionStage,
    credential_display_name,
    lifetime_days,
    new_rotation_id,
    renew_before,
    shorter_lifetimes,
)
from shared.errors import (
    Ambiguous,
    AppNotFound,
    Conflict,
    NotOwner,
    PolicyBlocked,
    PolicyLifetime,
    RotationError,
    Throttled,
    Unreachable,
)
from shared.ports import NewCredential, Principal, StoredVersion
from shared.protocol.context import Advance
from shared.tenant_rules import (
    lifetime_capped_message,
    no_lifetime_left_message,
    not_owner_message,
    owner_details,
    policy_blocked_message,
)


async def create(run: Advance) -> None:
    """Add the credential and store its value, or recover what a crashed run of this rotation left."""
    rotation_id = run.target.state.rotation_id
    # Read fresh when resuming; right after reserving, the assessment's read of this advance is current.
    app = await run.application()
    mine = [c for c in app.credentials if c.rotation_id == rotation_id]
    if mine:
        stored = await run.ports.secrets.find_by_rotation(run.target, rotation_id)
        if stored is not None:
            await run.event("recover", "found-in-key-vault")
            await run.move(Stage.PENDING, new_key_id=stored.key_id, new_version=stored.version,
                           new_expires=stored.expires)
            return
        # The value of these credentials is lost: remove them, then start over with a new id.
        await run.keep_lease()
        for credential in mine:
            await run.ports.directory.remove_password(run.target.tenant_id, app.object_id, credential.key_id)
        await run.event("recover", "removed-lost-credential", detail=f"{len(mine)} credential(s)")
        await run.move(Stage.CREATING, rotation_id=new_rotation_id())
        return
    asked = lifetime_days(run.target.policy, run.config.lifetime_days)
    new, made = await add_password(run, app, asked)
    await still_ours(run, app, new)
    await store(run, app, new)
    # Recorded once the value is safe in Key Vault: no write stands between addPassword and the store.
    await lifetime_accepted(run, asked, made)


async def still_ours(run: Advance, app: Application, new: NewCredential) -> None:
    """After addPassword answered: when the answer came so late that the lease may have passed, make sure no other
    runner took the rotation over (an ETag-guarded renewal). If one did, its own credential carries this rotation
    id too; ours is a second one whose value only this runner holds: remove it, store nothing, stop."""
    try:
        await run.keep_lease()
    except Conflict as lost:
        await run.ports.directory.remove_password(run.target.tenant_id, app.object_id, new.credential.key_id)
        await run.event("create", "late-removed", lost,
                        detail=f"key {new.credential.key_id}: answered after the lease passed; another runner "
                               "took the rotation over")
        raise run.stop("busy", lost) from lost


async def add_password(run: Advance, app: Application, asked: int) -> tuple[NewCredential, int]:
    """addPassword valid `asked` days, and the days it was made for: when a tenant app-management policy refuses
    that lifetime (nothing is created), at once with shorter ones. The tenant's other refusals stop the rotation."""
    started = time.monotonic()
    lifetime = asked
    while True:
        try:
            new = await add_password_once(run, app, lifetime)
            run.value_only_in_memory = True
            break
        except PolicyLifetime as error:
            renew = renew_before(run.target.policy, run.config.renew_before_days)
            await run.event("create", "lifetime-refused",
                            PolicyLifetime(f"{lifetime} days refused: {error.message}", code=error.code))
            shorter = shorter_lifetimes(lifetime, renew)
            if not shorter:
                no_lifetime = PolicyLifetime(no_lifetime_left_message(asked, renew, error.message), code=error.code)
                await run.refused("create", AssessmentStatus.POLICY_BLOCKED, no_lifetime)
            lifetime = shorter[0]
        except PolicyBlocked as error:
            blocked = PolicyBlocked(policy_blocked_message(error.message), code=error.code)
            await run.refused("create", AssessmentStatus.POLICY_BLOCKED, blocked)
        except NotOwner as error:
            # Ownership was removed since the assessment (or the rotator cannot tell its own principal).
            principal = await rotator_principal(run, app)
            denied = NotOwner(f"{not_owner_message(app, principal)} ({error.message})", code=error.code)
            await run.refused("create", AssessmentStatus.NOT_OWNER, denied, details=owner_details(principal))
    await run.event("create", "ok", started=started, detail=f"key {new.credential.key_id}, {lifetime} days")
    return new, lifetime


async def rotator_principal(run: Advance, app: Application) -> Principal | None:
    """The service principal to name in a not-owner alert, when Graph tells it."""
    try:
        return (await run.ports.directory.ownership(run.target.tenant_id, app.app_id)).principal
    except RotationError:
        return None


async def lifetime_accepted(run: Advance, asked: int, made: int) -> None:
    """Record and tell that the tenant's policy caps the lifetime (or that it no longer does)."""
    if made != asked:
        await run.save(run.target.with_observed(lifetime_cap_days=made))
        await run.event("create", "lifetime-capped", detail=f"{asked} days refused, {made} days accepted")
        await run.alert("lifetime-capped", lifetime_capped_message(asked, made),
                        asked_days=str(asked), made_days=str(made))
    elif run.target.observed.lifetime_cap_days is not None:
        await run.save(run.target.with_observed(lifetime_cap_days=None))


async def add_password_once(run: Advance, app: Application, lifetime: int) -> NewCredential:
    """addPassword, retried only where the answer says nothing was written; the tenant's refusals (owner,
    app-management policy) are raised for the caller."""
    cfg = run.config
    rotation_id = run.target.state.rotation_id
    end = run.now() + timedelta(days=lifetime)
    for attempt in range(1, cfg.create_attempts + 1):
        # Reading the app, or waiting out throttling, may have taken long: a runner whose lease has passed must not
        # start a side effect (Conflict when another runner took the rotation over meanwhile: nothing is sent).
        await run.keep_lease()
        try:
            new = await run.ports.directory.add_password(
                run.target.tenant_id, app.object_id, credential_display_name(rotation_id), end
            )
        except Throttled as error:
            # Throttling and concurrency violations say the write did not happen, so another try is safe.
            await run.event("create", "throttled", error)
            if attempt == cfg.create_attempts:
                raise run.stop("failed", error) from error
            await run.ports.sleep(error.retry_after or 2.0 * attempt)
            continue
        except Ambiguous as error:
            # The credential may exist: leave `creating`; the next run finds it by its display name.
            await run.event("create", "ambiguous", error)
            raise run.stop("failed", error) from error
        except (NotOwner, PolicyBlocked, PolicyLifetime):
            raise
        except (AppNotFound, Unreachable) as error:
            await run.abandon("create", error)
        except RotationError as error:
            # Any other definite refusal: nothing was created.
            await run.abandon("create", error)
        return new
    raise AssertionError("unreachable")


async def store(run: Advance, app: Application, new: NewCredential) -> None:
    """Put the new value in Key Vault as a pending version; compensate only when certain no version holds it.

    A write that failed with a server error or a lost connection may have taken effect: before writing again, look
    for a version carrying this rotation id and adopt it. If that cannot be known, leave `creating`: the next
    advance recovers through the rotation id.
    """
    cfg = run.config
    secrets = run.ports.secrets
    rotation_id = run.target.state.rotation_id
    started = time.monotonic()
    last_error: RotationError | None = None
    for attempt in range(1, cfg.store_attempts + 1):
        if attempt > 1:
            await run.ports.sleep((last_error.retry_after if last_error else None) or 1.0 * (attempt - 1))
        await run.keep_lease()
        try:
            version = await secrets.store_pending(run.target, rotation_id, new.credential, new.secret)
            run.value_only_in_memory = False  # in Key Vault under the rotation id: recovery finds it from here
        except RotationError as error:
            last_error = error
            await run.event("store", "retry" if attempt < cfg.store_attempts else "failed", error)
            if isinstance(error, Ambiguous):
                found = await stored_after_all(run, error)
                if found is not None:
                    run.value_only_in_memory = False
                    await run.event("store", "found-after-error", detail=f"version {found.version}")
                    await pending(run, found.key_id, found.version, found.expires or new.credential.end)
                    return
            continue
        await run.event("store", "ok", started=started, detail=f"version {version}")
        await stored_in_time(run, app, new, version)
        await pending(run, new.credential.key_id, version, new.credential.end)
        return
    assert last_error is not None
    # Every write was refused, or is known not to have taken effect: no version holds the value.
    await compensate(run, app, new.credential.key_id, last_error)


async def stored_in_time(run: Advance, app: Application, new: NewCredential, version: str) -> None:
    """After the Key Vault write answered: when so late that another runner may have taken the rotation over (it
    then removes our credential, whose value it cannot find, and starts over), the version must not stay behind
    as a `pending` one of a credential that is gone: tag it `retired` once Entra ID shows the credential gone."""
    try:
        await run.keep_lease()
    except Conflict as lost:
        run.forget_application()
        held = {c.key_id for c in (await run.application()).credentials}
        if new.credential.key_id not in held:
            for stored in await run.ports.secrets.versions(run.target):
                if stored.version == version and stored.stage is VersionStage.PENDING:
                    await run.ports.secrets.demote(run.target, stored, VersionStage.RETIRED)
        # Else the credential is live and the runner that took over adopts this version (found by rotation id),
        # or removes the credential, and its finish then retires the version (tags follow Entra ID).
        await run.event("store", "late", lost, detail=f"version {version}: answered after the lease passed")
        raise run.stop("busy", lost) from lost


async def stored_after_all(run: Advance, error: RotationError) -> StoredVersion | None:
    """After an ambiguous write: the version it may have made. When Key Vault cannot tell, leave `creating`
    (stop): removing the credential could strand a stored value, writing again could store it twice."""
    try:
        return await run.ports.secrets.find_by_rotation(run.target, run.target.state.rotation_id)
    except RotationError as listing:
        await run.event("store", "unknown", listing)
        raise run.stop("failed", error) from listing


async def pending(run: Advance, key_id: str, version: str, expires: datetime) -> None:
    await run.move(Stage.PENDING, new_key_id=key_id, new_version=version, new_expires=expires)


async def compensate(run: Advance, app: Application, key_id: str, error: RotationError) -> NoReturn:
    """Key Vault kept failing: remove the new credential so no live credential has a value nobody holds."""
    await run.keep_lease()
    await run.ports.directory.remove_password(run.target.tenant_id, app.object_id, key_id)
    await run.event("compensate", "removed-new-credential", error)
    await run.abandon("store", error)
