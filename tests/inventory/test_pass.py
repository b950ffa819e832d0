"""The inventory pass's logic on fakes (a scripted Graph and the in-memory store): a crash at any write repeats at
most one round and converges; partial delta objects keep what the store holds; a stale link restarts with a full
read that sweeps what left; removals of objects never stored are harmless; a tenant that keeps failing is reported,
the others go on."""

from __future__ import annotations

import asyncio
import base64
import gc
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from shared import inventory_pass
from shared.errors import StaleDeltaLink, Throttled
from shared.inventory import (
    MICROSOFT_TENANT,
    DirectoryObject,
    InventoryPage,
    ObjectKind,
    Removed,
    StoredObject,
    TenantPass,
)
from shared.inventory_pass import CustomerTenant, inventory_tenant, owners_refresh_due, run_inventory
from tests.fakes import Crash, FakeInventory, Faults

APP = ObjectKind.APPLICATION
TENANT = CustomerTenant("t-1", "Contoso", frozenset({"app-managed"}))


def secret(key_id: str, end: str = "2027-06-01T00:00:00Z") -> dict[str, str]:
    return {"keyId": key_id, "hint": "abc", "displayName": "s", "endDateTime": end}


def app(object_id: str, *keys: str, name: str | None = None) -> DirectoryObject:
    return DirectoryObject(APP, object_id, app_id=f"app-{object_id}", display_name=name or f"App {object_id}",
                           password_credentials=tuple(secret(k) for k in keys), key_credentials=())


class ScriptedGraph:
    """Graph's delta function for one tenant: the objects now, and which changed since each link it handed out."""

    def __init__(self, objects: list[DirectoryObject], page: int = 2) -> None:
        self.objects = {o.object_id: o for o in objects}
        self.page = page
        self.links: dict[str, list[DirectoryObject | Removed]] = {}
        self.stale: set[str] = set()
        self.reads: list[str | None] = []
        self.throttle_next = 0
        self.failing: set[ObjectKind] = set()
        self.owned: dict[str, tuple[str, ...]] = {}  # object id -> its owners now
        self.owner_reads: list[str] = []
        self.cut: set[str] = set()  # objects whose expanded owners the listing cuts (20 or more)
        self.unlisted: set[str] = set()  # objects created between the listing and the delta read
        self.listings = 0
        self.filtered: list[list[str]] = []  # each read of several objects' owners: the ids asked

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        self.owner_reads.append(object_id)
        return self.owned.get(object_id, ())

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        """Graph's list filtered on ids with $expand=owners: cut for those in `cut`, () for an id no longer held."""
        self.filtered.append(list(object_ids))
        return {i: (None if i in self.cut else self.owned.get(i, ())) if i in self.objects else ()
                for i in object_ids}

    async def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                            ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        """Graph's list with $expand=owners: every object now (the unlisted ones created after it), owners cut for
        those in `cut`."""
        self.listings += 1
        ids = [i for i in self.objects if i not in self.unlisted]
        for start in range(0, len(ids), self.page):
            yield {i: None if i in self.cut else self.owned.get(i, ()) for i in ids[start:start + self.page]}

    def change(self, item: DirectoryObject | Removed) -> None:
        for pending in self.links.values():
            pending.append(item)
        if isinstance(item, Removed):
            self.objects.pop(item.object_id, None)
        elif item.object_id in self.objects and item.password_credentials is not None:
            old = self.objects[item.object_id]
            self.objects[item.object_id] = DirectoryObject(APP, old.object_id, old.app_id, old.display_name,
                                                           item.password_credentials, old.key_credentials)
        else:
            self.objects[item.object_id] = item

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        self.reads.append(delta_link)
        if object_kind in self.failing:
            raise Throttled("slow down", code="TooManyRequests")
        if delta_link in self.stale:
            raise StaleDeltaLink("gone", code="syncStateNotFound")
        items: list[DirectoryObject | Removed] = (list(self.objects.values()) if delta_link is None
                                                  else list(self.links[delta_link]))
        new_link = f"link-{len(self.links) + 1}"
        self.links[new_link] = []
        for start in range(0, max(len(items), 1), self.page):
            if self.throttle_next:
                self.throttle_next -= 1
                raise Throttled("slow down", code="TooManyRequests")
            chunk = items[start:start + self.page]
            last = start + self.page >= len(items)
            yield InventoryPage(tuple(i for i in chunk if isinstance(i, DirectoryObject)),
                                tuple(i for i in chunk if isinstance(i, Removed)), new_link if last else None)


