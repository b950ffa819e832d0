"""The functions' services are the worker process's, built once and reused (Microsoft's "Manage connections in
Azure Functions"), with an engine of each invocation's own; a change of settings builds new ones and closes the
old once no invocation uses them."""

from __future__ import annotations

import asyncio

import pytest

from shared import bootstrap
from tests.api.conftest import Api

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


async def test_invocations_share_the_clients_and_each_has_its_own_lease_owner(api: Api) -> None:
    async with bootstrap.invocation_services() as first:
        pass
    async with bootstrap.invocation_services() as second, bootstrap.invocation_services() as alongside:
        assert second.state is first.state and second.directory is first.directory
        assert alongside.secrets is first.secrets and alongside.work_queue is first.work_queue
        # Two invocations at once must never take each other's lease for their own.
        owners = {first.engine.owner, second.engine.owner, alongside.engine.owner}
        assert len(owners) == 3


async def test_invocations_arriving_together_in_a_fresh_process_build_the_services_once(api: Api) -> None:
    async def one() -> object:
        async with bootstrap.invocation_services() as svc:
            await asyncio.sleep(0)
            return svc.state

    states = await asyncio.gather(*(one() for _ in range(8)))
    assert all(s is states[0] for s in states)


async def test_a_changed_setting_builds_new_services_and_closes_the_old_once_unused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = api.world.seed_customer("Shared", 100)
    await api.put(customer)
    async with bootstrap.invocation_services() as old:
        monkeypatch.setenv("SCAN_CONCURRENCY", "7")
        async with bootstrap.invocation_services() as new:
            assert new.state is not old.state and new.settings.scan_concurrency == 7
            # The old are still in use by this invocation: still open, still answering.
            assert (await old.state.get_target(customer.tenant_id, customer.app_id))[0].tenant_id == customer.tenant_id
        assert not old.directory.closed
    assert old.directory.closed
    listed = await api.call("targets")
    assert listed.status == 200 and [t["appId"] for t in listed.body["targets"]] == [customer.app_id]


async def test_closing_at_shutdown_closes_them_and_the_next_invocation_builds_anew(api: Api) -> None:
    async with bootstrap.invocation_services() as before:
        pass
    await bootstrap.close_invocation_services()
    assert before.directory.closed
    async with bootstrap.invocation_services() as after:
        assert after.directory is not before.directory and not after.directory.closed
