"""The alert book: each condition of each target told at most once a UTC day while it holds, and resolved once.

One row per condition, target (and destination) in the `alerts` table (partition: the target) records the UTC day
it was last told (`Day`), whether the channel took it (`Told`), when a post began (`Attempt`), and, once the
condition cleared, when (`ResolvedAt`) and that the resolved note went out (`Closed`). Every write is ETag-guarded,
so of two runners only the one whose write lands logs and posts:

- `event=alert` is logged when the day's claim is won, never again that day (the e-mail rule counts these);
- the channel is posted with the claim; a refused or unreachable post is retried by the next occurrence that day
  (the log record is not repeated), a post cut by a crash once `Attempt` is older than RETRY_AFTER;
- `settle` runs after each advance of a target that may carry a condition: an open condition the row no longer
  holds is claimed (`ResolvedAt`), logged once (`event=alert-resolved`) and its resolved note posted once; one still
  holding is told again on a new day (a condition the engine raises only on entering it still reaches a human daily);
  one back the day it cleared is reopened quietly (`Quiet`: no second alert that day), and if it clears again it
  clears quietly (no second record or note: one resolution per alert people were told);
- `redeliver` runs after each pass: what the channel refused (a resolved note, today's alert) is posted again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.alerts.channel import AlertChannel, Notice, NoticeKind
from shared.conditions import STAGE_PREFIX, Condition, resolvable, staged
from shared.errors import RotationError
from shared.ports import Alert, Clock

log = logging.getLogger(__name__)
# A post still "in flight" after this long was cut (a crash, a lost worker): the next occurrence tries again.
RETRY_AFTER = timedelta(seconds=60)
_CONFLICT = (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError)


def _safe(part: str) -> str:
    """A Tables key part: no character Tables refuses in keys."""
    return "".join("-" if c in "/\\#?" or ord(c) < 32 else c for c in part)


def row_keys(tenant_id: str, app_id: str, condition: str, destination: str) -> tuple[str, str]:
    """The (PartitionKey, RowKey) of one condition of one target (and destination)."""
    return _safe(f"{tenant_id}_{app_id}"), _safe(f"{condition}_{destination}" if destination else condition)


def alert_record(alert: Alert, *, resolved: bool = False) -> None:
    """The structured log record the e-mail rule reads (infra/app/alerts.bicep): one per claim, never a secret."""
    destination = alert.details.get("destination", "")
    extra = {
        "event": "alert-resolved" if resolved else "alert",
        "condition": alert.condition,
        "tenant_id": alert.tenant_id,
        "app_id": alert.app_id,
        "customer": alert.customer,
        "destination": destination,
        **{f"detail_{k}": v for k, v in alert.details.items() if k != "destination"},
    }
    if resolved:
        log.warning("RESOLVED %s (%s/%s)", alert.condition, alert.tenant_id, alert.app_id, extra=extra)
    else:
        log.warning("ALERT %s: %s (%s/%s)", alert.condition, alert.message, alert.tenant_id, alert.app_id,
                    extra=extra)


def kept_details(details: Mapping[str, str]) -> dict[str, str]:
    """The details as the row keeps them: bounded well under a Tables property's 64 KiB, and still valid JSON."""
    return {str(k)[:100]: str(v)[:1000] for k, v in list(details.items())[:20]}


@dataclass(frozen=True)
class Row:
    """One row of the book, as read."""

    entity: Mapping[str, Any]
    etag: str

    @property
    def alert(self) -> Alert:
        e = self.entity
        details = json.loads(e.get("Details") or "{}")
        return Alert(e["Condition"], e["TenantId"], e["AppId"], e.get("Message", ""), e.get("Customer", ""),
                     {str(k): str(v) for k, v in details.items()})

    @property
    def condition(self) -> Condition:
        return self.entity["Condition"], self.entity.get("Destination", "")

    def get(self, name: str, default: Any = "") -> Any:
        return self.entity.get(name, default)


