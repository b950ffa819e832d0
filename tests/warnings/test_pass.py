"""The warnings pass on fakes: registered targets' current secrets join the inventory's rows, exclusions and
thresholds per tenant, a failing tenant reported while the others are judged, and the book asked to settle every app
that holds or held a staged warning."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from shared.conditions import Condition
from shared.domain import Observation, RotationState, Target
from shared.errors import RotationError
from shared.expiry_warnings import Exclusion, new_exclusion
from shared.ports import Alert
from shared.warning_pass import run_warnings, target_credentials
from tests.fakes import FakeInventory
from tests.warnings.test_rules import APP, KEY, NOW, OTHER_T, T, cred


class Book:
    def __init__(self, held_before: dict[str, set[str]] | None = None) -> None:
        self.raised: list[Alert] = []
        self.settled: dict[tuple[str, str], frozenset[Condition]] = {}
        self.held_before = held_before or {}

    async def raise_alert(self, alert: Alert) -> None:
        self.raised.append(alert)

    async def settle_stages(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None:
        self.settled[(tenant_id, app_id)] = holding

    async def staged_apps(self, tenant_id: str) -> set[str]:
        return self.held_before.get(tenant_id, set())

    async def staged_tenants(self) -> set[str]:
        return {t for t, apps in self.held_before.items() if apps}


class Rules:
    def __init__(self, thresholds: dict[str, tuple[int, ...]] | None = None,
                 exclusions: list[Exclusion] | None = None) -> None:
        self._thresholds = thresholds or {}
        self._exclusions = exclusions or []

    async def thresholds(self) -> dict[str, tuple[int, ...]]:
        return self._thresholds

    async def exclusions(self, tenant_id: str = "") -> list[Exclusion]:
        return [e for e in self._exclusions if not tenant_id or e.tenant_id == tenant_id]


def target(tenant: str, app: str, key: str, days: int | None, renew_before: int | None = None) -> Target:
    t = Target(tenant, app, "Contoso", state=RotationState(current_key_id=key),
               observed=Observation(expires=None if days is None else NOW + timedelta(days=days, hours=1)))
    if renew_before is not None:
        t = replace(t, policy=replace(t.policy, renew_before_days=renew_before))
    return t


def test_a_targets_current_secret_counts_once_whether_or_not_the_inventory_holds_it() -> None:
    t = target(T, APP, KEY, 5)
    [synthetic] = target_credentials([t], set())
    assert (synthetic.key_id, synthetic.managed, synthetic.days_left(NOW)) == (KEY, True, 5)
    assert target_credentials([t], {KEY}) == []
    assert target_credentials([target(T, APP, "", 5), target(T, APP, KEY, None)], set()) == []


async def test_the_pass_judges_every_tenant_with_its_own_rules_and_reports_a_failing_one() -> None:
    inventory = FakeInventory()
    backup = cred(20, key="k-backup", app="app-backup")
    other = cred(20, key="k-other", app="app-other", tenant=OTHER_T)
    await inventory.put_objects(T, backup.object_kind, {backup.object_id: [backup]})
    await inventory.put_objects(OTHER_T, other.object_kind, {other.object_id: [other]})
    snooze = new_exclusion("s", OTHER_T, "customer", snooze=True, until=NOW + timedelta(days=3), by="ann",
                           why="merger", now=NOW)
    book = Book(held_before={T: {"app-gone"}})
    # The target's secret: 1 day left; its rotator renews at 10 days, so only the customer's 2-day threshold applies.
    targets = [target(T, APP, KEY, 1, renew_before=10), target(OTHER_T, "app-x", "k-x", 300)]
    summary = await run_warnings(inventory, Rules({T: (21, 2)}, [snooze]), book, targets, NOW, 30)
    assert sorted((a.app_id, a.condition) for a in book.raised) == [(APP, "expiring-2d"),
                                                                    ("app-backup", "expiring-21d")]
    assert book.settled[(T, "app-gone")] == frozenset()  # a warning held before and gone now: resolved
    assert book.settled[(OTHER_T, "app-other")] == frozenset({("expiring-30d", "application:k-other")})
    assert (summary.tenants, summary.due, summary.failed) == (2, 2, [])

    class Broken(FakeInventory):
        async def list_credentials(self, query=None):  # type: ignore[no-untyped-def]
            if query is not None and query.tenant_id == OTHER_T:
                raise RotationError("the state store failed", code="StateStoreError")
            return await super().list_credentials(query)

    broken = Broken()
    broken.rows = inventory.rows
    book = Book()
    summary = await run_warnings(broken, Rules(), book, targets, NOW, 30)
    assert summary.failed == [OTHER_T] and summary.due == 2


async def test_a_renewal_far_beyond_the_thresholds_is_seen_although_only_near_credentials_are_listed() -> None:
    inventory = FakeInventory()
    old, new, far_app = cred(5, key="k-old"), cred(700, key="k-new"), cred(400, key="k-far", app="app-far")
    await inventory.put_objects(T, old.object_kind, {old.object_id: [old, new], far_app.object_id: [far_app]})
    book = Book(held_before={T: {APP}})
    summary = await run_warnings(inventory, Rules(), book, [target(T, "app-x", "k-x", 300)], NOW, 30)
    assert book.raised == [] and book.settled == {(T, APP): frozenset()}  # renewed: its warning resolves
    assert summary.credentials == 3  # the near one, its renewal, the target's own; not the far app's


async def test_a_disabled_targets_secret_is_warned_of_at_every_threshold() -> None:
    enabled, disabled = target(T, APP, KEY, 25), replace(target(T, APP, KEY, 25), enabled=False)
    book = Book()
    await run_warnings(FakeInventory(), Rules(), book, [enabled], NOW, 30)
    assert book.raised == []  # the rotator renews it at 30 days: no warning of its own lead time
    await run_warnings(FakeInventory(), Rules(), book, [disabled], NOW, 30)
    assert [a.condition for a in book.raised] == ["expiring-30d"]


async def test_a_tenant_whose_last_target_left_has_every_warning_it_was_told_resolved() -> None:
    inventory = FakeInventory()
    left_behind = cred(5, key="k-gone", app="app-backup", tenant=OTHER_T)  # rows of a tenant no longer registered
    await inventory.put_objects(OTHER_T, left_behind.object_kind, {left_behind.object_id: [left_behind]})
    book = Book(held_before={OTHER_T: {"app-backup", APP}, T: {"app-t"}})
    summary = await run_warnings(inventory, Rules(), book, [target(T, APP, KEY, 300)], NOW, 30)
    assert book.raised == []  # nothing new is told of a tenant the rotator no longer watches
    assert book.settled[(OTHER_T, "app-backup")] == frozenset() and book.settled[(OTHER_T, APP)] == frozenset()
    assert book.settled[(T, "app-t")] == frozenset() and summary.tenants == 1
