"""Stage pending: prove the new secret gets a token, waiting out the identity platform's propagation delay."""

from __future__ import annotations

import time

from shared.domain import Stage
from shared.errors import RotationError
from shared.protocol.context import Advance


async def verify(run: Advance) -> None:
    """A client-credentials token with the new secret, retried until VERIFY_TIMEOUT; then `verified`."""
    s = run.target.state
    secret = await run.ports.secrets.value(run.target, s.new_version)
    started = time.monotonic()
    deadline = run.now() + run.config.verify_timeout
    delay = 1.0
    while True:
        problem = await run.ports.probe.try_token(run.target.tenant_id, run.target.app_id, secret)
        if problem is None:
            break
        if run.now() >= deadline:
            error = RotationError(f"the new secret does not get a token yet: {problem}", code="NotVerified")
            await run.event("verify", "failed", error, started=started)
            raise run.stop("unverified", error)
        await run.ports.sleep(delay)
        delay = min(delay * 2, 10.0)
    await run.event("verify", "ok", started=started)
    await run.move(Stage.VERIFIED)
