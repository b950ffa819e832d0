"""The daily inventory pass: every credential of every customer tenant, read from Graph into the inventory store.

Per tenant and object kind (applications, service principals): the first pass reads everything (a delta round
without a token) and keeps the delta link it ends with; later passes read only what changed since that link. A
stale link (Graph's synchronization reset, or a token past its seven days) forgets the link and reads everything
again; objects the store holds that the full read did not return are removed (they left while no link was kept).

Crash-safe by order: a page's rows are written before the next page is read, and the delta link is saved with
its round's last write (in the same transaction) or after it, never before, so a pass killed anywhere repeats at
most one round on the next run (every write is idempotent). Detect only: nothing is written to Graph.

Runs apart from the rotation timer (its own schedule, INVENTORY_SCHEDULE): the healthy scan of registered targets
does no inventory work and gets no slower (docs/inventory.md, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING

from shared.domain import Target

if TYPE_CHECKING:
    from shared.bootstrap import Services
from shared.errors import RotationError, StaleDeltaLink
from shared.inventory import (
    DirectoryObject,
    InventoryCredential,
    InventoryPage,
    ObjectKind,
    RoundEnd,
    StoredObject,
    TenantPass,
    completed,
    credentials_of,
    first_party_of,
)
from shared.ports import InventorySource, InventoryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerTenant:
    """A tenant to take inventory of: its customer's name and the apps the rotator manages there."""

    tenant_id: str
    customer: str
    managed_app_ids: frozenset[str] = frozenset()


def customers_of(targets: Iterable[Target]) -> list[CustomerTenant]:
    """One entry per tenant of the registered targets (every such tenant consented to the rotator's app)."""
    by_tenant: dict[str, tuple[str, set[str]]] = {}
    for target in targets:
        name, apps = by_tenant.setdefault(target.tenant_id, (target.customer, set()))
        apps.add(target.app_id)
        if not name and target.customer:
            by_tenant[target.tenant_id] = (target.customer, apps)
    return [CustomerTenant(t, name, frozenset(apps)) for t, (name, apps) in sorted(by_tenant.items())]


# A full read's rows are gathered over pages into writes of at most this many rows (one entity-group transaction of
# 100 operations holds 99 and the index row): a page of 100 objects holds about 65 credentials, and every write costs
# a request. Safe to gather: the delta link is saved with the round's last write, and every write repeats.
FULL_READ_ROWS = 99


@dataclass
class _Pending:
    """Rows of a full read not yet written: each object's credentials and the key ids it is known to hold."""

    rows: dict[str, list[InventoryCredential]] = field(default_factory=dict)
    known: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0

    def add(self, object_id: str, found: list[InventoryCredential], known: list[str] | None) -> None:
        self.count += len(found) - len(self.rows.get(object_id, ()))
        self.rows[object_id] = found
        if known is not None:
            self.known[object_id] = known

    def drop(self, object_id: str) -> None:
        self.count -= len(self.rows.pop(object_id, ()))
        self.known.pop(object_id, None)

    async def write(self, store: InventoryStore, tenant: CustomerTenant, kind: ObjectKind) -> None:
        """Write what is gathered (a delta round's page before the next is read)."""
        if self.rows:
            await store.put_objects(tenant.tenant_id, kind, self.rows, stored=self.known)
        self.rows, self.known, self.count = {}, {}, 0

    def end(self, delta_link: str | None, listed: Mapping[str, tuple[str, ...] | None] | None = None) -> RoundEnd:
        """What is gathered, as the round's last write with its delta link (written by the tenant, both kinds'
        together), and a full read's owner listing for the store to keep (RoundEnd.listed: not what it may have
        cut)."""
        return RoundEnd(self.rows, self.known, delta_link, _given(listed))

    async def write_full(self, store: InventoryStore, tenant: CustomerTenant, kind: ObjectKind) -> None:
        """Write the first objects whose rows fill one transaction (FULL_READ_ROWS), keep the rest gathered: writes
        stay full, and the round's last page almost always has rows to carry its delta link (no request of its
        own). An object's rows are never split between writes."""
        batch: dict[str, list[InventoryCredential]] = {}
        size = 0
        for object_id, found in self.rows.items():
            if batch and size + len(found) > FULL_READ_ROWS:
                break
            batch[object_id] = found
            size += len(found)
        known = {o: self.known[o] for o in batch if o in self.known}
        await store.put_objects(tenant.tenant_id, kind, batch, stored=known)
        for object_id in batch:
            self.drop(object_id)