async def inventory_kind(graph: ScriptedGraph, store: FakeInventory, tenant: CustomerTenant, kind: ObjectKind
                         ) -> TenantPass:
    [result] = await inventory_tenant(graph, store, tenant, kinds=(kind,))
    return result


async def keys(store: FakeInventory) -> set[tuple[str, str]]:
    return {(r.object_id, r.key_id) for r in await store.list_credentials()}


async def test_first_full_then_only_changes() -> None:
    graph = ScriptedGraph([app("a", "k1"), app("b"), app("c", "k2", "k3"), app("managed", "k4")])
    store = FakeInventory()
    first = await inventory_kind(graph, store, TENANT, APP)
    assert first.full and first.objects == 4 and first.credentials == 4 and first.pages == 2
    assert await keys(store) == {("a", "k1"), ("c", "k2"), ("c", "k3"), ("managed", "k4")}
    graph.change(DirectoryObject(APP, "a", password_credentials=(secret("k1"), secret("k9"))))  # partial
    graph.change(Removed(APP, "c"))
    graph.change(Removed(APP, "never-stored"))
    second = await inventory_kind(graph, store, TENANT, APP)
    assert not second.full and second.objects == 1 and second.removed == 2
    assert await keys(store) == {("a", "k1"), ("a", "k9"), ("managed", "k4")}
    kept = [r for r in await store.list_credentials() if r.object_id == "a"]
    assert {(r.display_name, r.app_id, r.customer) for r in kept} == {("App a", "app-a", "Contoso")}
    assert graph.reads == [None, "link-1"] and store.links[("t-1", "application")] == "link-2"


async def test_an_object_without_credentials_costs_no_write_on_a_full_read() -> None:
    graph = ScriptedGraph([app("x"), app("y")])
    store = FakeInventory()
    await inventory_kind(graph, store, TENANT, APP)
    assert store.writes == 0 and await keys(store) == set()


