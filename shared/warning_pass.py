"""The warnings pass: after each inventory pass, every customer tenant's credentials (the inventory's rows and the
registered targets' current secrets) judged against the customer's thresholds and exclusions, due warnings told
through the alert book, and warnings no longer holding settled (shared/expiry_warnings.py says how)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain import Actor, Target, actor_of
from shared.errors import NotFound, RotationError
from shared.expiry_warnings import Exclusion, alert_of, holding_by_app, judge, thresholds_for
from shared.inventory import CredentialKind, InventoryCredential, InventoryQuery, ObjectKind
from shared.ports import Event, InventoryStore, StateStore, WarningBook, WarningRules

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)


@dataclass
class WarningSummary:
    """What one warnings pass did."""

    tenants: int = 0
    credentials: int = 0  # judged: those ending within the loosest threshold, and their objects' others
    due: int = 0  # warnings due (each told once by the book; told again only if the channel refused it)
    failed: list[str] = field(default_factory=list)
    duration_ms: int = 0


def target_credentials(targets: Sequence[Target], known_key_ids: set[str]) -> list[InventoryCredential]:
    """Each registered target's current secret, as the rotation pass last observed it, when the inventory does not
    hold it yet (a tenant not inventoried yet, or a secret rotated since its last read)."""
    found = []
    for t in targets:
        key_id, end = t.state.current_key_id, t.observed.expires
        if not key_id or end is None or key_id in known_key_ids:
            continue
        found.append(InventoryCredential(
            tenant_id=t.tenant_id, customer=t.customer, object_kind=ObjectKind.APPLICATION, object_id=t.app_id,
            app_id=t.app_id, display_name=t.customer, owners=(), credential_kind=CredentialKind.PASSWORD, usage="",
            key_id=key_id, hint="", credential_name="", start=None, end=end, managed=True))
    return found


async def warn_tenant(tenant_id: str, targets: Sequence[Target], inventory: InventoryStore, book: WarningBook,
                      thresholds: tuple[int, ...], exclusions: Sequence[Exclusion], renew_before: Mapping[str, int],
                      now: datetime) -> tuple[int, int]:
    """Judge one tenant, tell what is due, settle every app with staged warnings; (credentials, due).

    Only what can warn is read: the credentials ending within the loosest threshold (InventoryQuery.ends_before, which
    a store may answer server-side), and the other credentials of their objects, which say whether they were renewed.
    """
    horizon = now + timedelta(days=max(thresholds, default=0) + 1)
    near = await inventory.list_credentials(InventoryQuery(tenant_id=tenant_id, ends_before=horizon))
    objects: dict[ObjectKind, set[str]] = {}
    for c in near:
        objects.setdefault(c.object_kind, set()).add(c.object_id)
    credentials = {c.key: c for c in near}
    for kind, ids in objects.items():
        for rows in (await inventory.objects_credentials(tenant_id, kind, sorted(ids))).values():
            credentials.update((c.key, c) for c in rows)
    found = list(credentials.values())
    found += target_credentials(targets, {c.key_id for c in found})
    credentials_count = len(found)
    verdicts = judge(found, thresholds, exclusions, now, renew_before)
    due = 0
    for verdict in verdicts:
        if verdict.warns:
            due += 1
            await book.raise_alert(alert_of(verdict))
    held = holding_by_app(verdicts)
    for app_id in sorted(set(held) | await book.staged_apps(tenant_id)):
        await book.settle_stages(tenant_id, app_id, held.get(app_id, frozenset()))
    return credentials_count, due


async def run_warnings(inventory: InventoryStore, rules: WarningRules, book: WarningBook, targets: Sequence[Target],
                       now: datetime, renew_before_days: int, concurrency: int = 8) -> WarningSummary:
    """Every tenant of the registered targets, `concurrency` at a time; a tenant that fails is reported, the
    others go on (its warnings wait for the next pass: nothing is lost, the book is idempotent)."""
    started = time.monotonic()
    chosen = await rules.thresholds()
    exclusions = await rules.exclusions()
    by_tenant: dict[str, list[Target]] = {}
    for t in targets:
        by_tenant.setdefault(t.tenant_id, []).append(t)
    summary = WarningSummary(tenants=len(by_tenant))
    bound = asyncio.Semaphore(max(1, concurrency))

    async def one(tenant_id: str, own: list[Target]) -> None:
        # A disabled target is not renewed by the rotator: its credentials are warned of at every threshold.
        renew_before = {t.app_id: t.policy.renew_before_days or renew_before_days for t in own if t.enabled}
        async with bound:
            try:
                counted, due = await warn_tenant(
                    tenant_id, own, inventory, book, thresholds_for(tenant_id, chosen),
                    [e for e in exclusions if e.tenant_id == tenant_id], renew_before, now)
            except RotationError as error:
                summary.failed.append(tenant_id)
                log.warning("warnings not judged for a tenant: %s", error.message,
                            extra={"event": "warnings.tenant", "tenant_id": tenant_id, "outcome": "failed",
                                   "error_code": error.code})
                return
        summary.credentials += counted
        summary.due += due

    await asyncio.gather(*(one(tenant, own) for tenant, own in sorted(by_tenant.items())))
    # A tenant whose registered targets are all gone (removed, offboarded) leaves the inventory: nothing judges its
    # credentials any more, so each warning it was told is resolved now, once, not left open for ever.
    registered = {t.lower() for t in by_tenant}
    for tenant_id in sorted(t for t in await book.staged_tenants() if t.lower() not in registered):
        for app_id in sorted(await book.staged_apps(tenant_id)):
            await book.settle_stages(tenant_id, app_id, frozenset())
    summary.duration_ms = int((time.monotonic() - started) * 1000)
    log.info("warnings.pass", extra={"tenants": summary.tenants, "due": summary.due, "failed": len(summary.failed),
                                     "duration_ms": summary.duration_ms})
    return summary


async def take_warnings(svc: Services) -> WarningSummary:
    """The pass the inventory timer runs after the inventory, with the services bootstrap built."""
    if svc.inventory is None or svc.warning_rules is None or svc.alerts is None:
        raise RotationError("the inventory or the alert book is not configured", code="InventoryUnavailable")
    targets = [t for t, _ in await svc.state.list_targets()]
    await prune_rules(svc.warning_rules, svc.state, svc.engine.clock.now())
    return await run_warnings(svc.inventory, svc.warning_rules, svc.alerts, targets, svc.engine.clock.now(),
                              svc.settings.renew_before_days, svc.settings.inventory_concurrency)


# ------------------------------------------------------------------ the rules, audited (API and command line)

# A lifted exclusion's record is kept this long after its lift (the report of the month shows it), then pruned: the
# audit log keeps who made it, why, who lifted it and when.
KEEP_LIFTED = timedelta(days=90)


async def prune_rules(rules: WarningRules, state: StateStore, now: datetime) -> list[Exclusion]:
    """Prune the exclusions that no longer apply (each warnings pass): snoozes past their end, each audited as
    ended, and lifted records older than KEEP_LIFTED. A lapsed snooze covers nothing already (Exclusion.active):
    pruning keeps the list of what silences warnings short and true. Audited before it is removed, so a crash
    between the two repeats the record, never loses it. A store that fails is logged; the pass goes on."""
    try:
        ended = [e for e in await rules.exclusions()
                 if e.lifted_at is None and e.until is not None and e.until <= now]
        for e in ended:
            until = e.until.isoformat() if e.until else ""
            await state.record(Event(e.tenant_id, e.app_id, "warnings", "snooze-ended", actor_of(Actor.TIMER),
                                     detail=f"{e.scope.value} {e.key_id or e.app_id or e.tenant_id} until {until}, "
                                     f"made by {e.by}: {e.why}"[:1000], at=now))
        await rules.prune_exclusions(now, KEEP_LIFTED)
    except RotationError as error:
        log.warning("exclusions not pruned: %s", error.message,
                    extra={"event": "warnings.prune", "outcome": "failed", "error_code": error.code})
        return []
    return ended


async def registered(state: StateStore, tenant_id: str) -> None:
    """NotFound (TenantNotFound) unless a target of this tenant is registered: a rule for a tenant the rotator
    does not watch would silently do nothing."""
    if not any(t.tenant_id == tenant_id for t, _ in await state.list_targets()):
        raise NotFound(f"tenant {tenant_id} is not a registered customer tenant", code="TenantNotFound")


async def exclude(rules: WarningRules, state: StateStore, made: Exclusion) -> None:
    """Keep an exclusion or snooze and audit who made it, why and until; TenantNotFound for an unknown tenant."""
    await registered(state, made.tenant_id)
    await rules.add_exclusion(made)
    until = made.until.isoformat() if made.until else "lifted"
    await state.record(Event(made.tenant_id, made.app_id, "warnings", "snoozed" if made.until else "excluded",
                             actor_of(Actor.MANUAL, made.by), detail=f"{made.scope.value} "
                             f"{made.key_id or made.app_id or made.tenant_id} until {until}: {made.why}"[:1000],
                             at=made.at))


async def lift(rules: WarningRules, state: StateStore, exclusion_id: str, by: str, at: datetime) -> Exclusion:
    """Lift an exclusion or snooze (NotFound when none has that id, Conflict when lifted before) and audit who
    lifted it."""
    lifted = await rules.lift_exclusion(exclusion_id, by, at)
    await state.record(Event(lifted.tenant_id, lifted.app_id, "warnings", "exclusion-lifted",
                             actor_of(Actor.MANUAL, by), detail=f"{lifted.scope.value} "
                             f"{lifted.key_id or lifted.app_id or lifted.tenant_id}, made by {lifted.by}: "
                             f"{lifted.why}"[:1000], at=at))
    return lifted


async def set_thresholds(rules: WarningRules, state: StateStore, tenant_id: str, days: tuple[int, ...], by: str,
                         at: datetime) -> None:
    """Keep a customer's thresholds and audit the change; TenantNotFound for an unknown tenant."""
    await registered(state, tenant_id)
    await rules.put_thresholds(tenant_id, days, by, at)
    await state.record(Event(tenant_id, "", "warnings", "thresholds-set", actor_of(Actor.MANUAL, by),
                             detail=",".join(str(d) for d in days), at=at))