class AlertBook:
    """The production alerter: the once-a-day claims and the resolutions, logged always and posted to the channel
    when one is configured (None: the log records alone, which the e-mail rule reads)."""

    def __init__(self, table: TableClient, clock: Clock, channel: AlertChannel | None = None) -> None:
        self._table = table
        self._clock = clock
        self.channel = channel
        # What follows the book after each pass (redeliver): the ticket book's reconcile, when tickets are configured.
        self.followers: list[Callable[[], Awaitable[Any]]] = []
        self._table_ready = False

    # ------------------------------------------------------------------ raise

    async def raise_alert(self, alert: Alert) -> None:
        """Log and tell this condition unless it was told today; never raises."""
        now = self._clock.now().astimezone(UTC)
        try:
            await self._raise(alert, now)
        except AzureError as error:
            # Without the book, one more message beats a silent condition.
            log.warning("alert book unavailable (%s); telling anyway", type(error).__name__,
                        extra={"event": "alert-book", "condition": alert.condition, "outcome": "unavailable"})
            alert_record(alert)
            await self._deliver(alert, NoticeKind.ALERT, now)

    async def _raise(self, alert: Alert, now: datetime) -> None:
        await self._ensure_table()
        day = now.date().isoformat()
        pk, rk = row_keys(alert.tenant_id, alert.app_id, alert.condition, alert.details.get("destination", ""))
        for _ in range(3):  # a lost ETag race is decided by reading the winner's row
            row = await self._read(pk, rk)
            fields = self._fields(alert, now, day)
            try:
                if row is not None and staged(alert.condition) and not row.get("ResolvedAt"):
                    # A staged warning is told once per credential, not once a day: only a post the channel did
                    # not take is tried again.
                    if not row.get("Told", False) and self._may_retry(row, now):
                        etag = await self._update(pk, rk, row.etag, {"Attempt": now.isoformat()})
                        await self._post(alert, NoticeKind.ALERT, now, pk, rk, etag)
                    return
                if row is None:
                    etag = (await self._table.create_entity({"PartitionKey": pk, "RowKey": rk, **fields,
                                                              "OpenedAt": now.isoformat()}))["etag"]
                    await self._announce(alert, now, pk, rk, etag)
                elif row.get("Day") != day:
                    etag = await self._update(pk, rk, row.etag, {**fields, "OpenedAt": self._opened(row, now)})
                    await self._announce(alert, now, pk, rk, etag)
                elif row.get("ResolvedAt"):
                    # Back the day it cleared: open again, quietly (told today already). `Quiet` makes its next
                    # clearing quiet too; `Closed` is kept, so a resolved note the channel has not taken is still owed.
                    await self._update(pk, rk, row.etag, {"ResolvedAt": "", "Quiet": True, "Message": alert.message})
                elif not row.get("Told", False) and self._may_retry(row, now):
                    etag = await self._update(pk, rk, row.etag, {"Attempt": now.isoformat()})
                    await self._post(alert, NoticeKind.ALERT, now, pk, rk, etag)
                return
            except _CONFLICT:
                continue

    def _fields(self, alert: Alert, now: datetime, day: str) -> dict[str, Any]:
        told = self.channel is None  # with no channel the log record is the whole telling
        return {"Condition": alert.condition, "TenantId": alert.tenant_id, "AppId": alert.app_id,
                "Destination": alert.details.get("destination", ""), "Customer": alert.customer,
                "Message": alert.message[:4000], "Details": json.dumps(kept_details(alert.details)), "Day": day,
                "Told": told, "Attempt": "" if told else now.isoformat(), "ResolvedAt": "", "Closed": False,
                "Quiet": False}

    @staticmethod
    def _opened(row: Row, now: datetime) -> str:
        return now.isoformat() if row.get("Closed", False) else row.get("OpenedAt") or now.isoformat()

    async def _announce(self, alert: Alert, now: datetime, pk: str, rk: str, etag: str) -> None:
        alert_record(alert)
        if self.channel is not None:
            await self._post(alert, NoticeKind.ALERT, now, pk, rk, etag)

    # ------------------------------------------------------------------ settle

    async def settle(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None:
        """Resolve this target's open conditions that no longer hold (once each), tell again on a new day those
        still holding, forget closed rows of earlier days; never raises."""
        now = self._clock.now().astimezone(UTC)
        rows = await self._rows(tenant_id, app_id, "resolutions wait for the next pass")
        for row in rows or ():
            if staged(row.get("Condition")):
                continue  # the warnings pass settles staged warnings (settle_stages), not a target's advance
            try:
                await self._settle_row(row, holding, now)
            except _CONFLICT:
                continue  # another runner moved this row first: it settles it
            except (AzureError, KeyError, ValueError) as error:
                # A row this code cannot read or write is left for the next pass; the others are settled.
                log.warning("alert book row not settled (%s)", type(error).__name__,
                            extra={"event": "alert-book", "outcome": "failed", "condition": row.get("Condition")})

    async def _rows(self, tenant_id: str, app_id: str, then: str) -> list[Row] | None:
        """Every row of one target's partition; None (logged, saying what waits: `then`) when the book is
        unreadable."""
        try:
            await self._ensure_table()
            pk, _ = row_keys(tenant_id, app_id, "", "")
            return [Row(e, str(e.metadata["etag"])) async for e in
                    self._table.query_entities("PartitionKey eq @pk", parameters={"pk": pk})]
        except AzureError as error:
            log.warning("alert book unreadable (%s); %s", type(error).__name__, then,
                        extra={"event": "alert-book", "outcome": "unavailable", "tenant_id": tenant_id,
                               "app_id": app_id})
            return None

    async def _settle_row(self, row: Row, holding: frozenset[Condition], now: datetime) -> None:
        day = now.date().isoformat()
        pk, rk = row.entity["PartitionKey"], row.entity["RowKey"]
        quiet = bool(row.get("Quiet", False)) and not row.get("ResolvedAt")  # reopened quietly, open now
        if (row.get("Closed", False) and not quiet) or not resolvable(row.get("Condition")):
            if row.get("Day") != day:  # a closed condition or a one-off notice of an earlier day: nothing to keep
                await self._table.delete_entity(pk, rk, etag=row.etag, match_condition=MatchConditions.IfNotModified)
            return
        if row.condition in holding:
            if not row.get("ResolvedAt") and row.get("Day") != day:
                await self._raise(row.alert, now)  # still holds on a new day: told again (claim, log, post)
            return
        if quiet:
            # Cleared again after a quiet reopening: people heard one alert and one resolution already, so no
            # second record or note; a note the channel has not taken yet (Closed false) is still redelivered.
            etag = await self._update(pk, rk, row.etag, {"ResolvedAt": now.isoformat(), "Quiet": False})
            if not row.get("Closed", False) and self.channel is not None and self._may_retry(row, now):
                etag = await self._update(pk, rk, etag, {"Attempt": now.isoformat()})
                await self._post(row.alert, NoticeKind.RESOLVED, now, pk, rk, etag)
            return
        if not row.get("ResolvedAt"):
            closed = self.channel is None
            etag = await self._update(pk, rk, row.etag, {"ResolvedAt": now.isoformat(), "Closed": closed,
                                                         "Attempt": "" if closed else now.isoformat()})
            alert_record(row.alert, resolved=True)
            if not closed:
                await self._post(row.alert, NoticeKind.RESOLVED, now, pk, rk, etag)
        elif self.channel is not None and self._may_retry(row, now):
            etag = await self._update(pk, rk, row.etag, {"Attempt": now.isoformat()})
            await self._post(row.alert, NoticeKind.RESOLVED, now, pk, rk, etag)

    async def settle_stages(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None:
        """Settle the staged expiry warnings of one app of a tenant: one no longer holding is resolved with its note
        once (renewed or removed), or closed without a note when a tighter threshold of the same credential holds
        (superseded); one still holding is never told again. Never raises."""
        now = self._clock.now().astimezone(UTC)
        rows = await self._rows(tenant_id, app_id, "warnings settle at the next pass")
        if rows is None:
            return
        credentials_held = {place for condition, place in holding if staged(condition)}
        for row in rows:
            if not staged(row.get("Condition")):
                continue
            try:
                if (row.condition not in holding and not row.get("ResolvedAt")
                        and row.get("Destination") in credentials_held):
                    # Superseded by a tighter threshold of the same credential: people were told, and are told again
                    # by the tighter warning; the looser one goes without a note.
                    await self._table.delete_entity(row.entity["PartitionKey"], row.entity["RowKey"], etag=row.etag,
                                                    match_condition=MatchConditions.IfNotModified)
                    continue
                await self._settle_row(row, holding, now)
            except _CONFLICT:
                continue
            except (AzureError, KeyError, ValueError) as error:
                log.warning("alert book row not settled (%s)", type(error).__name__,
                            extra={"event": "alert-book", "outcome": "failed", "condition": row.get("Condition")})

    async def staged_apps(self, tenant_id: str) -> set[str]:
        """The app ids of a tenant that have staged warnings in the book (open or owing a note): what to settle
        besides the apps with warnings holding (one query per tenant; empty when unreadable)."""
        try:
            await self._ensure_table()
            # Partition keys are "<tenant>_<app>"; "`" is the character after "_", closing the tenant's range.
            low, high = _safe(f"{tenant_id}_"), _safe(f"{tenant_id}`")
            return {str(e.get("AppId", "")) async for e in self._table.query_entities(
                "PartitionKey ge @low and PartitionKey lt @high and Condition ge @first and Condition lt @last",
                parameters={"low": low, "high": high, "first": STAGE_PREFIX, "last": STAGE_PREFIX[:-1] + "."},
                select=["AppId"])}
        except AzureError as error:
            log.warning("alert book unreadable (%s)", type(error).__name__,
                        extra={"event": "alert-book", "outcome": "unavailable", "tenant_id": tenant_id})
            return set()

    async def staged_tenants(self) -> set[str]:
        """The tenants with staged warnings in the book (one filtered query over the book; empty when unreadable):
        the warnings pass settles them even when none of their targets is registered any more."""
        try:
            await self._ensure_table()
            return {str(e.get("TenantId", "")) async for e in self._table.query_entities(
                "Condition ge @first and Condition lt @last",
                parameters={"first": STAGE_PREFIX, "last": STAGE_PREFIX[:-1] + "."}, select=["TenantId"])}
        except AzureError as error:
            log.warning("alert book unreadable (%s)", type(error).__name__,
                        extra={"event": "alert-book", "outcome": "unavailable"})
            return set()

    async def redeliver(self) -> None:
        """After each pass: post again what the channel has not taken, then let each follower (the ticket book,
        shared/tickets/book.py) converge to the book's open rows; never raises."""
        await self._repost()
        for follow in self.followers:
            try:
                await follow()
            except Exception as error:  # a follower's defect must not fail the pass that called us
                log.error("alert book follower failed (%s)", type(error).__name__,
                          extra={"event": "alert-book", "outcome": "follower-failed"})

    async def open_rows(self) -> list[Mapping[str, Any]] | None:
        """Every row not resolved (a condition holding, a notice of the day), as stored; None when unreadable (a
        follower then changes nothing: an unreadable book is not an empty one)."""
        try:
            await self._ensure_table()
            return [e async for e in self._table.query_entities("ResolvedAt eq ''")]
        except AzureError as error:
            log.warning("alert book unreadable (%s)", type(error).__name__,
                        extra={"event": "alert-book", "outcome": "unavailable"})
            return None

    async def _repost(self) -> None:
        """Post again, once their attempt is no longer in flight, the alerts of today the channel has not taken and
        every resolved note it has not taken: a target that went quiet after its condition cleared is not settled
        again, so each pass sweeps the book for them (two filtered queries; never raises)."""
        if self.channel is None:
            return
        now = self._clock.now().astimezone(UTC)
        day = now.date().isoformat()
        try:
            await self._ensure_table()
            # azure-data-tables substitutes "@day" only as a word of its own: hence the space before ")".
            rows = [Row(e, str(e.metadata["etag"])) async for e in self._table.query_entities(
                "(Closed eq false and ResolvedAt ne '') or (Told eq false and ResolvedAt eq '' and Day eq @day )",
                parameters={"day": day})]
        except AzureError as error:
            log.warning("alert book unreadable (%s); nothing redelivered", type(error).__name__,
                        extra={"event": "alert-book", "outcome": "unavailable"})
            return
        for row in rows:
            if not self._may_retry(row, now):
                continue
            pk, rk = row.entity["PartitionKey"], row.entity["RowKey"]
            kind = NoticeKind.RESOLVED if row.get("ResolvedAt") else NoticeKind.ALERT
            try:
                etag = await self._update(pk, rk, row.etag, {"Attempt": now.isoformat()})
                await self._post(row.alert, kind, now, pk, rk, etag)
            except _CONFLICT:
                continue
            except (AzureError, KeyError, ValueError) as error:
                log.warning("alert not redelivered (%s)", type(error).__name__,
                            extra={"event": "alert-book", "outcome": "failed", "condition": row.get("Condition")})

    # ------------------------------------------------------------------ the channel

    @staticmethod
    def _may_retry(row: Row, now: datetime) -> bool:
        """No post in flight: none began, or the last began longer ago than a post can take (it was cut)."""
        began = row.get("Attempt")
        return not began or now - datetime.fromisoformat(began) > RETRY_AFTER

    async def _post(self, alert: Alert, kind: NoticeKind, now: datetime, pk: str, rk: str, etag: str) -> None:
        """Post, then record the outcome on the row: told (or closed), or the attempt given back for the next
        occurrence. A row changed meanwhile keeps the newer state."""
        ok = await self._deliver(alert, kind, now)
        done = {"Told": True} if kind is NoticeKind.ALERT else {"Closed": True}
        try:
            await self._update(pk, rk, etag, {**done, "Attempt": ""} if ok else {"Attempt": ""})
        except (*_CONFLICT, AzureError):
            pass

    async def _deliver(self, alert: Alert, kind: NoticeKind, now: datetime) -> bool:
        """One post to the channel; True when it answered 2xx. Logged without the URL either way."""
        if self.channel is None:
            return True
        notice = Notice(kind, alert.condition, alert.tenant_id, alert.app_id, alert.message, now, alert.customer,
                        alert.details)
        extra = {"event": "alert-webhook", "kind": kind.value, "channel": self.channel.kind,
                 "condition": alert.condition, "tenant_id": alert.tenant_id, "app_id": alert.app_id}
        try:
            status = await (self.channel.resolve(notice) if kind is NoticeKind.RESOLVED else self.channel.send(notice))
        except RotationError as error:
            log.error("alert channel failed: %s", error.message,
                      extra={**extra, "outcome": "failed", "error_code": error.code})
            return False
        if not 200 <= status < 300:
            log.error("alert channel answered HTTP %s", status, extra={**extra, "outcome": "rejected",
                                                                      "status": status})
            return False
        log.info("alert posted to the channel", extra={**extra, "outcome": "posted", "status": status})
        return True

    # ------------------------------------------------------------------ the table

    async def _read(self, pk: str, rk: str) -> Row | None:
        try:
            entity = await self._table.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        return Row(entity, str(entity.metadata["etag"]))

    async def _update(self, pk: str, rk: str, etag: str, fields: Mapping[str, Any]) -> str:
        return await merge_row(self._table, pk, rk, etag, fields)

    async def _ensure_table(self) -> None:
        if not self._table_ready:
            await create_table(self._table)
            self._table_ready = True


async def merge_row(table: TableClient, pk: str, rk: str, etag: str, fields: Mapping[str, Any]) -> str:
    """Merge fields into the row if nobody wrote it since `etag` (ResourceModifiedError otherwise); its new ETag."""
    answer = await table.update_entity({"PartitionKey": pk, "RowKey": rk, **fields}, mode=UpdateMode.MERGE,
                                       etag=etag, match_condition=MatchConditions.IfNotModified)
    return str(answer["etag"])


async def create_table(table: TableClient) -> None:
    """Create the book's table; one that exists already is fine."""
    try:
        await table.create_table()
    except ResourceExistsError:
        pass
