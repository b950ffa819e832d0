"""An `inventory` work message (what bulk onboarding sends when it registers a customer): the queue function reads
that tenant's credential inventory now, as the daily pass would, instead of leaving a new customer for the next
pass. Real parts: Azurite's queue and tables, the queue function as the host invokes it, the sandbox's Graph."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from devhost.queues import QueueHost
from shared.inventory import InventoryQuery
from shared.ports import Work, WorkReason
from tests.api.conftest import Api, functions
from tests.fanout.test_fanout import FAST_RETRY, connection, queued
from tests.rotation.conftest import Rotator, World
from tests.rotation.test_entrypoints import read, register

pytestmark = pytest.mark.sandbox


@pytest.fixture
async def host(api: Api) -> AsyncIterator[QueueHost]:
    f = functions()
    async with QueueHost(connection(), api.world.queue, f["advance_target"], f["poisoned_work"], FAST_RETRY) as h:
        yield h


async def test_an_inventory_message_reads_that_tenant_now_and_a_repeat_or_a_stranger_changes_nothing(
    api: Api, world: World, host: QueueHost, rotator: Rotator
) -> None:
    new, other = world.seed_customer("Newcomer", 200), world.seed_customer("Other", 200)
    world.seed_accounts()
    await register(api, new, other)
    before = (await read(api, new)).state
    stranger = str(uuid.uuid4())  # a tenant with no registered target: never read
    async with rotator() as svc:
        assert svc.inventory is not None
        assert await svc.inventory.delta_links(new.tenant_id) == {}
        for _ in range(2):  # at least once: a second copy costs a delta round
            await svc.work_queue.enqueue(Work(new.tenant_id, new.app_id, "manual:partner-admin@msp.example",
                                              WorkReason.INVENTORY))
        await svc.work_queue.enqueue(Work(stranger, new.app_id, "timer", WorkReason.INVENTORY))
        assert await host.drain() == 3
        rows = await svc.inventory.list_credentials(InventoryQuery(tenant_id=new.tenant_id))
        assert new.app_id in {r.app_id for r in rows}, rows  # the customer's Proofpoint app and its secret
        assert len(await svc.inventory.delta_links(new.tenant_id)) == 2  # both kinds read: later passes are deltas
        assert await svc.inventory.list_credentials(InventoryQuery(tenant_id=other.tenant_id)) == []
        assert await svc.inventory.list_credentials(InventoryQuery(tenant_id=stranger)) == []
    assert (await read(api, new)).state == before  # read-only: the rotation state is untouched
    assert await queued(world) == [] and await queued(world, poison=True) == []