# Owners reads of one page at once: the objects a listing did not give (a delta round's new objects, or created
# after the full read's listing) are read together, 15 ids a request (shared/adapters/inventory.py: `$filter=id in`
# with `$expand=owners`); those whose owners a listing or that read may have cut (20 or more) one by one. A page's
# single reads overlap, bounded so one tenant does not spend Graph's per-tenant budget alone.
OWNER_READS = 8


async def read_owners(source: InventorySource, tenant_id: str, kind: ObjectKind,
                      built: dict[str, list[InventoryCredential]],
                      listed: Mapping[str, tuple[str, ...] | None] | None = None) -> None:
    """Fill in the owners of the page's objects that hold credentials (a new or changed object: what a round
    brings), in place: from a listing (`listed`: a full read's, or what the store kept of the last one) when it has
    them, else read for several objects at once, and one by one where those answers may have cut them.
    Microsoft's first-party principals and managed identities are left out: they have no owner in the customer's
    tenant and are never the customer's to renew."""
    wanted = [object_id for object_id, rows in built.items() if rows and not rows[0].first_party]
    if not wanted:
        return
    known = listed or {}
    found: dict[str, tuple[str, ...] | None] = {object_id: known[object_id] for object_id in wanted
                                                if object_id in known}
    unseen = [object_id for object_id in wanted if object_id not in known]
    if unseen:  # not listed (a delta round, created meanwhile)
        found.update(await source.owners_of(tenant_id, kind, unseen))
    bound = asyncio.Semaphore(OWNER_READS)

    async def one(object_id: str) -> None:
        owners = found.get(object_id, ())
        if owners is None:  # cut by the listing or the filtered read: 20 or more
            async with bound:
                owners = await source.owners(tenant_id, kind, object_id)
        built[object_id] = [replace(row, owners=owners) for row in built[object_id]]

    await asyncio.gather(*(one(object_id) for object_id in wanted))


async def list_owners(source: InventorySource, tenant_id: str, kind: ObjectKind) -> dict[str, tuple[str, ...] | None]:
    """A full read's owners of every object of the kind (a page of 100 a request: shared/adapters/inventory.py).
    Held for the round: object ids and a few names each, a few hundred per tenant and kind."""
    listed: dict[str, tuple[str, ...] | None] = {}
    async for page in source.owner_listing(tenant_id, kind):
        listed.update(page)
    return listed


def _given(listed: Mapping[str, tuple[str, ...] | None] | None) -> dict[str, tuple[str, ...]] | None:
    """A listing's owners as the store keeps them: not where the listing may have cut them (None)."""
    return None if listed is None else {o: owners for o, owners in listed.items() if owners is not None}


def _listed_owners(objects: Sequence[DirectoryObject], listed: Mapping[str, tuple[str, ...] | None] | None
                   ) -> dict[str, tuple[str, ...]]:
    """The owners a full read's listing gives of the page's objects that hold credentials, as read_owners would
    fill them in: not for Microsoft's first-party principals and managed identities, nor where the listing may
    have cut them (None)."""
    if not listed:
        return {}
    given: dict[str, tuple[str, ...]] = {}
    for obj in objects:
        if obj.password_credentials or obj.key_credentials:
            owners = listed.get(obj.object_id)
            if owners is not None and not first_party_of(obj):
                given[obj.object_id] = owners
    return given


