"""Warning thresholds and exclusions on Azure Tables: table `warningrules`, partition `thresholds` (row key: the
tenant) and partition `exclusions` (row key: the exclusion id). A lifted exclusion stays, marked with who lifted it
and when: with who made it, why and until, the row is its own record, whatever the audit log holds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.adapters.tables import _create_tables, _dt, _iso, _translate
from shared.errors import Conflict
from shared.expiry_warnings import Exclusion, Scope

THRESHOLDS, EXCLUSIONS = "thresholds", "exclusions"


def to_entity(e: Exclusion) -> dict[str, Any]:
    entity = {"PartitionKey": EXCLUSIONS, "RowKey": e.exclusion_id, "TenantId": e.tenant_id, "Scope": e.scope.value,
              "AppId": e.app_id, "KeyId": e.key_id, "Until": _iso(e.until), "By": e.by, "Why": e.why,
              "At": _iso(e.at), "LiftedBy": e.lifted_by or None, "LiftedAt": _iso(e.lifted_at)}
    return {k: v for k, v in entity.items() if v is not None}


def to_exclusion(e: Any) -> Exclusion:
    at = _dt(e.get("At"))
    assert at is not None  # written with every exclusion
    return Exclusion(str(e["RowKey"]), str(e["TenantId"]), Scope(e["Scope"]), str(e.get("AppId", "")),
                     str(e.get("KeyId", "")), _dt(e.get("Until")), str(e.get("By", "")), str(e.get("Why", "")), at,
                     str(e.get("LiftedBy", "")), _dt(e.get("LiftedAt")))


class TablesWarningRules:
    """WarningRules on Azure Tables (Azurite locally); the table is created on first use."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._table: TableClient = service.get_table_client(f"{prefix}warningrules")
        self._ready = False
        self._creating = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._creating:
            if not self._ready:
                await _create_tables(self._service, (self._table,))
                self._ready = True

    async def thresholds(self) -> dict[str, tuple[int, ...]]:
        await self._ensure()
        try:
            return {str(e["RowKey"]): tuple(int(d) for d in str(e["Days"]).split(",")) async for e in
                    self._table.query_entities("PartitionKey eq @pk", parameters={"pk": THRESHOLDS})}
        except AzureError as error:
            raise _translate(error, "the warning thresholds") from error

    async def put_thresholds(self, tenant_id: str, days: tuple[int, ...], by: str, at: datetime) -> None:
        await self._ensure()
        try:
            await self._table.upsert_entity({"PartitionKey": THRESHOLDS, "RowKey": tenant_id,
                                             "Days": ",".join(str(d) for d in days), "By": by, "At": _iso(at)},
                                            mode=UpdateMode.REPLACE)
        except AzureError as error:
            raise _translate(error, "the warning thresholds") from error

    async def exclusions(self, tenant_id: str = "") -> list[Exclusion]:
        await self._ensure()
        query, parameters = "PartitionKey eq @pk", {"pk": EXCLUSIONS}
        if tenant_id:
            query, parameters = query + " and TenantId eq @tenant", {**parameters, "tenant": tenant_id}
        try:
            found = [to_exclusion(e) async for e in self._table.query_entities(query, parameters=parameters)]
        except AzureError as error:
            raise _translate(error, "the exclusions") from error
        return sorted(found, key=lambda e: (e.at, e.exclusion_id))

    async def add_exclusion(self, exclusion: Exclusion) -> None:
        await self._ensure()
        try:
            await self._table.create_entity(to_entity(exclusion))
        except AzureError as error:
            raise _translate(error, f"exclusion {exclusion.exclusion_id}") from error

    async def lift_exclusion(self, exclusion_id: str, by: str, at: datetime) -> Exclusion:
        await self._ensure()
        try:
            entity = await self._table.get_entity(EXCLUSIONS, exclusion_id)
            if entity.get("LiftedAt"):
                raise Conflict(f"exclusion {exclusion_id} was lifted before", code="AlreadyLifted")
            # ETag-guarded: of two operators lifting it at once, one wins and the other is told it was lifted.
            await self._table.update_entity({"PartitionKey": EXCLUSIONS, "RowKey": exclusion_id, "LiftedBy": by,
                                             "LiftedAt": _iso(at)}, mode=UpdateMode.MERGE,
                                            etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except AzureError as error:
            raise _translate(error, f"exclusion {exclusion_id}") from error
        return replace(to_exclusion(entity), lifted_by=by, lifted_at=at)

    async def prune_exclusions(self, now: datetime, keep_lifted: timedelta) -> list[Exclusion]:
        await self._ensure()
        pruned: list[Exclusion] = []
        try:
            entities = [e async for e in self._table.query_entities("PartitionKey eq @pk",
                                                                    parameters={"pk": EXCLUSIONS})]
            for entity in entities:
                e = to_exclusion(entity)
                lapsed = e.lifted_at is None and e.until is not None and e.until <= now
                forgotten = e.lifted_at is not None and e.lifted_at <= now - keep_lifted
                if not (lapsed or forgotten):
                    continue
                try:  # ETag-guarded: a snooze lifted meanwhile is the lifter's to record, not ours
                    await self._table.delete_entity(EXCLUSIONS, e.exclusion_id, etag=entity.metadata["etag"],
                                                    match_condition=MatchConditions.IfNotModified)
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
                if lapsed:
                    pruned.append(e)
        except AzureError as error:
            raise _translate(error, "the exclusions") from error
        return pruned
