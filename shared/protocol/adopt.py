"""A version of a target's Key Vault secret written by hand (not by the rotator) is adopted: proven, identified, and
then taken through the rest of the protocol (`verified` -> pushed -> `idle`) like a rotation of the rotator's own.

Key Vault's `SecretNewVersionCreated` event says which version was written, never by whom; the rotator's own versions
carry its tags (`rotation-id`, `key-id`, ...), so a version without them was written by someone else (the Azure
portal, `az keyvault secret set`). Such a value is pushed only once it got a client-credentials token for the
target's app, and only onto an idle target: a rotation in flight is never overtaken. The one write that adopts it
(ETag-guarded, with the lease) records everything the next steps need, so a crash after it is finished by the
resume pass, and a crash before it has changed nothing.
"""

from __future__ import annotations

import time
from typing import NoReturn

from shared import verify_probe
from shared.domain import Stage, credential_of, new_rotation_id
from shared.errors import Conflict, RotationError
from shared.ports import StoredVersion
from shared.protocol.context import Advance, leased_by_other
from shared.protocol.verify import prove, with_probe

HAND_WRITTEN_REFUSED = "hand-written-unverified"  # alert: a hand-written value does not get a token; not pushed
HAND_WRITTEN_NOT_ADOPTED = "hand-written-not-adopted"  # alert: it works, but cannot be adopted now (see message)


async def adopt(run: Advance, version_id: str) -> None:
    """Adopt the hand-written version `version_id` of this target: on return the row is `verified` with it, leased by
    this advance. Stops (the outcome says why) for a version that is the rotator's, already adopted, gone, refused
    or not adoptable now; Conflict when another runner holds the target (try again later)."""
    t = run.target
    stored = next((v for v in await run.ports.secrets.versions(t) if v.version == version_id), None)
    if stored is not None and stored.rotation_id:
        # The rotator's own write (its `pending` version): the protocol that wrote it takes it further.
        raise run.stop("own-version", message=f"written by the rotator (rotation {stored.rotation_id})")
    if version_id in (t.state.current_version, t.state.new_version) or (stored is not None and stored.stage):
        # In the row, or staged by the rotator since (current, previous, retired): a late copy changes nothing.
        raise run.stop("already-adopted", message=f"version {version_id} is already adopted")
    if stored is None or not stored.enabled:
        raise run.stop("unknown-version", message=f"no enabled version {version_id} of {t.secret_name}")
    if not t.enabled:
        raise run.stop("not-adopted", message=f"{t.key} is disabled in the registry: nothing is pushed for it")
    if leased_by_other(t, run.owner, run.now()):
        raise Conflict(f"another run holds {t.key}", code="Busy")
    written = described(stored)
    if t.state.stage is not Stage.IDLE:
        await not_adopted(run, f"{written} was not adopted: rotation {t.state.rotation_id} is in flight (stage "
                               f"{t.state.stage.value}); write it again once the rotation is done",
                          "RotationInFlight", stored)
    started = time.monotonic()
    secret = await run.ports.secrets.value(t, version_id)
    probe_id = verify_probe.adoption_id(version_id)
    refusal = await prove(run, secret, stored.created or run.now(), probe_id)
    if refusal is not None:
        code = refusal.code or "TokenRefused"
        error = RotationError(f"{written} does not get a token: {refusal.message}; it is not pushed", code=code)
        await run.event("adopt", "refused", error, started=started)
        await run.alert(HAND_WRITTEN_REFUSED, error.message, error_code=code, version=version_id,
                        author=stored.author or "unknown")
        raise run.stop("not-adopted", error)
    run.forget_application()
    app = await run.application()
    now = run.now()
    credential = credential_of(app.credentials, secret, now)
    expires = credential.end if credential is not None else stored.expires
    if expires is None:
        await not_adopted(run, f"{written} works, but neither Entra ID (no credential with its hint) nor Key Vault "
                               "(no expiry on the version) tells when it expires; set the version's expiry and "
                               "write it again", "ExpiryUnknown", stored)
    key_id = credential.key_id if credential is not None else ""
    current = t.state.current_key_id
    # Only an identified credential supersedes the one in use: an unidentified value may be that very credential's.
    replaces = (current,) if key_id and current and current != key_id else ()
    await run.save(t.with_state(
        stage=Stage.VERIFIED, stage_since=now, rotation_id=new_rotation_id(), actor=run.actor, new_key_id=key_id,
        new_version=version_id, new_expires=expires, replaces=replaces, acks={}, push_failures={}, **run.lease(),
        probes=with_probe(t.state.probes, current, key_id, probe_id),
    ))
    which = f"credential {key_id}" if key_id else "an unidentified credential (hand-made; Graph shows no matching hint)"
    await run.event("adopt", "ok", started=started, detail=f"{written}: {which}, expires {expires.isoformat()}")


def described(version: StoredVersion) -> str:
    """How the audit trail names a hand-written version and its writer (Key Vault records none)."""
    author = f"by {version.author}" if version.author else "author not recorded (no `author` tag)"
    return f"hand-written version {version.version} ({author})"


async def not_adopted(run: Advance, message: str, code: str, stored: StoredVersion) -> NoReturn:
    """A working hand-written value that is not adopted now: audit, alert, stop; nothing changed."""
    error = RotationError(message, code=code)
    await run.event("adopt", "not-adopted", error)
    await run.alert(HAND_WRITTEN_NOT_ADOPTED, message, error_code=code, version=stored.version,
                    author=stored.author or "unknown")
    raise run.stop("not-adopted", error)