async def _write_page(source: InventorySource, store: InventoryStore, tenant: CustomerTenant, kind: ObjectKind,
                      page: InventoryPage, stored_ids: set[str] | None, result: TenantPass, pending: _Pending,
                      listed: Mapping[str, tuple[str, ...] | None] | None = None) -> None:
    """One page into the store: removals, then each object's rows; the round's last page (its delta link) leaves
    its rows gathered for the tenant's last write, which saves the link with them.

    In a delta round (`stored_ids` None) a partial object (only what changed comes) is completed from what the
    store knows of its rows without reading them (its index: names, first party, each key's collection and SAML
    mark; the rows of a collection left out stay as they are); only an object that cannot be completed so (its
    kept rows would change) has its rows read, all such in one go. The page is written before the next is read.
    In a full read, objects the store never held (`stored_ids`) need no lookup, those
    without credentials no write either, and rows are gathered over pages (FULL_READ_ROWS)."""
    if page.removed:
        for gone in page.removed:  # an object gathered from an earlier page and removed since is not written
            pending.drop(gone.object_id)
        await store.remove_objects(tenant.tenant_id, kind, [r.object_id for r in page.removed])
        result.removed += len(page.removed)
    held: dict[str, list[InventoryCredential]] = {}
    done: dict[str, tuple[DirectoryObject, list[InventoryCredential], list[str], int]] = {}
    known: Mapping[str, StoredObject | None] = {}
    if stored_ids is None and page.objects:
        known = await store.objects_known(tenant.tenant_id, kind, [o.object_id for o in page.objects])
        for obj in page.objects:
            summary = known.get(obj.object_id)
            if summary is None:
                continue
            made = completed(obj, summary, tenant.tenant_id, tenant.customer, tenant.managed_app_ids)
            if made is not None:
                kept = (len(summary.passwords) if obj.password_credentials is None else 0) + (
                    len(summary.certificates) if obj.key_credentials is None else 0)
                done[obj.object_id] = (*made, kept)
        reads = [o.object_id for o in page.objects if o.object_id in known and o.object_id not in done]
        if reads:
            held = await store.objects_credentials(tenant.tenant_id, kind, reads)
    # Owners: a full read's from its listing; a delta round's for objects new to the store only: an object held keeps
    # the owners it has (an owner change is not what brings an object into a round; the weekly refresh_owners lists
    # them again), and one that held no rows the owners the last listing gave it (kept by the store: an app's first
    # secret, an SP's first SAML certificate); the rest, created since, are read together (15 a request).
    # A full read's rows are built with the owners its listing gave (copying every row to add them afterwards cost
    # a twentieth of the pass); read_owners reads the rest (cut by the listing, or created after it).
    given = _listed_owners(page.objects, listed) if stored_ids is not None else {}
    built = {obj.object_id: credentials_of(obj, tenant.tenant_id, tenant.customer, tenant.managed_app_ids,
                                           held.get(obj.object_id, []), given.get(obj.object_id))
             for obj in page.objects if obj.object_id not in done}
    new = ({o: rows for o, rows in built.items() if o not in given} if stored_ids is not None
           else {o: rows for o, rows in built.items() if o not in known})
    if stored_ids is None:
        wanted = [o for o, rows in new.items() if rows and not rows[0].first_party]
        listed = await store.owners_listed(tenant.tenant_id, kind, wanted) if wanted else None
    await read_owners(source, tenant.tenant_id, kind, new, listed)
    built.update(new)
    for obj in page.objects:
        if obj.object_id in done:
            brought, base, keys, kept = done[obj.object_id]
            found = credentials_of(brought, tenant.tenant_id, tenant.customer, tenant.managed_app_ids, base)
            result.credentials += len(found) + kept
            if found or keys:
                pending.add(obj.object_id, found, keys)
            continue
        stored = held.get(obj.object_id, [])
        found = built[obj.object_id]
        result.credentials += len(found)
        if stored_ids is None:
            if found or stored:  # an object that held nothing and holds nothing costs no write
                pending.add(obj.object_id, found, [r.key_id for r in stored])
        elif obj.object_id not in stored_ids:
            if found:  # nothing stored, nothing to store
                pending.add(obj.object_id, found, [])
        else:
            pending.add(obj.object_id, found, None)
    result.objects += len(page.objects)
    if page.delta_link:
        return
    if stored_ids is None:
        await pending.write(store, tenant, kind)
    while pending.count > FULL_READ_ROWS:  # a remainder stays for the last write, which carries the link
        await pending.write_full(store, tenant, kind)


