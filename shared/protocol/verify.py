"""Stage pending: prove the new secret gets a token, waiting out the identity platform's propagation delay only.

Only the refusal a secret gives before it has propagated (AADSTS7000215, `domain.NOT_PROPAGATED`) is waited out,
and only until VERIFY_TIMEOUT after the value was stored (the `pending` stage began). Any other refusal (the app
disabled, Conditional Access, the app or tenant not found, the secret expired...) names a cause that waiting does not
remove: the attempt ends at once, needing a human. Either way the new credential stays in Entra ID and its value in
Key Vault as `pending`, nothing is pushed and the old secret is untouched; the row says why (`needsHuman`, the
AADSTS code) and an alert is raised. Each later pass that takes the rotation (the resume timer) asks for one token,
never a loop: once the cause is fixed the rotation goes on by itself; while it is not, the alert is raised again.
"""

from __future__ import annotations

import time
from datetime import datetime

from shared import verify_probe
from shared.domain import Secret, Stage, TokenRefusal
from shared.errors import RotationError
from shared.protocol.context import Advance

VERIFY_REFUSED = "verify-refused"  # Entra refused the new secret for a cause other than propagation
VERIFY_TIMEOUT = "verify-timeout"  # still "invalid secret" after VERIFY_TIMEOUT: not propagation any more
VERIFY_FLAGS = (VERIFY_REFUSED, VERIFY_TIMEOUT)
MAX_DELAY_SECONDS = 10.0


async def verify(run: Advance) -> None:
    """A client-credentials token with the new secret; then `verified`. A refusal other than propagation, or
    propagation past VERIFY_TIMEOUT since the value was stored, ends this advance needing a human."""
    s = run.target.state
    secret = await run.ports.secrets.value(run.target, s.new_version)
    started = time.monotonic()
    probe_id = verify_probe.request_id(s.rotation_id, s.new_key_id)
    try:
        refusal = await prove(run, secret, s.stage_since or run.now(), probe_id)
    except RotationError as error:
        await run.event("verify", "failed", error, started=started)
        raise
    if refusal is not None and not refusal.not_propagated:
        await needs_human(run, VERIFY_REFUSED, refusal, started, f"Entra ID refused the new secret: {refusal.message}")
    if refusal is not None:
        waited = int(run.config.verify_timeout.total_seconds())
        await needs_human(run, VERIFY_TIMEOUT, refusal, started,
                          f"the new secret still gets no token {waited} s after it was stored: {refusal.message}")
    await run.event("verify", "ok", started=started)
    # The probe's request id is kept for the key (and the one in use's, no other): the sign-in evidence sets its
    # sign-ins aside by it. A crash before this write re-runs the probe with the same id.
    verified = run.target.with_state(stage=Stage.VERIFIED, stage_since=run.now(),
                                     probes=with_probe(s.probes, s.current_key_id, s.new_key_id, probe_id))
    if run.target.observed.needs_human.startswith(VERIFY_FLAGS):
        # The cause was fixed: the flag this step raised goes with the verification, in one write.
        verified = verified.with_observed(needs_human="", error_code="", error_message="")
    await run.save(verified)


async def prove(run: Advance, secret: Secret, since: datetime, probe_id: str) -> TokenRefusal | None:
    """Ask for a client-credentials token with `secret` until one is issued (None), or Entra refuses it for a cause
    other than propagation, or VERIFY_TIMEOUT after `since` (when the value was written) it still answers "not
    propagated yet": that refusal. An answer that says nothing about the secret (the token endpoint failed) is asked
    again until the same bound, then raised (RotationError). Every request sends `probe_id` as its request id, so
    that Entra's sign-in log names each of them the rotator's (shared/verify_probe.py)."""
    deadline = since + run.config.verify_timeout
    delay = 1.0
    while True:
        try:
            refusal = await run.ports.probe.try_token(run.target.tenant_id, run.target.app_id, secret, probe_id)
        except RotationError:
            if run.now() >= deadline:
                raise
        else:
            if refusal is None or not refusal.not_propagated or run.now() >= deadline:
                return refusal
        await run.ports.sleep(_pause(run, deadline, delay))
        delay = min(delay * 2, MAX_DELAY_SECONDS)


def with_probe(probes: dict[str, str], current: str, key_id: str, probe_id: str) -> dict[str, str]:
    """The row's probe ids once `key_id` was probed with `probe_id`: kept for that key and the key in use only."""
    kept = {k: v for k, v in probes.items() if k == current}
    return {**kept, key_id: probe_id} if key_id else kept


def _pause(run: Advance, deadline: datetime, delay: float) -> float:
    """The next wait: the backoff, cut short so that the last try falls right at the deadline."""
    left = (deadline - run.now()).total_seconds()
    return min(delay, left) if left > 0 else delay


async def needs_human(run: Advance, condition: str, refusal: TokenRefusal, started: float, message: str) -> None:
    """End the attempt: record the refusal (audit event, alert, the row's flag and AADSTS code), stay `pending`.

    The alert comes before the flag is saved: a crash in between asks for a token again on the next pass and raises
    it again, never loses it. Nothing is created, pushed or removed."""
    code = refusal.code or "TokenRefused"
    error = RotationError(message, code=code)
    await run.event("verify", condition, error, started=started)
    s = run.target.state
    await run.alert(condition, message, error_code=code, rotation_id=s.rotation_id, key_id=s.new_key_id,
                    stage=s.stage.value)
    flag = f"{condition}: {message}"
    o = run.target.observed
    if (o.needs_human, o.error_code, o.error_message) != (flag, code, message):
        await run.save(run.target.with_observed(needs_human=flag, error_code=code, error_message=message))
    raise run.stop("unverified", error)
