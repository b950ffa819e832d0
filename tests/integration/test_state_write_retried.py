"""An ETag-guarded write of a target's row whose answer is lost (issue 22, item 11): the SDK's retry (after a 500
or 503) and aiohttp (after a dropped connection) send the PUT again, and when the first was applied the second
answers 412 to its own write. The adapter tells that from a real conflict by reading the row back; a real conflict
still raises Conflict. The real azure-data-tables client, through the sandbox's Tables proxy in front of Azurite."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableServiceClient

from sandbox.client import through_tables_proxy
from shared.adapters.tables import TablesConsentStore, TablesStateStore
from shared.domain import Stage, Target
from shared.errors import Conflict
from shared.ports import Event

pytestmark = pytest.mark.sandbox


@pytest.fixture
async def store(sb: Any) -> AsyncIterator[TablesStateStore]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run through scripts/with-azurite.sh")
    proxied = through_tables_proxy(connection, sb.endpoints["tables"])
    service = TableServiceClient.from_connection_string(proxied, retry_backoff_factor=0.01)
    state = TablesStateStore(service, prefix="t" + uuid.uuid4().hex[:10])
    yield state
    await state.close()


def row_path(target: Target) -> str:
    return rf"\(PartitionKey='{target.tenant_id}',RowKey='{target.app_id}'\)$"


FAULTS = {"500": {"status": 500}, "503": {"status": 503}, "drop": {"drop": True}}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_row_write_whose_answer_was_lost_is_recognised_as_ours(sb: Any, store: TablesStateStore,
                                                                       fault: str) -> None:
    target = Target(str(uuid.uuid4()), str(uuid.uuid4()), "Contoso")
    etag = await store.create_target(target)
    moved = target.with_state(stage=Stage.CREATING, rotation_id=uuid.uuid4().hex, lease_owner="me")
    sb.control.add_fault("tables", method="PUT", path=row_path(target), when="after", **FAULTS[fault])
    new_etag = await store.replace_target(moved, etag)
    assert sb.control.faults() == [], "the fault struck"
    read, read_etag = await store.get_target(target.tenant_id, target.app_id)
    assert read == moved and read_etag == new_etag
    await store.replace_target(moved.with_state(stage=Stage.PENDING), new_etag)  # the ETag it returned is good


async def test_a_real_conflict_is_still_a_conflict(sb: Any, store: TablesStateStore) -> None:
    target = Target(str(uuid.uuid4()), str(uuid.uuid4()), "Contoso")
    etag = await store.create_target(target)
    await store.replace_target(target.with_state(lease_owner="other"), etag)
    with pytest.raises(Conflict):
        await store.replace_target(target.with_state(lease_owner="me"), etag)
    sb.control.add_fault("tables", method="PUT", path=row_path(target), when="after", status=500)
    _, etag = await store.get_target(target.tenant_id, target.app_id)
    await store.replace_target(target.with_state(lease_owner="me"), etag)
    with pytest.raises(Conflict):  # a stale ETag, and a write that differs from the row: not ours
        await store.replace_target(target.with_state(lease_owner="third"), etag)


@pytest.mark.parametrize("fault", ["500", "503"])
async def test_an_event_claim_whose_answer_was_lost_is_still_ours(sb: Any, store: TablesStateStore,
                                                                   fault: str) -> None:
    """The claim is an insert (POST), which the SDK's policy re-sends after a 500/503: the second answers 409 to
    its own row. Treated as a copy seen before, the event would never be handled."""
    now = datetime(2026, 12, 6, 10, tzinfo=UTC)
    keep = timedelta(hours=24)
    await store.claim_event("warm-up", now, keep)  # the table exists before the fault is armed
    sb.control.add_fault("tables", method="POST", path=r"seenevents$", when="after", **FAULTS[fault])
    assert await store.claim_event("ev-lost-answer", now, keep) is True
    assert sb.control.faults() == [], "the fault struck"
    assert await store.claim_event("ev-lost-answer", now + timedelta(seconds=1), keep) is False, "a later copy"


async def test_an_audit_record_whose_answer_was_lost_is_written_once_and_not_reported_failed(
    sb: Any, store: TablesStateStore,
) -> None:
    tenant, app = str(uuid.uuid4()), str(uuid.uuid4())
    at = datetime(2026, 12, 6, 10, tzinfo=UTC)
    await store.record(Event(tenant, app, "warm-up", "ok", "timer", at=at))  # the table exists before the fault
    sb.control.add_fault("tables", method="POST", path=r"events$", when="after", status=500)
    await store.record(Event(tenant, app, "create", "ok", "timer", at=at))  # raised Conflict before
    assert sb.control.faults() == [], "the fault struck"
    assert [e.step for e in await store.events(tenant, app)].count("create") == 1


async def test_a_consent_link_whose_use_was_answered_late_is_not_called_a_replay(sb: Any) -> None:
    proxied = through_tables_proxy(os.environ["STATE_TABLES_CONNECTION_STRING"], sb.endpoints["tables"])
    service = TableServiceClient.from_connection_string(proxied, retry_backoff_factor=0.01)
    consents = TablesConsentStore(service, prefix="t" + uuid.uuid4().hex[:10])
    tenant, expires = str(uuid.uuid4()), datetime(2026, 12, 6, 11, tzinfo=UTC)
    await consents.use_state(tenant, "warm-up", expires)  # the table exists before the fault is armed
    sb.control.add_fault("tables", method="POST", path=r"consents$", when="after", status=503)
    await consents.use_state(tenant, "nonce-1", expires)  # StateReplayed before: its own insert, re-sent
    assert sb.control.faults() == [], "the fault struck"
    with pytest.raises(Conflict):
        await consents.use_state(tenant, "nonce-1", expires)  # a real replay of the link
    await service.close()