async def _round(source: InventorySource, store: InventoryStore, tenant: CustomerTenant, kind: ObjectKind,
                 link: str | None) -> tuple[TenantPass, RoundEnd]:
    """The round's pass, and its last write (the rows still gathered and the delta link), not yet written."""
    full = link is None
    result = TenantPass(tenant.tenant_id, kind, full=full)
    stored_ids = await store.object_ids(tenant.tenant_id, kind) if full else None
    # A full read's owner listing runs beside its first delta pages (both are reads): no latency of its own.
    listing = asyncio.ensure_future(list_owners(source, tenant.tenant_id, kind)) if full else None
    try:
        return await _pages(source, store, tenant, kind, link, result, stored_ids, listing)
    finally:
        if listing is not None and not listing.done():
            listing.cancel()
        elif listing is not None and not listing.cancelled():
            listing.exception()  # a failed listing is the round's failure, raised already or moot: never "unretrieved"


async def _pages(source: InventorySource, store: InventoryStore, tenant: CustomerTenant, kind: ObjectKind,
                 link: str | None, result: TenantPass, stored_ids: set[str] | None,
                 listing: asyncio.Future[dict[str, tuple[str, ...] | None]] | None) -> tuple[TenantPass, RoundEnd]:
    full = link is None
    seen: set[str] = set()
    final: str | None = None
    pending = _Pending()
    async for page in source.read(tenant.tenant_id, kind, link):
        listed = await listing if listing is not None else None
        result.pages += 1
        if full:
            seen.update(o.object_id for o in page.objects)
            if page.delta_link and stored_ids:
                # The last page: what the store held and the read did not return left meanwhile; swept before
                # the last write, which saves the link (a crash before it repeats the whole round).
                gone = sorted(stored_ids - seen)
                if gone:
                    await store.remove_objects(tenant.tenant_id, kind, gone)
                    result.removed += len(gone)
        await _write_page(source, store, tenant, kind, page, stored_ids, result, pending, listed)
        final = page.delta_link or final
    return result, pending.end(final, await listing if listing is not None else None)


async def inventory_kind(source: InventorySource, store: InventoryStore, tenant: CustomerTenant,
                         kind: ObjectKind, link: str | None) -> tuple[TenantPass, RoundEnd]:
    """One tenant's objects of one kind: a delta round from `link`, or a full read (none, or stale); the pass, and
    the round's last write with the delta link to keep (the caller writes it)."""
    try:
        return await _round(source, store, tenant, kind, link)
    except StaleDeltaLink as stale:
        log.info("inventory.restart", extra={"tenant": tenant.tenant_id, "kind": kind.value, "code": stale.code})
    try:
        result, end = await _round(source, store, tenant, kind, None)
        return replace(result, restarted=True), end
    except StaleDeltaLink as again:  # a full read's own nextLink went stale: the next pass tries again
        raise RotationError(f"Graph reset the full read of tenant {tenant.tenant_id}: {again}",
                            code=again.code) from again


# An owner added or removed never brings an object into a delta round (docs/inventory.md): each tenant's owners are
# listed again once a week, on a day of its own (its id's hash), so the fleet's listings spread over the week.
OWNERS_REFRESH_DAYS = 7


def owners_refresh_due(tenant_id: str, today: date) -> bool:
    """Whether today is the tenant's day to list its owners again (once every OWNERS_REFRESH_DAYS)."""
    return (today.toordinal() + zlib.crc32(tenant_id.lower().encode())) % OWNERS_REFRESH_DAYS == 0


