"""Staged warnings through the real alert book (Azurite): each threshold told once per credential however many
passes and days follow, a tighter threshold supersedes the looser without a note, one resolved note when the
credential is renewed or removed, and a target's own settling leaves staged warnings alone."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from azure.data.tables.aio import TableClient

from shared.alerts import AlertBook, NoticeKind
from shared.expiry_warnings import DEFAULT_THRESHOLDS, alert_of, holding_by_app, judge, new_exclusion
from tests.alerts.test_book import Channel, Clock, table  # noqa: F401 - the Azurite table fixture
from tests.warnings.test_rules import APP, KEY, NOW, T, cred


async def daily(book: AlertBook, credentials: list, clock: Clock, exclusions: tuple = ()) -> None:
    """What the warnings pass does for one tenant."""
    verdicts = judge(credentials, DEFAULT_THRESHOLDS, exclusions, clock.now())
    for v in verdicts:
        if v.warns:
            await book.raise_alert(alert_of(v))
    held = holding_by_app(verdicts)
    for app in sorted(set(held) | await book.staged_apps(T)):
        await book.settle_stages(T, app, held.get(app, frozenset()))


def told(channel: Channel, kind: NoticeKind) -> list[str]:
    return [n.condition for n in channel.sent if n.kind is kind]


async def test_each_threshold_fires_once_then_one_resolved_note_on_renewal(
        table: TableClient, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.INFO)
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    expiring = cred(35)  # ends NOW + 35 days
    for day in range(0, 33):  # a month of daily passes, some twice a day
        clock.at = NOW + timedelta(days=day)
        await daily(book, [expiring], clock)
        if day % 5 == 0:
            await daily(book, [expiring], clock)
    assert told(channel, NoticeKind.ALERT) == ["expiring-60d", "expiring-30d", "expiring-14d", "expiring-7d"]
    assert told(channel, NoticeKind.RESOLVED) == []  # superseded thresholds closed without a note
    assert sum(getattr(r, "event", "") == "alert" for r in caplog.records) == 4

    clock.at += timedelta(hours=3)
    await daily(book, [expiring, cred(700, key="66666666-6666-4666-8666-666666666666")], clock)
    assert told(channel, NoticeKind.RESOLVED) == ["expiring-7d"]
    for _ in range(2):
        clock.at += timedelta(days=1)
        await daily(book, [expiring, cred(700, key="66666666-6666-4666-8666-666666666666")], clock)
    assert told(channel, NoticeKind.RESOLVED) == ["expiring-7d"] and len(told(channel, NoticeKind.ALERT)) == 4
    assert [e async for e in table.list_entities()] == []  # the book forgot the closed warning a day later


async def test_a_removed_credential_gets_its_resolved_note_once(table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    await daily(book, [cred(10)], clock)
    clock.at += timedelta(days=1)
    await daily(book, [], clock)  # the credential left the app: no row holds it
    await daily(book, [], clock)
    assert told(channel, NoticeKind.ALERT) == ["expiring-14d"]
    assert told(channel, NoticeKind.RESOLVED) == ["expiring-14d"]
    [note] = [n for n in channel.sent if n.kind is NoticeKind.RESOLVED]
    assert (note.tenant_id, note.app_id, note.details["key_id"]) == (T, APP, KEY)


async def test_a_refused_post_is_told_again_but_a_told_warning_never_is(table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel(answers=[500])
    book = AlertBook(table, clock, channel)
    await daily(book, [cred(10)], clock)
    clock.at += timedelta(minutes=5)
    await daily(book, [cred(10)], clock)  # the first post was refused: tried again
    clock.at += timedelta(days=1)
    await daily(book, [cred(10)], clock)  # the same credential the next day: still at 14 days
    assert told(channel, NoticeKind.ALERT) == ["expiring-14d", "expiring-14d"]


async def test_a_targets_own_settling_leaves_staged_warnings_alone(table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    await daily(book, [cred(10)], clock)
    await book.settle(T, APP, frozenset())  # the rotation pass settles the same app's target conditions
    clock.at += timedelta(days=1)
    await book.settle(T, APP, frozenset())
    assert told(channel, NoticeKind.RESOLVED) == [] and await book.staged_apps(T) == {APP}
    assert await book.staged_apps("99999999-9999-4999-8999-999999999999") == set()


async def test_an_exclusion_keeps_an_open_warning_quiet_and_a_lapsed_snooze_tells_the_next_threshold(
        table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    expiring = cred(20)  # 30-day threshold crossed
    await daily(book, [expiring], clock)
    snooze = new_exclusion("s", T, "credential", key_id=KEY, snooze=True, until=NOW + timedelta(days=10), by="ann",
                           why="vendor renews it", now=NOW)
    for day in range(1, 10):  # snoozed: the open 30-day warning gets no note, the 14-day threshold is not told
        clock.at = NOW + timedelta(days=day)
        await daily(book, [expiring], clock, (snooze,))
    assert told(channel, NoticeKind.ALERT) == ["expiring-30d"] and told(channel, NoticeKind.RESOLVED) == []
    clock.at = NOW + timedelta(days=10, hours=1)  # the snooze lapsed, 9 days left
    await daily(book, [expiring], clock, (snooze,))
    await daily(book, [expiring], clock, (snooze,))
    assert told(channel, NoticeKind.ALERT) == ["expiring-30d", "expiring-14d"]
    assert told(channel, NoticeKind.RESOLVED) == []


async def test_an_exclusion_without_end_resolves_the_open_warning_once(table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    await daily(book, [cred(20)], clock)
    excluded = new_exclusion("x", T, "app", app_id=APP, snooze=False, until=None, by="ann",
                             why="the vendor renews it in its own portal", now=NOW)
    for day in range(1, 4):  # excluded for good: one resolved note, then quiet, no tighter threshold told
        clock.at = NOW + timedelta(days=day)
        await daily(book, [cred(20 - day)], clock, (excluded,))
    assert told(channel, NoticeKind.ALERT) == ["expiring-30d"]
    assert told(channel, NoticeKind.RESOLVED) == ["expiring-30d"]
    assert await book.staged_tenants() == set()  # nothing left open or owing a note


async def test_the_book_names_every_tenant_with_staged_warnings(table: TableClient) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    other = "99999999-9999-4999-8999-999999999999"
    for v in judge([cred(10), cred(5, tenant=other)], DEFAULT_THRESHOLDS, (), NOW):
        await book.raise_alert(alert_of(v))
    await book.settle(T, APP, frozenset())  # a target's own condition settling leaves staged rows alone
    assert await book.staged_tenants() == {T, other}
    await book.settle_stages(other, APP, frozenset())  # what the pass does once the tenant left the inventory
    clock.at += timedelta(days=1)
    await book.settle_stages(other, APP, frozenset())
    assert told(channel, NoticeKind.RESOLVED) == ["expiring-7d"]
    assert await book.staged_tenants() == {T}
