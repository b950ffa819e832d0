"""The warnings pass survives a crash at any point: cut after any number of the book's writes (a warning told, an app
settled), the next pass tells exactly what was not told yet and resolves exactly once; nothing twice, nothing lost."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from shared.alerts import AlertBook, NoticeKind
from shared.conditions import Condition
from shared.ports import Alert
from shared.warning_pass import run_warnings
from tests.alerts.test_book import Channel, Clock, table  # noqa: F401 - the Azurite table fixture
from tests.fakes import FakeInventory
from tests.warnings.test_pass import Rules, target
from tests.warnings.test_rules import NOW, OTHER_T, T, cred


class Crash(Exception):
    """The process died."""


class Cut:
    """The real book, cut after `after` calls (a crash between two writes of a pass)."""

    def __init__(self, book: AlertBook, after: int) -> None:
        self.book, self.left = book, after

    def _step(self) -> None:
        if self.left == 0:
            raise Crash
        self.left -= 1

    async def raise_alert(self, alert: Alert) -> None:
        self._step()
        await self.book.raise_alert(alert)

    async def settle_stages(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None:
        self._step()
        await self.book.settle_stages(tenant_id, app_id, holding)

    async def staged_apps(self, tenant_id: str) -> set[str]:
        return await self.book.staged_apps(tenant_id)

    async def staged_tenants(self) -> set[str]:
        return await self.book.staged_tenants()


async def fleet() -> tuple[FakeInventory, list[Any]]:
    inventory = FakeInventory()
    rows = [cred(10, key="k1", app="app-1"), cred(3, key="k2", app="app-2"), cred(50, key="k3", app="app-3"),
            cred(12, key="k4", app="app-4", tenant=OTHER_T)]
    for r in rows:
        await inventory.put_objects(r.tenant_id, r.object_kind, {r.object_id: [r]})
    return inventory, [target(T, "app-x", "k-x", 300), target(OTHER_T, "app-y", "k-y", 300)]


def tally(channel: Channel, kind: NoticeKind) -> Counter[tuple[str, str]]:
    return Counter((n.condition, n.details["key_id"]) for n in channel.sent if n.kind is kind)


@pytest.mark.parametrize("after", range(0, 9))
async def test_a_pass_cut_anywhere_is_finished_by_the_next_with_nothing_twice(
        table: TableClient, after: int) -> None:  # noqa: F811
    clock, channel = Clock(NOW), Channel()
    book = AlertBook(table, clock, channel)
    inventory, targets = await fleet()
    try:
        await run_warnings(inventory, Rules(), Cut(book, after), targets, NOW, 30, concurrency=1)
    except Crash:
        pass
    await run_warnings(inventory, Rules(), book, targets, NOW, 30)
    await run_warnings(inventory, Rules(), book, targets, NOW, 30)
    assert tally(channel, NoticeKind.ALERT) == Counter({("expiring-14d", "k1"): 1, ("expiring-7d", "k2"): 1,
                                                        ("expiring-60d", "k3"): 1, ("expiring-14d", "k4"): 1})
    # Every credential renewed: one resolution each, even if the resolving pass is cut.
    for old in list(inventory.rows.values()):
        new = cred(700, key=f"n-{old.key_id}", app=old.app_id, tenant=old.tenant_id)
        await inventory.put_objects(old.tenant_id, old.object_kind, {old.object_id: [old, new]})
    clock.at = NOW + timedelta(hours=1)
    try:
        await run_warnings(inventory, Rules(), Cut(book, after // 2), targets, clock.at, 30, concurrency=1)
    except Crash:
        pass
    await run_warnings(inventory, Rules(), book, targets, clock.at, 30)
    await run_warnings(inventory, Rules(), book, targets, clock.at, 30)
    assert tally(channel, NoticeKind.RESOLVED) == Counter({("expiring-14d", "k1"): 1, ("expiring-7d", "k2"): 1,
                                                           ("expiring-60d", "k3"): 1, ("expiring-14d", "k4"): 1})