async def refresh_owners(source: InventorySource, store: InventoryStore, tenant: CustomerTenant,
                         kinds: Sequence[ObjectKind]) -> int:
    """List the owners of the kinds again and rewrite the rows of objects whose owners changed (a delta round does
    not see owner changes); the number of objects rewritten. Microsoft's principals are left alone."""
    listed = {kind: await list_owners(source, tenant.tenant_id, kind) for kind in kinds}
    held: dict[tuple[ObjectKind, str], list[InventoryCredential]] = {}
    async for row in store.stream(tenant.tenant_id):
        if row.object_kind in listed and not row.first_party:
            held.setdefault((row.object_kind, row.object_id), []).append(row)
    rewritten = 0
    ends: dict[ObjectKind, RoundEnd] = {}
    for kind in kinds:
        built = {object_id: rows for (k, object_id), rows in held.items()
                 if k is kind and object_id in listed[kind]}  # an object not listed left: the next round says so
        before = {object_id: rows[0].owners for object_id, rows in built.items()}
        await read_owners(source, tenant.tenant_id, kind, built, listed[kind])
        changed = {object_id: rows for object_id, rows in built.items() if rows[0].owners != before[object_id]}
        # The listing also replaces the owners the store keeps of objects without rows (RoundEnd.listed): as fresh
        # as the rows' (the store skips a listing that changes nothing).
        ends[kind] = RoundEnd(changed, {object_id: [r.key_id for r in rows] for object_id, rows in changed.items()},
                              None, _given(listed[kind]))
        rewritten += len(changed)
    await store.put_rounds(tenant.tenant_id, ends)
    return rewritten


@dataclass
class InventorySummary:
    """One inventory pass over the fleet."""

    passes: list[TenantPass] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # tenant id -> error code
    duration_ms: int = 0

    @property
    def credentials(self) -> int:
        return sum(p.credentials for p in self.passes)


async def inventory_tenant(source: InventorySource, store: InventoryStore, tenant: CustomerTenant,
                           kinds: Sequence[ObjectKind] = tuple(ObjectKind), today: date | None = None
                           ) -> list[TenantPass]:
    """Both kinds of one tenant side by side, from the delta links stored. The rounds' last rows and their delta
    links are written here, both kinds' in one write (one partition: a daily pass's tenant ends with one
    transaction, not one per kind); a crash before it repeats the rounds (every write is idempotent). `today`: on
    the tenant's weekly day, the owners of the kinds read by delta are listed again (refresh_owners)."""
    links = await store.delta_links(tenant.tenant_id)
    done = await asyncio.gather(*(inventory_kind(source, store, tenant, kind, links.get(kind)) for kind in kinds),
                                return_exceptions=True)
    finished = [d for d in done if not isinstance(d, BaseException)]
    if finished:  # a kind that finished keeps its progress even when the other failed
        await store.put_rounds(tenant.tenant_id, {result.object_kind: end for result, end in finished})
    for failure in done:
        if isinstance(failure, BaseException):
            raise failure
    delta_kinds = [result.object_kind for result, _ in finished if not result.full]
    if today is not None and delta_kinds and owners_refresh_due(tenant.tenant_id, today):
        await refresh_owners(source, store, tenant, delta_kinds)
    return [result for result, _ in finished]


# The cyclic garbage collector during a pass: its youngest generation collected after 50,000 net allocations instead
# of the interpreter's 700, the older ones as rarely. A first pass allocates millions of short-lived objects (pages,
# rows, entities; none kept in reference cycles, freed by reference counting as they go), and with the defaults the
# collector walked them and the heap every few hundred: a sixth of the pass's CPU (docs/benchmarks.md, "fourth
# round"). The process's own thresholds are restored when the last pass running in it ends.
PASS_GC_THRESHOLDS = (50_000, 20, 10)
_gc_saved: list[tuple[int, int, int]] = []  # the thresholds before the first running pass; empty when none runs
_gc_passes = 0


