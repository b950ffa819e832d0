"""Retirement on a destination's own proof: its sync succeeding with the pushed secret after the push.

Proofpoint reports `last_successful_sync`; a PUT it accepted proves it stored the key, not that its sync works
with it. So the old secret waits until that sync has moved past the push, and a human is told when it has not
within a day. Used by the engine's retire step; reads destinations only (no writes, no persistence).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.domain import Ack, SyncVerdict, Target, sync_verdict
from shared.errors import RotationError
from shared.ports import Confirmation, Destination, ReportedUse, SyncReporter

log = logging.getLogger(__name__)

SYNC_NOT_CONFIRMED = "sync-not-confirmed"


@dataclass(frozen=True)
class SyncCheck:
    """What the destinations' own syncs say about the secret in use (one look, at one moment)."""

    acks: dict[str, Ack]  # the target's acknowledgements, with `synced_at` set where newly confirmed
    confirmed: tuple[str, ...] = ()  # destinations whose sync moved past the push in this look
    waiting: tuple[str, ...] = ()  # still inside the window
    overdue: dict[str, str] = field(default_factory=dict)  # destination -> what a human must know
    errors: dict[str, RotationError] = field(default_factory=dict)  # destinations that could not be read

    @property
    def all_confirmed(self) -> bool:
        """Nothing left to wait for: the superseded secret may be retired (after the grace period)."""
        return not self.waiting and not self.overdue


async def check_syncs(
    target: Target, destinations: Mapping[str, Destination], now: datetime, window: timedelta,
    reported: Mapping[str, ReportedUse] | None = None,
) -> SyncCheck:
    """Ask every destination still owing sync proof for the current secret for its last successful sync; one whose
    settings were just `reported` (by name: this advance's drift check read them) answers from that read."""
    acks = dict(target.state.acks)
    key_id = target.state.current_key_id
    confirmed: list[str] = []
    waiting: list[str] = []
    overdue: dict[str, str] = {}
    errors: dict[str, RotationError] = {}
    for config in target.destinations:
        ack = acks.get(config.name)
        if ack is None or ack.key_id != key_id or not ack.awaiting_sync:
            continue
        reporter = destinations.get(config.kind)
        last: datetime | None = None
        if reported is not None and config.name in reported:
            last = reported[config.name].last_sync  # the same settings, read moments ago in this advance
        elif isinstance(reporter, SyncReporter):
            try:
                last = await reporter.last_sync(config)
            except RotationError as error:
                errors[config.name] = error
        verdict = sync_verdict(ack, last, now, window)
        if verdict is SyncVerdict.CONFIRMED:
            acks[config.name] = replace(ack, synced_at=last)
            confirmed.append(config.name)
        elif verdict is SyncVerdict.NOT_CONFIRMED:
            seen = last.isoformat() if last else "never"
            reason = f" (reading it failed: {errors[config.name].message})" if config.name in errors else ""
            overdue[config.name] = (
                f"{config.name}: no successful sync since the new secret was pushed at {_at(ack.sync_after)} "
                f"(last successful sync: {seen}){reason}; the old secret is kept until it does"
            )
        else:
            waiting.append(config.name)
    return SyncCheck(acks, tuple(confirmed), tuple(waiting), overdue, errors)


def _at(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "?"


def acknowledgement(key_id: str, now: datetime, confirmation: Confirmation | None) -> Ack:
    """A destination's acknowledgement of a delivery, with what it showed and the sync proof it still owes."""
    if confirmation is None:
        return Ack(key_id, now)
    sync_after = None
    if confirmation.sync_reported:
        # Later than both our push and what it reported right after it (its clock may run ahead of ours).
        seen = confirmation.sync_seen
        sync_after = max(now, seen) if seen is not None else now
    return Ack(key_id, now, checks=confirmation.checks, sync_after=sync_after)