@pytest.mark.parametrize(("write", "nth"), [("inventory.put_objects", 1), ("inventory.put_objects", 2),
                                            ("inventory.put_objects", 3), ("inventory.put_rounds", 1)])
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_crash_at_any_write_repeats_the_round_and_converges(write: str, nth: int, when: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A write a row, the last two with the link in the tenant's last write: 3 writes of rows, then the last.
    monkeypatch.setattr(inventory_pass, "FULL_READ_ROWS", 1)
    objects = [app("a", "k1"), app("b", "k2"), app("c", "k3"), app("d", "k4"), app("e", "k5")]
    faults = Faults()
    faults.crash(write, when=when, nth=nth)
    store = FakeInventory(faults)
    graph = ScriptedGraph(objects)
    with pytest.raises(Crash):
        await inventory_kind(graph, store, TENANT, APP)
    saved = write == "inventory.put_rounds" and when == "after"  # the last write done, the crash after it
    assert (("t-1", "application") in store.links) == saved  # the link is saved only with its round's last rows
    faults.revive()
    graph.change(Removed(APP, "a"))  # changes meanwhile are not lost either
    await inventory_kind(graph, store, TENANT, APP)
    assert await keys(store) == {("b", "k2"), ("c", "k3"), ("d", "k4"), ("e", "k5")}


async def test_a_crash_before_the_link_is_saved_repeats_the_delta_round() -> None:
    faults = Faults()
    store = FakeInventory(faults)
    graph = ScriptedGraph([app("a", "k1")])
    await inventory_kind(graph, store, TENANT, APP)
    graph.change(DirectoryObject(APP, "a", password_credentials=(secret("k2"),)))
    faults.crash("inventory.put_rounds", nth=2)  # the delta round's last write, which carries its link
    with pytest.raises(Crash):
        await inventory_kind(graph, store, TENANT, APP)
    assert store.links[("t-1", "application")] == "link-1"
    faults.revive()
    await inventory_kind(graph, store, TENANT, APP)  # the same round again, from the old link
    assert graph.reads[-1] == "link-1" and await keys(store) == {("a", "k2")}


async def test_the_links_ride_on_the_tenants_last_write_with_both_kinds_rows_and_are_never_saved_apart(
) -> None:
    faults = Faults()
    store = FakeInventory(faults)
    graph = ScriptedGraph([app("a", "k1"), app("b", "k2"), app("c")])
    faults.crash("inventory.save_delta_links")  # any separate save of a link would crash
    await inventory_tenant(graph, store, TENANT)  # both kinds' last rows and links: one write
    assert store.writes == 1 and set(await store.delta_links("t-1")) == set(ObjectKind)
    graph.change(DirectoryObject(APP, "b", password_credentials=(secret("k3"),)))
    await inventory_tenant(graph, store, TENANT)
    assert store.writes == 2 and await keys(store) == {("a", "k1"), ("b", "k3")}
    # A round whose last page has nothing to write (an object without credentials changed its name): its link
    # goes in the tenant's last write all the same; a crash there repeats the rounds from the old links.
    links = dict(store.links)
    graph.change(DirectoryObject(APP, "c", display_name="renamed"))
    faults.crash("inventory.put_rounds", nth=3)  # this pass's last write
    with pytest.raises(Crash):
        await inventory_tenant(graph, store, TENANT)
    assert store.links == links
    faults.revive()
    await inventory_tenant(graph, store, TENANT)
    assert graph.reads[-2:] == [links[("t-1", "application")], links[("t-1", "servicePrincipal")]]
    assert store.links != links and await keys(store) == {("a", "k1"), ("b", "k3")}


async def test_a_stale_link_restarts_with_a_full_read_that_sweeps_what_left() -> None:
    graph = ScriptedGraph([app("a", "k1"), app("b", "k2")])
    store = FakeInventory()
    await inventory_kind(graph, store, TENANT, APP)
    graph.objects.pop("b")  # left while the link went stale: no @removed will ever say so
    graph.stale.add("link-1")
    result = await inventory_kind(graph, store, TENANT, APP)
    assert result.restarted and result.full and result.removed == 1
    assert await keys(store) == {("a", "k1")} and graph.reads == [None, "link-1", None]


async def test_a_tenant_that_keeps_failing_is_reported_and_the_others_go_on() -> None:
    stale_always = ScriptedGraph([app("a", "k1")])
    stale_always.stale.add(None)  # type: ignore[arg-type]
    store = FakeInventory()
    summary = await run_inventory(stale_always, store, [TENANT], concurrency=2)
    assert summary.failed == {"t-1": "syncStateNotFound"}
    healthy = ScriptedGraph([app("a", "k1")])
    healthy.throttle_next = 1  # the adapter retries throttling; one that escapes it fails this tenant only
    other = CustomerTenant("t-2", "Fabrikam")
    summary = await run_inventory(healthy, store, [other], concurrency=2)
    assert summary.failed == {"t-2": "TooManyRequests"}
    summary = await run_inventory(healthy, store, [other], concurrency=2)
    assert not summary.failed and {r.tenant_id for r in await store.list_credentials()} == {"t-2"}


async def test_managed_marks_the_registered_targets_app() -> None:
    graph = ScriptedGraph([app("managed", "k1"), app("other", "k2")])
    graph.objects["managed"] = DirectoryObject(APP, "managed", "app-managed", "PPE", (secret("k1"),), ())
    store = FakeInventory()
    await inventory_kind(graph, store, TENANT, APP)
    assert {r.object_id: r.managed for r in await store.list_credentials()} == {"managed": True, "other": False}


async def test_a_kind_that_fails_does_not_cost_the_other_its_progress() -> None:
    graph = ScriptedGraph([app("a", "k1")])
    graph.failing.add(ObjectKind.SERVICE_PRINCIPAL)
    store = FakeInventory()
    with pytest.raises(Throttled):
        await inventory_tenant(graph, store, TENANT)
    assert set(await store.delta_links("t-1")) == {APP}  # the applications' round is kept
    assert await keys(store) == {("a", "k1")}


class PagedGraph:
    """A full read whose pages are given as they are (an initial round may carry `@removed` entries too)."""

    def __init__(self, pages: list[InventoryPage]) -> None:
        self.pages = pages

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        for page in self.pages:
            yield page

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        return ()

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        return dict.fromkeys(object_ids, ())

    async def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                            ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        yield {}


@pytest.mark.parametrize("rows_per_write", [1, 2, 99])
async def test_a_full_read_gathers_rows_over_pages_and_never_writes_an_object_removed_on_a_later_page(
        rows_per_write: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_pass, "FULL_READ_ROWS", rows_per_write)
    graph = PagedGraph([InventoryPage((app("a", "k1"), app("b", "k2", "k3"))),
                        InventoryPage((app("c", "k4"), app("empty")), (Removed(APP, "a"),)),
                        InventoryPage((app("d", "k5"),), (), "link-1")])
    store = FakeInventory()
    result = await inventory_kind(graph, store, TENANT, APP)  # type: ignore[arg-type]
    assert await keys(store) == {("b", "k2"), ("b", "k3"), ("c", "k4"), ("d", "k5")}
    assert result.objects == 5 and result.removed == 1 and store.links[("t-1", "application")] == "link-1"
    puts = store.writes - 1  # the removal of "a" is one write
    # Writes of at most FULL_READ_ROWS rows (one transaction each; an object's rows never split, so one object of
    # two rows goes alone past a limit of 1), a remainder kept for the last page, whose write carries the link.
    assert puts == {1: 3, 2: 3, 99: 1}[rows_per_write]


@pytest.mark.parametrize("rows_per_write", [1, 2, 3])
async def test_a_full_reads_last_empty_page_still_carries_the_link_on_a_write(
        rows_per_write: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Graph's last page of a full read is often empty (it only brings the deltaLink): rows are kept back so that
    # page still has a write to carry the link, whatever the limit.
    monkeypatch.setattr(inventory_pass, "FULL_READ_ROWS", rows_per_write)
    faults = Faults()
    faults.crash("inventory.save_delta_links")  # a separate save of the link would crash
    graph = PagedGraph([InventoryPage((app("a", "k1"), app("b", "k2"))), InventoryPage((app("c", "k3"),)),
                        InventoryPage((), (), "link-1")])
    store = FakeInventory(faults)
    await inventory_kind(graph, store, TENANT, APP)  # type: ignore[arg-type]
    assert store.links[("t-1", "application")] == "link-1"
    assert await keys(store) == {("a", "k1"), ("b", "k2"), ("c", "k3")}


async def test_owners_come_from_the_full_reads_listing_and_are_read_one_by_one_only_when_needed() -> None:
    microsoft = DirectoryObject(ObjectKind.SERVICE_PRINCIPAL, "ms", app_id="app-ms", display_name="Microsoft Graph",
                                password_credentials=(), key_credentials=(secret("k-ms"),),
                                app_owner_organization_id="f8cdef31-a31e-4b4a-93e4-5f571e91255a")
    graph = ScriptedGraph([app("a", "k1"), app("b"), app("c", "k2", "k3"), app("d", "k4"), app("e", "k5")])
    graph.owned = {"a": ("ann@contoso.com",), "b": ("bob@contoso.com",), "c": ("Backup Service", "cy@contoso.com"),
                   "d": tuple(f"u{i}@contoso.com" for i in range(25)), "e": ("eve@contoso.com",)}
    graph.cut = {"d"}  # 20 or more owners: the listing may have cut them
    graph.unlisted = {"e"}  # created after the listing
    store = FakeInventory()
    await inventory_kind(graph, store, TENANT, APP)
    # "e" (not listed) read with the others the listing missed, "d" (cut) one by one; "b" holds no credential.
    assert graph.listings == 1 and graph.filtered == [["e"]] and graph.owner_reads == ["d"]
    owners = {(r.object_id, r.key_id): r.owners for r in await store.list_credentials()}
    assert owners[("a", "k1")] == ("ann@contoso.com",) and owners[("e", "k5")] == ("eve@contoso.com",)
    assert owners[("c", "k2")] == owners[("c", "k3")] == ("Backup Service", "cy@contoso.com")
    assert len(owners[("d", "k4")]) == 25
    # A daily round reads the owners of objects new to the store only, together (no listing), and one by one only
    # those that read may have cut; a changed object keeps the owners it has (delta never says owners changed)
    # until its tenant's weekly listing.
    graph.owner_reads.clear()
    graph.filtered.clear()
    graph.owned.update({"a": ("dee@contoso.com",), "f": ("fay@contoso.com",), "c": ("cy@contoso.com",),
                        "g": tuple(f"g{i}@contoso.com" for i in range(21)), "h": ()})
    graph.cut.add("g")
    graph.change(DirectoryObject(APP, "a", password_credentials=(secret("k1"), secret("k9"))))
    for new_app in (app("f", "k6"), app("g", "k7"), app("h", "k8"), app("i")):
        graph.change(new_app)
    await inventory_kind(graph, store, TENANT, APP)
    # One read a page (pages of 2: a f | g h | i): "i" holds no credential, not asked; "a" is held, keeps its owners.
    assert graph.filtered == [["f"], ["g", "h"]] and graph.owner_reads == ["g"]
    assert graph.listings == 1
    owners = {(r.object_id, r.key_id): r.owners for r in await store.list_credentials()}
    assert owners[("a", "k9")] == owners[("a", "k1")] == ("ann@contoso.com",)
    assert owners[("f", "k6")] == ("fay@contoso.com",) and owners[("h", "k8")] == ()
    assert len(owners[("g", "k7")]) == 21
    # The tenant's weekly day: its owners are listed again and the objects whose owners changed are rewritten.
    day = next(date(2026, 12, d) for d in range(1, 8) if owners_refresh_due(TENANT.tenant_id, date(2026, 12, d)))
    assert not owners_refresh_due(TENANT.tenant_id, day + timedelta(days=1))
    writes = store.writes
    await inventory_tenant(graph, store, TENANT, kinds=(APP,), today=day + timedelta(days=1))
    assert graph.listings == 1 and store.writes == writes  # not its day, nothing changed: nothing read or written
    await inventory_tenant(graph, store, TENANT, kinds=(APP,), today=day)
    assert graph.listings == 2
    owners = {(r.object_id, r.key_id): r.owners for r in await store.list_credentials()}
    assert owners[("a", "k9")] == owners[("a", "k1")] == ("dee@contoso.com",)
    assert owners[("c", "k2")] == owners[("c", "k3")] == ("cy@contoso.com",)
    assert owners[("e", "k5")] == ("eve@contoso.com",) and len(owners[("d", "k4")]) == 25
    # Microsoft's principals have no owner in the customer's tenant: never asked one by one.
    sp_graph = ScriptedGraph([microsoft])
    sp_graph.cut = {"ms"}
    await inventory_kind(sp_graph, store, TENANT, ObjectKind.SERVICE_PRINCIPAL)
    assert sp_graph.owner_reads == [] and any(r.object_id == "ms" for r in await store.list_credentials())


async def test_a_tenant_is_forgotten_only_once_its_last_target_is_gone() -> None:
    from types import SimpleNamespace

    from shared.domain import Target
    from shared.inventory_pass import forget_unregistered
    from tests.fakes import FakeState

    state, store = FakeState(Faults()), FakeInventory()
    await inventory_kind(ScriptedGraph([app("a", "k1")]), store, TENANT, APP)
    await state.create_target(Target("t-1", "app-kept", "Contoso"))
    svc = SimpleNamespace(state=state, inventory=store)
    assert not await forget_unregistered(svc, "T-1")  # type: ignore[arg-type]  # another target of the tenant stays
    assert await keys(store) == {("a", "k1")}
    state.rows.clear()
    assert await forget_unregistered(svc, "t-1")  # type: ignore[arg-type]
    assert await keys(store) == set() and store.links == {}


SP = ObjectKind.SERVICE_PRINCIPAL
THUMB_A, THUMB_B = bytes(range(20)), bytes(range(1, 21))


def cert(key_id: str, thumb: bytes, usage: str = "Verify") -> dict[str, str]:
    return {"keyId": key_id, "customKeyIdentifier": base64.b64encode(thumb).decode(), "usage": usage,
            "displayName": "CN=sso", "endDateTime": "2027-03-01T00:00:00Z"}


def saml_principal(**changes: object) -> DirectoryObject:
    full = DirectoryObject(SP, "sp-1", "app-sso", "SSO app",
                           (secret("p1"), {**secret("p-saml"), "customKeyIdentifier": cert("x", THUMB_A)[
                               "customKeyIdentifier"]}),
                           (cert("c-sign", THUMB_A, "Sign"), cert("c-verify", THUMB_A), cert("c-other", THUMB_B)),
                           "0f0f0f0f-0000-4000-8000-000000000000", "Application", THUMB_A.hex().upper())
    return replace(full, **changes)  # type: ignore[arg-type]


class Rounds:
    """A full read of the given objects, then one delta page with the given partial objects."""

    def __init__(self, full: list[DirectoryObject], changed: list[DirectoryObject]) -> None:
        self.full, self.changed = full, changed

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        mine = [o for o in (self.changed if delta_link else self.full) if o.object_kind is object_kind]
        yield InventoryPage(tuple(mine), (), "l2" if delta_link else "l1")

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        return (f"owner-of-{object_id}@contoso.com",)

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        return {i: (f"owner-of-{i}@contoso.com",) for i in object_ids}

    async def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                            ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        # Owners as the full read lists them: a delta round keeps them, by the index path as by the rows path.
        yield {o.object_id: (f"owner-of-{o.object_id}@contoso.com",) for o in self.full if o.object_kind is object_kind}


class RowsOnly(FakeInventory):
    """A store whose index says nothing of the rows (an index row written before it kept them): rows are read."""

    async def objects_known(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, StoredObject | None]:
        return dict.fromkeys(await super().objects_known(tenant_id, object_kind, object_ids))


PARTIAL = {  # a partial object as a delta page may bring it: only what changed, by its id
    "a new secret": dict(password_credentials=(secret("p1"), secret("p2")), key_credentials=None, app_id=None,
                         display_name=None, app_owner_organization_id=None, service_principal_type=None,
                         preferred_token_signing_key_thumbprint=None),
    "a certificate removed": dict(password_credentials=None, key_credentials=(cert("c-sign", THUMB_A, "Sign"),),
                                  app_id=None, display_name=None, app_owner_organization_id=None,
                                  service_principal_type=None, preferred_token_signing_key_thumbprint=None),
    "renamed": dict(password_credentials=None, key_credentials=None, app_id=None, display_name="SSO renamed",
                    app_owner_organization_id=None, service_principal_type=None,
                    preferred_token_signing_key_thumbprint=None),
    "now Microsoft's": dict(password_credentials=None, key_credentials=None, app_id=None, display_name=None,
                            app_owner_organization_id=MICROSOFT_TENANT, service_principal_type=None,
                            preferred_token_signing_key_thumbprint=None),
    "signing moved": dict(password_credentials=None, key_credentials=None, app_id=None, display_name=None,
                          app_owner_organization_id=None, service_principal_type=None,
                          preferred_token_signing_key_thumbprint=THUMB_B.hex().upper()),
    "signing moved with its keys": dict(password_credentials=None, key_credentials=(cert("c-other", THUMB_B, "Sign"),),
                                        app_id=None, display_name=None, app_owner_organization_id=None,
                                        service_principal_type=None,
                                        preferred_token_signing_key_thumbprint=THUMB_B.hex().upper()),
    "the whole object": {},
}


@pytest.mark.parametrize("change", sorted(PARTIAL))
@pytest.mark.parametrize("customer", ["Contoso", "Contoso Ltd"])
async def test_a_partial_object_completed_from_the_index_gives_the_rows_its_stored_rows_give(
        change: str, customer: str) -> None:
    partial = saml_principal(**PARTIAL[change])
    results = []
    for store in (FakeInventory(), RowsOnly()):
        source = Rounds([saml_principal()], [partial])
        await inventory_tenant(source, store, TENANT)  # type: ignore[arg-type]
        await inventory_tenant(source, store, replace(TENANT, customer=customer))  # type: ignore[arg-type]
        results.append((await store.list_credentials(), store.faults.counts["inventory.objects_credentials"]))
    (indexed, point_reads), (by_rows, _) = results
    assert indexed == by_rows and len(indexed) >= 3
    assert {r.owners for r in indexed} == {("owner-of-sp-1@contoso.com",)}  # owners kept through either path
    # The rows are read only when rows kept as they are would change (a whole object keeps none), or a moved
    # signing certificate needs the stored certificates' thumbprints.
    needs_rows = change != "the whole object" and (
        customer != "Contoso" or change in ("renamed", "now Microsoft's", "signing moved"))
    assert point_reads == (1 if needs_rows else 0)


async def test_a_full_reads_listed_owners_go_to_the_customers_objects_not_to_microsofts() -> None:
    sp = ObjectKind.SERVICE_PRINCIPAL

    def principal(object_id: str, owner_tenant: str | None, kind: str = "Application") -> DirectoryObject:
        return DirectoryObject(sp, object_id, app_id=f"app-{object_id}", display_name=object_id,
                               password_credentials=(secret(f"k-{object_id}"),), key_credentials=(),
                               app_owner_organization_id=owner_tenant, service_principal_type=kind)

    graph = ScriptedGraph([principal("ms", MICROSOFT_TENANT), principal("mi", None, "ManagedIdentity"),
                           principal("ours", "t-1"), principal("theirs", "c0ffee00-0000-4000-8000-000000000001")])
    graph.owned = {o: (f"owner-of-{o}@contoso.com",) for o in ("ms", "mi", "ours", "theirs")}
    store = FakeInventory()
    await inventory_kind(graph, store, TENANT, sp)
    owners = {r.object_id: (r.owners, r.first_party) for r in await store.list_credentials()}
    assert owners == {"ms": ((), True), "mi": ((), True), "ours": (("owner-of-ours@contoso.com",), False),
                      "theirs": (("owner-of-theirs@contoso.com",), False)}
    assert graph.owner_reads == []  # all listed: none read one by one


class Recording(ScriptedGraph):
    """A Graph that notes the collector's thresholds while a pass reads it, and fails on demand."""

    def __init__(self, objects: list[DirectoryObject], fail: bool = False) -> None:
        super().__init__(objects)
        self.seen: list[tuple[int, int, int]] = []
        self.fail = fail

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        self.seen.append(gc.get_threshold())
        if self.fail:
            raise RuntimeError("not a RotationError: escapes the pass")
        async for page in super().read(tenant_id, object_kind, delta_link):
            yield page


async def test_a_pass_collects_garbage_more_rarely_and_gives_the_process_its_thresholds_back() -> None:
    own = gc.get_threshold()
    gc.set_threshold(600, 9, 8)  # whatever the process set for itself
    try:
        slow, quick = Recording([app("a", "k1")]), Recording([app("b", "k2")])
        gate = asyncio.Event()
        original = slow.read

        async def waiting(*args: Any) -> AsyncIterator[InventoryPage]:
            await gate.wait()  # the slow pass is still running when the quick one ends
            async for page in original(*args):
                yield page

        slow.read = waiting  # type: ignore[method-assign]
        first = asyncio.ensure_future(run_inventory(slow, FakeInventory(), [TENANT], concurrency=1))
        await asyncio.sleep(0)
        await run_inventory(quick, FakeInventory(), [CustomerTenant("t-2", "Fabrikam")], concurrency=1)
        assert gc.get_threshold() == inventory_pass.PASS_GC_THRESHOLDS  # the slow pass goes on
        gate.set()
        assert not (await first).failed
        assert set(slow.seen) == set(quick.seen) == {inventory_pass.PASS_GC_THRESHOLDS}
        assert gc.get_threshold() == (600, 9, 8)
        with pytest.raises(RuntimeError):
            await run_inventory(Recording([app("c", "k3")], fail=True), FakeInventory(), [TENANT], concurrency=1)
        assert gc.get_threshold() == (600, 9, 8)
    finally:
        gc.set_threshold(*own)
