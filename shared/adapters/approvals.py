"""The approvals book on Azure Tables (change control's approval mode): table `approvals`, one row per target
(PartitionKey `req-<tenant id>`, RowKey its app id) holding the request for the key being replaced, and one row per
signed approval link already used (PartitionKey `link`, RowKey its nonce: an insert, so a second use fails
atomically). Every write of a request is ETag-guarded; nothing secret is ever a property."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.adapters.tables import _create_tables, _drop_none, _dt, _iso, _translate, _use_once, _written
from shared.change_control import ApprovalRequest, ApprovalStatus
from shared.errors import Conflict

_REQUEST = "req-"
_LINK = "link"


def _entity(r: ApprovalRequest) -> dict[str, Any]:
    return _drop_none({
        "PartitionKey": f"{_REQUEST}{r.tenant_id}", "RowKey": r.app_id, "TenantId": r.tenant_id, "AppId": r.app_id,
        "RequestId": r.request_id, "KeyId": r.key_id, "Status": r.status.value, "RequestedAt": _iso(r.requested_at),
        "Customer": r.customer, "Expires": _iso(r.expires), "ForceOn": _iso(r.force_on),
        "DecidedBy": r.decided_by, "DecidedAt": _iso(r.decided_at), "Until": _iso(r.until), "Reason": r.reason,
    })


def _request(e: Mapping[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(
        e["TenantId"], e["AppId"], e["RequestId"], e.get("KeyId", ""), ApprovalStatus(e["Status"]),
        _dt(e.get("RequestedAt")) or datetime.fromisoformat("1970-01-01T00:00:00+00:00"), e.get("Customer", ""),
        _dt(e.get("Expires")), _dt(e.get("ForceOn")), e.get("DecidedBy", ""), _dt(e.get("DecidedAt")),
        _dt(e.get("Until")), e.get("Reason", ""))


class TablesApprovals:
    """Approvals on Azure Tables (Azurite locally); the table is created on first use."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._table: TableClient = service.get_table_client(f"{prefix}approvals")
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            await _create_tables(self._service, (self._table,))
            self._ready = True

    async def get(self, tenant_id: str, app_id: str) -> tuple[ApprovalRequest, str] | None:
        await self._ensure()
        try:
            e = await self._table.get_entity(f"{_REQUEST}{tenant_id}", app_id)
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise _translate(error, f"approval of {tenant_id}/{app_id}") from error
        return _request(e), str(e.metadata["etag"])

    async def put(self, request: ApprovalRequest, etag: str | None) -> str:
        await self._ensure()
        entity = _entity(request)
        what = f"approval of {request.tenant_id}/{request.app_id}"
        try:
            if etag is None:
                return str((await self._table.create_entity(entity))["etag"])
            return str((await self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified))["etag"])
        except (ResourceExistsError, ResourceModifiedError) as error:
            # The SDK re-sends a write whose answer was lost: our own row as written is our write.
            mine = await _written(self._table, entity)
            if mine is not None:
                return mine
            raise Conflict(f"the {what} was changed by another writer", code="ApprovalChanged") from error
        except AzureError as error:
            raise _translate(error, what) from error

    async def remove(self, tenant_id: str, app_id: str, etag: str) -> None:
        await self._ensure()
        try:
            await self._table.delete_entity(f"{_REQUEST}{tenant_id}", app_id, etag=etag,
                                            match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return
        except ResourceModifiedError as error:
            raise Conflict(f"the approval of {tenant_id}/{app_id} was changed by another writer",
                           code="ApprovalChanged") from error
        except AzureError as error:
            raise _translate(error, f"approval of {tenant_id}/{app_id}") from error

    async def list_requests(self) -> list[ApprovalRequest]:
        await self._ensure()
        try:
            # "req." is the key after every "req-<tenant>" partition.
            query = self._table.query_entities("PartitionKey ge @low and PartitionKey lt @high",
                                               parameters={"low": _REQUEST, "high": "req."})
            return [_request(e) async for e in query]
        except AzureError as error:
            raise _translate(error, "approvals") from error

    async def use_link(self, nonce: str, expires: datetime) -> None:
        await self._ensure()
        await _use_once(self._table, _LINK, nonce, expires, "approval link",
                        Conflict("this approval link was used already", code="LinkUsed"))

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row as stored: for tests that prove nothing secret is written."""
        await self._ensure()
        return [dict(e) async for e in self._table.list_entities()]