@contextmanager
def _rarer_collections() -> Iterator[None]:
    global _gc_passes
    if _gc_passes == 0:
        _gc_saved[:] = [gc.get_threshold()]
        gc.set_threshold(*PASS_GC_THRESHOLDS)
    _gc_passes += 1
    try:
        yield
    finally:
        _gc_passes -= 1
        if _gc_passes == 0:
            gc.set_threshold(*_gc_saved.pop())


async def run_inventory(source: InventorySource, store: InventoryStore, tenants: Sequence[CustomerTenant],
                        concurrency: int, today: date | None = None) -> InventorySummary:
    """Take inventory of every tenant, `concurrency` tenants at once; a tenant that fails is reported, not fatal."""
    started = time.monotonic()
    summary = InventorySummary()
    bound = asyncio.Semaphore(concurrency)

    async def one(tenant: CustomerTenant) -> None:
        async with bound:
            try:
                summary.passes += await inventory_tenant(source, store, tenant, today=today)
            except RotationError as error:
                summary.failed[tenant.tenant_id] = error.code
                log.warning("inventory.failed", extra={"tenant": tenant.tenant_id, "code": error.code})

    with _rarer_collections():
        await asyncio.gather(*(one(t) for t in tenants))
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    log.info("inventory.pass", extra={"tenants": len(tenants), "failed": len(summary.failed),
                                      "credentials": summary.credentials, "duration_ms": summary.duration_ms})
    return summary


async def take_inventory(svc: Services) -> InventorySummary:
    """The timer's pass: every tenant of the registered targets, with the services bootstrap built."""
    if svc.inventory_source is None or svc.inventory is None:
        raise RotationError("the inventory is not configured", code="InventoryUnavailable")
    tenants = customers_of(target for target, _ in await svc.state.list_targets())
    return await run_inventory(svc.inventory_source, svc.inventory, tenants, svc.settings.inventory_concurrency,
                               svc.engine.clock.now().date())


async def inventory_now(svc: Services, tenant_id: str) -> list[TenantPass]:
    """One tenant's inventory now, as the daily pass takes it (a queue message's work: onboarding sends one when it
    registers a customer). Only a tenant with a registered target (one offboarded meanwhile is not read); from its
    stored delta links, so a repeated message costs a delta round. A failure is logged, not raised: the daily pass
    takes the tenant again, and a retried message would only repeat the read."""
    if svc.inventory_source is None or svc.inventory is None:
        log.warning("inventory.unavailable", extra={"tenant": tenant_id})
        return []
    tenant_id = tenant_id.lower()
    tenants = [t for t in customers_of(target for target, _ in await svc.state.list_targets())
               if t.tenant_id.lower() == tenant_id]
    if not tenants:
        log.info("inventory.not-registered", extra={"tenant": tenant_id})
        return []
    started = time.monotonic()
    try:
        passes = await inventory_tenant(svc.inventory_source, svc.inventory, tenants[0])
    except RotationError as error:
        log.warning("inventory.failed", extra={"tenant": tenant_id, "code": error.code})
        return []
    log.info("inventory.tenant", extra={"tenant": tenant_id, "credentials": sum(p.credentials for p in passes),
                                        "duration_ms": int((time.monotonic() - started) * 1000)})
    return passes


async def forget_unregistered(svc: Services, tenant_id: str) -> bool:
    """After a target is removed or offboarded: when no target of its tenant is left, forget the tenant's inventory
    (credential metadata and owners' names, personal data the MSP no longer has a reason to keep) and its delta
    links; True when forgotten. Its open warnings are resolved by the next warnings pass (staged_tenants)."""
    if svc.inventory is None:
        return False
    tenant_id = tenant_id.lower()
    if any(t.tenant_id.lower() == tenant_id for t, _ in await svc.state.list_targets()):
        return False
    await svc.inventory.remove_tenant(tenant_id)
    log.info("inventory.forgotten", extra={"tenant": tenant_id})
    return True
