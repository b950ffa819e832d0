"""The credential inventory on Azure Tables: table `inventory`, one row per credential, one partition per tenant
(row key `<objectKind>|<objectId>|<keyId>`, so one object's rows are a key range and one object's writes are one
entity-group transaction); table `inventorylinks`, one row per tenant holding per object kind the delta link the
next pass resumes from. No row holds a secret: Graph lists credentials without their values."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.adapters.tables import _create_tables, _dt, _iso, _translate
from shared.inventory import CredentialKind, InventoryCredential, InventoryQuery, ObjectKind

_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)
LINKS_ROW = "links"  # table `inventorylinks`: one row per tenant, a property per object kind
BATCH = 100  # Azure Tables: at most 100 operations in one entity-group transaction, one partition
_FEW = 28  # up to this many objects, their rows are looked up by their key ranges; more: the kind's whole range
RANGES_PER_QUERY = 7


_PLAIN = re.compile(r"[A-Za-z0-9._~|-]*")


def _key(value: str) -> str:
    """A key inside an entity's address: quotes doubled (OData), then percent-encoded (a GUID with `|`, the usual
    key, takes the fast path: urllib's quote costs more than the rest of the row)."""
    if _PLAIN.fullmatch(value):
        return value.replace("|", "%7C")
    return quote(value.replace("'", "''"), safe="")


def row_key(kind: ObjectKind | str, object_id: str, key_id: str = "") -> str:
    return f"{ObjectKind(kind).value}|{object_id}|{key_id}"


RANGE = "PartitionKey eq @tenant and RowKey ge @low and RowKey lt @high"


def _range(tenant_id: str, prefix: str) -> dict[str, Any]:
    # "~" sorts after every character of a GUID and of "|": the range [prefix, prefix~) is the prefix's rows.
    return {"tenant": tenant_id, "low": prefix, "high": prefix + "~"}


def to_entity(c: InventoryCredential) -> dict[str, Any]:
    entity = {
        "PartitionKey": c.tenant_id, "RowKey": row_key(c.object_kind, c.object_id, c.key_id),
        "Customer": c.customer, "ObjectKind": c.object_kind.value, "ObjectId": c.object_id, "AppId": c.app_id,
        "DisplayName": c.display_name, "Owners": json.dumps(list(c.owners)), "CredentialKind": c.credential_kind.value,
        "Usage": c.usage, "KeyId": c.key_id, "Hint": c.hint, "CredentialName": c.credential_name,
        "Start": _iso(c.start), "End": _iso(c.end), "Managed": c.managed, "FirstParty": c.first_party, "Saml": c.saml,
    }
    return {k: v for k, v in entity.items() if v is not None}


def to_credential(e: Mapping[str, Any]) -> InventoryCredential:
    return InventoryCredential(
        tenant_id=str(e["PartitionKey"]), customer=str(e.get("Customer", "")),
        object_kind=ObjectKind(e["ObjectKind"]), object_id=str(e["ObjectId"]), app_id=str(e.get("AppId", "")),
        display_name=str(e.get("DisplayName", "")), owners=tuple(json.loads(e.get("Owners") or "[]")),
        credential_kind=CredentialKind(e["CredentialKind"]), usage=str(e.get("Usage", "")),
        key_id=str(e.get("KeyId", "")), hint=str(e.get("Hint", "")), credential_name=str(e.get("CredentialName", "")),
        start=_dt(e.get("Start")), end=_dt(e.get("End")), managed=bool(e.get("Managed", False)),
        first_party=bool(e.get("FirstParty", False)), saml=bool(e.get("Saml", False)),
    )


