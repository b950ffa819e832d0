"""Stage verified: deliver the new secret to every destination that has not confirmed it; then `pushed`.

Each acknowledgement is recorded as it comes, so a re-run delivers only to the destinations still missing (and
re-delivering the same value is harmless). A destination whose push changed its other settings (drift) is held
for a human instead: never acknowledged by the rotator, never pushed again for that key.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

from shared.domain import Baseline, DestinationConfig, Stage, all_acknowledged
from shared.errors import DestinationDrift, DestinationRejected, RotationError
from shared.ports import BaselineDestination, Delivery, Destination
from shared.protocol.context import Advance
from shared.sync_proof import acknowledgement

logger = logging.getLogger(__name__)
# A baseline larger than this is not stored (one Tables string property holds 64 KiB, and the row holds more): that
# destination's push then compares its read-back with its own first read, as a destination without a baseline does.
MAX_BASELINE_CHARS = 16 * 1024


async def deliver(run: Advance) -> None:
    """Push to each destination still waiting; stop with push-incomplete unless all confirmed."""
    s = run.target.state
    waiting = [d for d in run.target.destinations
               if ((a := s.acks.get(d.name)) is None or a.key_id != s.new_key_id)
               and s.held.get(d.name) != s.new_key_id]
    if waiting:
        secret = await run.ports.secrets.value(run.target, s.new_version)
        assert s.new_expires is not None
        delivery = Delivery(
            run.target.tenant_id, run.target.app_id, s.new_key_id, secret, s.new_expires,
            run.target.customer, run.target.secret_name, s.new_version,
        )
        for config in waiting:
            await deliver_one(run, config, delivery)
    if not all_acknowledged(run.target):
        raise run.stop("push-incomplete", message="some destinations have not confirmed the new secret")
    await run.move(Stage.PUSHED)


async def deliver_one(run: Advance, config: DestinationConfig, delivery: Delivery) -> None:
    """One destination: record its acknowledgement, or count its failure and alert when a human must act."""
    started = time.monotonic()
    destination = run.ports.destinations.get(config.kind)
    try:
        if destination is None:
            raise DestinationRejected(f"no destination adapter of kind {config.kind!r}", code="UnknownKind")
        confirmation = await destination.deliver(config, await with_baseline(run, config, destination, delivery))
    except RotationError as error:
        failures = dict(run.target.state.push_failures)
        failures[config.name] = failures.get(config.name, 0) + 1
        if isinstance(error, DestinationDrift):
            # Held for this key: the next pass must not re-push and read the changed settings as the norm.
            held = {**run.target.state.held, config.name: delivery.key_id}
            await run.save(run.target.with_state(push_failures=failures, held=held)
                           .with_observed(needs_human=f"{config.name}: {error.message}"))
        else:
            await run.save(run.target.with_state(push_failures=failures))
        await run.event(f"push:{config.name}", "failed", error, started=started)
        if isinstance(error, DestinationDrift):
            await run.alert(f"{config.kind}-drift", f"{config.name}: {error.message}", destination=config.name,
                            error_code=error.code, fields=",".join(error.fields))
        elif error.code == "AwaitingAcknowledgement":
            await run.alert("notify-only-waiting", error.message, destination=config.name)
        elif failures[config.name] >= run.config.push_max_attempts or isinstance(error, DestinationRejected):
            await run.save(run.target.with_observed(needs_human=f"{config.name}: {error.message}"))
            await run.alert("destination-failing", f"{config.name}: {error.message}",
                            destination=config.name, error_code=error.code, attempts=str(failures[config.name]))
        return
    # The acknowledgement keeps what the destination showed (which confirmation was available) and, where the
    # destination reports its own sync, the moment that sync must pass before the old secret may go.
    ack = acknowledgement(delivery.key_id, run.now(), confirmation)
    acks = {**run.target.state.acks, config.name: ack}
    failures = {k: v for k, v in run.target.state.push_failures.items() if k != config.name}
    await run.save(run.target.with_state(acks=acks, push_failures=failures))
    await run.event(f"push:{config.name}", "ok", started=started, detail=", ".join(ack.checks))


async def with_baseline(
    run: Advance, config: DestinationConfig, destination: Destination, delivery: Delivery
) -> Delivery:
    """The delivery with the destination's settings before the first push of this key: read and recorded in the row
    before that push on the first attempt, taken from the row on every later one (a push re-run after a crash must
    compare with the settings before the first PUT, which may have changed them)."""
    if not isinstance(destination, BaselineDestination):
        return delivery
    stored = run.target.state.baselines.get(config.name)
    if stored is None or stored.key_id != delivery.key_id:
        settings = await destination.baseline(config)
        if len(json.dumps(settings)) > MAX_BASELINE_CHARS:
            logger.warning("destination baseline too large to keep", extra={
                "destination": config.name, "tenant_id": delivery.tenant_id, "app_id": delivery.app_id})
            return delivery
        stored = Baseline(delivery.key_id, settings)
        await run.save(run.target.with_state(baselines={**run.target.state.baselines, config.name: stored}))
    return replace(delivery, baseline=stored.settings)
