"""The alert book on real Tables (Azurite): one record and one post per condition, target and day among concurrent
runners, a resolved note once, and every crash or refusal retried without a second record."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables.aio import TableClient

from shared.alerts import AlertBook, Notice, NoticeKind
from shared.alerts.book import RETRY_AFTER
from shared.errors import RotationError
from shared.ports import Alert

T, A = "8b6f3f7e-2b1a-4c55-9d8e-1f2a3b4c5d6e", "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
STUCK = Alert("stuck", T, A, "rotation r has been in stage verified", "Woodgrove", {"stage": "verified"})
FAILING = Alert("destination-failing", T, A, "helpdesk: HTTP 500", "Woodgrove", {"destination": "helpdesk"})


@dataclass
class Clock:
    at: datetime = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


@dataclass
class Channel:
    """A channel recording every notice; answers the queued statuses (then 200), or raises for None."""

    kind: str = "json"
    sent: list[Notice] = field(default_factory=list)
    answers: list[int | None] = field(default_factory=list)
    delay: float = 0.0

    async def _answer(self, notice: Notice) -> int:
        await asyncio.sleep(self.delay)
        self.sent.append(notice)
        status = self.answers.pop(0) if self.answers else 200
        if status is None:
            raise RotationError("the alert webhook is unreachable: ClientConnectorError", code="WebhookUnreachable")
        return status

    async def send(self, notice: Notice) -> int:
        return await self._answer(notice)

    async def resolve(self, notice: Notice) -> int:
        return await self._answer(notice)

    def of(self, kind: NoticeKind, condition: str = "stuck") -> list[Notice]:
        return [n for n in self.sent if n.kind is kind and n.condition == condition]


@pytest.fixture
async def table() -> AsyncIterator[TableClient]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run through scripts/with-azurite.sh")
    client = TableClient.from_connection_string(connection, table_name=f"t{uuid.uuid4().hex[:12]}alerts")
    try:
        yield client
    finally:
        await client.delete_table()
        await client.close()


def records(caplog: pytest.LogCaptureFixture, event: str, condition: str = "stuck") -> int:
    return sum(getattr(r, "event", "") == event and getattr(r, "condition", "") == condition for r in caplog.records)


async def test_concurrent_runners_tell_once(table: TableClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel(delay=0.05)
    books = [AlertBook(table, clock, channel) for _ in range(6)]  # six workers, one table
    await asyncio.gather(*(b.raise_alert(STUCK) for b in books))
    assert len(channel.of(NoticeKind.ALERT)) == 1 and records(caplog, "alert") == 1
    await asyncio.gather(*(b.settle(T, A, frozenset()) for b in books))
    assert len(channel.of(NoticeKind.RESOLVED)) == 1 and records(caplog, "alert-resolved") == 1
    # Re-running changes nothing: the resolution is recorded.
    await asyncio.gather(*(b.settle(T, A, frozenset()) for b in books))
    assert len(channel.sent) == 2


async def test_a_refused_post_is_retried_by_the_next_occurrence_not_relogged(
    table: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel(answers=[400, None])
    book = AlertBook(table, clock, channel)
    await book.raise_alert(STUCK)  # 400
    await book.raise_alert(STUCK)  # unreachable
    await book.raise_alert(STUCK)  # 200
    await book.raise_alert(STUCK)  # told: nothing
    assert len(channel.of(NoticeKind.ALERT)) == 3 and records(caplog, "alert") == 1


async def test_a_post_cut_by_a_crash_is_retried_once_its_window_passed(table: TableClient) -> None:
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    # The crash: the claim was written (Attempt set, Told false) and the process died before posting.
    crashed = AlertBook(table, clock, Channel(answers=[]))
    crashed.channel = None  # claim as a channel-less book would, then mark the row as a cut post
    await crashed.raise_alert(STUCK)
    entity = next(iter([e async for e in table.list_entities()]))
    await table.update_entity({"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"],
                               "Told": False, "Attempt": clock.at.isoformat()})
    await book.raise_alert(STUCK)
    assert channel.sent == []  # a post may still be in flight
    clock.at += RETRY_AFTER + timedelta(seconds=1)
    await book.raise_alert(STUCK)
    assert len(channel.of(NoticeKind.ALERT)) == 1


async def test_once_a_day_while_it_holds_and_a_flap_is_not_a_second_record(
    table: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    await book.raise_alert(STUCK)
    held = frozenset({("stuck", "")})
    await book.settle(T, A, held)
    clock.at += timedelta(hours=12)  # 18:00 the same day
    await book.settle(T, A, held)
    assert records(caplog, "alert") == 1
    # Gone, then back the same day: resolved once, and no second alert record that day.
    await book.settle(T, A, frozenset())
    await book.raise_alert(STUCK)
    assert records(caplog, "alert-resolved") == 1 and records(caplog, "alert") == 1
    # The next day, still holding: the settle of the pass tells it again (the engine raises some only on entry).
    clock.at += timedelta(hours=7)
    await book.settle(T, A, held)
    await book.raise_alert(STUCK)
    assert records(caplog, "alert") == 2 and len(channel.of(NoticeKind.ALERT)) == 2


@pytest.mark.parametrize("channel_kind", ["json", None])
async def test_a_quiet_reopening_clears_quietly_and_is_told_the_next_day(
    table: TableClient, caplog: pytest.LogCaptureFixture, channel_kind: str | None
) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel if channel_kind else None)
    await book.raise_alert(STUCK)
    # Clears, comes back, clears, comes back and clears again the same UTC day: one alert, one resolution.
    for _ in range(3):
        await book.settle(T, A, frozenset())
        clock.at += timedelta(minutes=5)
        await book.raise_alert(STUCK)
        clock.at += timedelta(minutes=5)
    await book.settle(T, A, frozenset())
    await book.redeliver()
    assert records(caplog, "alert") == 1 and records(caplog, "alert-resolved") == 1
    if channel_kind:
        assert [n.kind for n in channel.sent] == [NoticeKind.ALERT, NoticeKind.RESOLVED]
    # Quietly open again, and still open the next day: that day's alert is told as any other, and it resolves.
    await book.raise_alert(STUCK)
    clock.at += timedelta(days=1)
    held = frozenset({("stuck", "")})
    await book.settle(T, A, held)
    await book.settle(T, A, frozenset())
    assert records(caplog, "alert") == 2 and records(caplog, "alert-resolved") == 2
    if channel_kind:
        assert [n.kind for n in channel.sent] == [NoticeKind.ALERT, NoticeKind.RESOLVED] * 2


async def test_a_quiet_reopening_still_owes_a_resolved_note_the_channel_refused(
    table: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    await book.raise_alert(STUCK)
    channel.answers = [503]
    await book.settle(T, A, frozenset())  # the resolved note refused
    await book.raise_alert(STUCK)  # back the same day: quietly
    clock.at += RETRY_AFTER + timedelta(seconds=1)
    await book.settle(T, A, frozenset())  # clears again: the note still owed is posted, no second record
    await book.redeliver()
    assert [n.kind for n in channel.sent] == [NoticeKind.ALERT, NoticeKind.RESOLVED, NoticeKind.RESOLVED]
    assert records(caplog, "alert-resolved") == 1 and records(caplog, "alert") == 1


async def test_destinations_are_conditions_of_their_own(table: TableClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    other = Alert(FAILING.condition, T, A, "portal: HTTP 503", "Woodgrove", {"destination": "portal"})
    await book.raise_alert(FAILING)
    await book.raise_alert(other)
    assert records(caplog, "alert", "destination-failing") == 2
    await book.settle(T, A, frozenset({("destination-failing", "portal")}))
    [resolved] = channel.of(NoticeKind.RESOLVED, "destination-failing")
    assert resolved.details["destination"] == "helpdesk"


async def test_a_refused_resolved_note_is_retried_once_not_relogged(
    table: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    await book.raise_alert(STUCK)
    channel.answers = [503]
    await book.settle(T, A, frozenset())
    await book.settle(T, A, frozenset())
    await book.settle(T, A, frozenset())
    assert [n.kind for n in channel.sent] == [NoticeKind.ALERT, NoticeKind.RESOLVED, NoticeKind.RESOLVED]
    assert records(caplog, "alert-resolved") == 1


async def test_without_a_channel_the_records_alone(table: TableClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    book = AlertBook(table, clock)
    for _ in range(3):
        await book.raise_alert(STUCK)
        await book.settle(T, A, frozenset({("stuck", "")}))
    await book.settle(T, A, frozenset())
    await book.settle(T, A, frozenset())
    assert records(caplog, "alert") == 1 and records(caplog, "alert-resolved") == 1


async def test_an_unavailable_book_still_tells(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # Nothing listens on port 9: every Tables call fails; one more message beats a silent condition.
    unreachable = TableClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + "A" * 88
        + ";TableEndpoint=http://127.0.0.1:9/devstoreaccount1;", table_name="alerts", retry_total=0)
    channel = Channel()
    async with unreachable:
        book = AlertBook(unreachable, Clock(), channel)
        await book.raise_alert(STUCK)
        await book.settle(T, A, frozenset())  # never raises
    assert len(channel.of(NoticeKind.ALERT)) == 1 and records(caplog, "alert") == 1


def test_notice_titles_name_the_customer() -> None:
    at = Clock().at
    title = Notice(NoticeKind.ALERT, "stuck", T, A, "m", at, "Woodgrove").title
    assert title == "Sync-secret rotator: stuck (Woodgrove)"
    assert Notice(NoticeKind.RESOLVED, "stuck", T, A, "m", at).title == f"Sync-secret rotator: resolved: stuck ({T})"




async def test_long_details_and_an_unreadable_row_never_break_a_settle(table: TableClient) -> None:
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    huge = Alert("stuck", T, A, "m" * 10_000, "Woodgrove", {f"k{i}": "v" * 5000 for i in range(40)})
    await book.raise_alert(huge)
    await table.create_entity({"PartitionKey": f"{T}_{A}", "RowKey": "garbled", "Condition": "stuck",
                               "Details": "{not json"})
    await book.settle(T, A, frozenset())  # never raises
    [resolved] = channel.of(NoticeKind.RESOLVED)
    assert len(resolved.details) == 20 and all(len(v) == 1000 for v in resolved.details.values())


async def test_each_pass_redelivers_what_the_channel_refused(table: TableClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock, channel = Clock(), Channel()
    book = AlertBook(table, clock, channel)
    await book.raise_alert(STUCK)
    channel.answers = [503]
    await book.settle(T, A, frozenset())  # the resolved note is refused; the target is quiet from now on
    channel.answers = [500]
    await book.raise_alert(FAILING)  # today's alert refused too
    await book.redeliver()
    assert {(n.kind, n.condition) for n in channel.sent[-2:]} == {
        (NoticeKind.RESOLVED, "stuck"), (NoticeKind.ALERT, "destination-failing")}
    sent = len(channel.sent)
    await book.redeliver()
    assert len(channel.sent) == sent, "delivered: never again"
    assert records(caplog, "alert-resolved") == 1 and records(caplog, "alert", "destination-failing") == 1
    # An alert refused yesterday is not redelivered today: today's occurrence tells it afresh.
    channel.answers = [500]
    await book.raise_alert(Alert("expired", T, A, "expired", "Woodgrove"))
    clock.at += timedelta(days=1)
    await book.redeliver()
    assert len(channel.sent) == sent + 1