class TablesInventoryStore:
    """InventoryStore on Azure Tables (Azurite locally); tables created on first use."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._rows: TableClient = service.get_table_client(f"{prefix}inventory")
        self._links: TableClient = service.get_table_client(f"{prefix}inventorylinks")
        self._ready = False
        self._creating = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._creating:
            if not self._ready:
                await _create_tables(self._service, (self._rows, self._links))
                self._ready = True

    async def list_credentials(self, query: InventoryQuery | None = None) -> list[InventoryCredential]:
        wanted = query or InventoryQuery()
        return [c async for c in self.stream(wanted.tenant_id) if wanted.matches(c)]

    async def stream(self, tenant_id: str = "") -> AsyncIterator[InventoryCredential]:
        await self._ensure()
        try:
            if tenant_id:
                pages = self._rows.query_entities("PartitionKey eq @tenant", parameters={"tenant": tenant_id})
            else:
                pages = self._rows.list_entities()
            async for entity in pages:
                yield to_credential(entity)
        except AzureError as error:
            raise _translate(error, "the inventory") from error

    async def objects_credentials(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                                  ) -> dict[str, list[InventoryCredential]]:
        if not object_ids:
            return {}
        await self._ensure()
        found: dict[str, list[InventoryCredential]] = {}
        try:
            for entity in await self._rows_of(tenant_id, object_kind, object_ids):
                credential = to_credential(entity)
                found.setdefault(credential.object_id, []).append(credential)
        except AzureError as error:
            raise _translate(error, f"the inventory of tenant {tenant_id}") from error
        return found

    async def _rows_of(self, tenant_id: str, kind: ObjectKind, object_ids: Sequence[str],
                       select: list[str] | None = None) -> list[dict[str, Any]]:
        """The stored rows of these objects: their key ranges joined with `or`, up to RANGES_PER_QUERY objects a
        query (Tables allows 15 comparisons in a filter: the partition's and two per range), queries side by side;
        the kind's whole range filtered here when the objects are many."""
        if len(object_ids) > _FEW:
            wanted = set(object_ids)
            return [e async for e in self._rows.query_entities(
                RANGE, parameters=_range(tenant_id, f"{kind.value}|"), select=select)
                if str(e["RowKey"]).split("|")[1] in wanted]

        async def some(chunk: Sequence[str]) -> list[dict[str, Any]]:
            # Spaces around every parameter: the SDK finds `@name` by splitting the filter on whitespace.
            ranges = " or ".join(f"( RowKey ge @low{i} and RowKey lt @high{i} )" for i in range(len(chunk)))
            parameters: dict[str, Any] = {"tenant": tenant_id}
            for i, object_id in enumerate(chunk):
                prefix = row_key(kind, object_id)
                parameters[f"low{i}"], parameters[f"high{i}"] = prefix, prefix + "~"
            return [e async for e in self._rows.query_entities(
                f"PartitionKey eq @tenant and ( {ranges} )", parameters=parameters, select=select)]

        chunks = [object_ids[i:i + RANGES_PER_QUERY] for i in range(0, len(object_ids), RANGES_PER_QUERY)]
        return [e for rows in await asyncio.gather(*(some(c) for c in chunks)) for e in rows]

    async def _keys(self, tenant_id: str, kind: ObjectKind, object_ids: Sequence[str]) -> list[str]:
        """The stored row keys of these objects."""
        return [str(e["RowKey"]) for e in await self._rows_of(tenant_id, kind, object_ids, select=["RowKey"])]

    async def _submit(self, tenant_id: str, operations: list[tuple[str, dict[str, Any]]]) -> None:
        for start in range(0, len(operations), BATCH):
            chunk = operations[start:start + BATCH]
            try:
                await self._transaction(chunk)
            except TableTransactionError:
                # Another writer removed a row first (a delete of a missing row fails the whole batch): one by one.
                for operation, entity in chunk:
                    try:
                        if operation == "delete":
                            await self._rows.delete_entity(entity["PartitionKey"], entity["RowKey"])
                        else:
                            await self._rows.upsert_entity(entity, mode=UpdateMode.REPLACE)
                    except ResourceNotFoundError:
                        pass

    async def _transaction(self, operations: list[tuple[str, dict[str, Any]]]) -> None:
        """One entity-group transaction (`POST /$batch`), its multipart body written here.

        azure-data-tables' `submit_transaction` builds and parses the multipart body with the standard library's
        `email` package: about 4 ms of CPU per entity (docs/benchmarks.md, "Credential inventory"), 15 times the
        inventory's whole budget per tenant. The body is the documented format ("Performing entity group
        transactions", Azure Storage REST reference): a changeset of PUT (insert or replace) and DELETE (`If-Match:
        *`) requests; it is sent through the SDK's own pipeline (its authentication, retries and headers)."""
        client = self._rows
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        parts = []
        for operation, entity in operations:
            target = (f"{client.url}/{client.table_name}(PartitionKey='{_key(entity['PartitionKey'])}',"
                      f"RowKey='{_key(entity['RowKey'])}')")
            if operation == "delete":
                parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                             f"\r\n\r\nDELETE {target} HTTP/1.1\r\nAccept: application/json;odata=minimalmetadata"
                             f"\r\nIf-Match: *\r\nDataServiceVersion: 3.0\r\n\r\n")
            else:
                body = json.dumps(entity, separators=(",", ":"))
                parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                             f"\r\n\r\nPUT {target} HTTP/1.1\r\nContent-Type: application/json\r\n"
                             f"Accept: application/json;odata=minimalmetadata\r\nDataServiceVersion: 3.0\r\n"
                             f"Content-Length: {len(body.encode())}\r\n\r\n{body}\r\n")
        content = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
                   + "".join(parts) + f"--{changeset}--\r\n--{batch}--\r\n").encode()
        request = HttpRequest("POST", f"{client.scheme}://{client._primary_hostname}/$batch", content=content,
                              headers={"Content-Type": f"multipart/mixed; boundary={batch}",
                                       "x-ms-version": client.api_version, "DataServiceVersion": "3.0",
                                       "MaxDataServiceVersion": "3.0;NetFx", "Accept": "application/json"})
        response = await client._client.send_request(request, stream=True)
        answer = await response.read()
        if response.status_code != 202:
            raise HttpResponseError(message=f"entity group transaction answered {response.status_code}",
                                    response=response)
        statuses = [int(code) for code in _STATUS.findall(answer)]
        if not statuses or any(not 200 <= code < 300 for code in statuses):
            raise TableTransactionError(message=f"entity group transaction refused: {statuses[:1]}")

    async def put_objects(self, tenant_id: str, object_kind: ObjectKind,
                          objects: Mapping[str, Sequence[InventoryCredential]], *,
                          stored: Mapping[str, Sequence[str]] | None = None) -> None:
        if not objects:
            return
        await self._ensure()
        known = stored or {}
        try:
            unknown = [object_id for object_id in objects if object_id not in known]
            keys = await self._keys(tenant_id, object_kind, unknown) if unknown else []
            keys += [row_key(object_kind, o, k) for o in objects if o in known for k in known[o]]
            upserts = [to_entity(c) for rows in objects.values() for c in rows]
            kept = {e["RowKey"] for e in upserts}
            operations: list[tuple[str, dict[str, Any]]] = [
                ("delete", {"PartitionKey": tenant_id, "RowKey": key}) for key in keys if key not in kept]
            operations += [("upsert", e) for e in upserts]
            await self._submit(tenant_id, operations)
        except AzureError as error:
            raise _translate(error, f"the inventory of tenant {tenant_id}") from error

    async def remove_objects(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]) -> None:
        if not object_ids:
            return
        await self._ensure()
        try:
            stored = await self._keys(tenant_id, object_kind, object_ids)
            await self._submit(tenant_id, [("delete", {"PartitionKey": tenant_id, "RowKey": k}) for k in stored])
        except AzureError as error:
            raise _translate(error, f"the inventory of tenant {tenant_id}") from error

    async def object_ids(self, tenant_id: str, object_kind: ObjectKind) -> set[str]:
        await self._ensure()
        try:
            return {str(e["RowKey"]).split("|")[1] async for e in self._rows.query_entities(
                RANGE, parameters=_range(tenant_id, f"{object_kind.value}|"), select=["RowKey"])}
        except AzureError as error:
            raise _translate(error, f"the inventory of tenant {tenant_id}") from error

    async def delta_links(self, tenant_id: str) -> dict[ObjectKind, str]:
        await self._ensure()
        try:
            entity = await self._links.get_entity(tenant_id, LINKS_ROW)
        except ResourceNotFoundError:
            return {}
        except AzureError as error:
            raise _translate(error, f"the delta links of tenant {tenant_id}") from error
        return {kind: str(entity[kind.value]) for kind in ObjectKind if entity.get(kind.value)}

    async def save_delta_links(self, tenant_id: str, links: Mapping[ObjectKind, str | None]) -> None:
        if not links:
            return
        await self._ensure()
        # MERGE: a kind not named keeps its link; "" is "none" (a merge cannot remove a property).
        entity = {"PartitionKey": tenant_id, "RowKey": LINKS_ROW, **{k.value: v or "" for k, v in links.items()}}
        try:
            await self._links.upsert_entity(entity, mode=UpdateMode.MERGE)
        except AzureError as error:
            raise _translate(error, f"the delta links of tenant {tenant_id}") from error

    async def remove_tenant(self, tenant_id: str) -> None:
        await self._ensure()
        try:
            keys = [str(e["RowKey"]) async for e in self._rows.query_entities(
                "PartitionKey eq @tenant", parameters={"tenant": tenant_id}, select=["RowKey"])]
            await self._submit(tenant_id, [("delete", {"PartitionKey": tenant_id, "RowKey": k}) for k in keys])
            try:
                await self._links.delete_entity(tenant_id, LINKS_ROW)
            except ResourceNotFoundError:
                pass
        except AzureError as error:
            raise _translate(error, f"the inventory of tenant {tenant_id}") from error

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row of both tables as stored: for tests that prove nothing secret is written."""
        await self._ensure()
        rows = [dict(e) async for e in self._rows.list_entities()]
        return rows + [dict(e) async for e in self._links.list_entities()]
