"""Retirement on a destination's own sync, on plain data: the verdict and the acknowledgement it starts from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain import Ack, SyncVerdict, sync_verdict
from shared.ports import Confirmation
from shared.sync_proof import acknowledgement

PUSH = datetime(2026, 3, 1, 12, 0, 30, 500000, tzinfo=UTC)
DAY = timedelta(hours=24)


def test_an_acknowledgement_owes_a_sync_only_where_the_destination_reports_one() -> None:
    assert acknowledgement("k", PUSH, None) == Ack("k", PUSH)
    silent = acknowledgement("k", PUSH, Confirmation(("application-id",)))
    assert silent.sync_after is None and not silent.awaiting_sync and silent.checks == ("application-id",)
    never_synced = acknowledgement("k", PUSH, Confirmation(("sync-reported",), sync_reported=True))
    assert never_synced.sync_after == PUSH and never_synced.awaiting_sync
    # The destination's clock ran ahead: its last sync (before our push) already looks later than the push.
    ahead = PUSH + timedelta(minutes=3)
    assert acknowledgement("k", PUSH, Confirmation((), True, ahead)).sync_after == ahead
    assert acknowledgement("k", PUSH, Confirmation((), True, PUSH - DAY)).sync_after == PUSH


def test_the_verdict_needs_a_sync_strictly_later_than_the_push_within_a_day() -> None:
    ack = Ack("k", PUSH, sync_after=PUSH)
    assert sync_verdict(Ack("k", PUSH), None, PUSH, DAY) is SyncVerdict.NOT_REPORTED
    assert sync_verdict(ack, None, PUSH + timedelta(hours=1), DAY) is SyncVerdict.WAITING
    # Proofpoint writes whole seconds: a sync stamped in the push's own second may have run before it.
    assert sync_verdict(ack, PUSH.replace(microsecond=0), PUSH + timedelta(hours=1), DAY) is SyncVerdict.WAITING
    assert sync_verdict(ack, PUSH + timedelta(seconds=1), PUSH + timedelta(hours=1), DAY) is SyncVerdict.CONFIRMED
    assert sync_verdict(ack, PUSH - timedelta(hours=1), PUSH + DAY, DAY) is SyncVerdict.NOT_CONFIRMED
    assert sync_verdict(ack, PUSH + timedelta(hours=30), PUSH + DAY * 2, DAY) is SyncVerdict.CONFIRMED
    done = Ack("k", PUSH, sync_after=PUSH, synced_at=PUSH + timedelta(hours=5))
    assert sync_verdict(done, None, PUSH + DAY * 3, DAY) is SyncVerdict.CONFIRMED
