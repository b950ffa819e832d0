"""The inventory timer as the host runs it: on its own schedule setting, never on startup; it reads every registered
customer's tenant into the inventory store and leaves the rotation state alone (the rotation pass stays as it was)."""

from __future__ import annotations

import azure.functions.timer as timer

from shared.bootstrap import services
from shared.inventory import InventoryQuery, ObjectKind
from tests.api.conftest import Api, app_functions, functions
from tests.rotation.conftest import World
from tests.rotation.test_entrypoints import read, register


def test_the_inventory_timer_runs_on_its_schedule_setting_and_never_on_startup() -> None:
    inventory = next(f for f in app_functions() if f.get_function_name() == "inventory_timer")
    (binding,) = inventory.get_bindings()
    assert binding.schedule == "%INVENTORY_SCHEDULE%" and binding.run_on_startup is False


async def test_the_inventory_timer_reads_every_registered_tenant_and_leaves_rotations_alone(api: Api, world: World
                                                                                      ) -> None:
    one, two = world.seed_customer("InvOne", 200), world.seed_customer("InvTwo", 200)
    world.sb.control.seed({"inventory": {"populations": [
        {"tenants": [one.tenant_id], "applications": 12, "servicePrincipals": 30, "seed": "timer"}]}})
    world.seed_accounts()
    await register(api, one, two)
    before = [(await read(api, c)) for c in (one, two)]

    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))

    async with services() as svc:
        assert svc.inventory is not None
        mine = await svc.inventory.list_credentials(InventoryQuery(tenant_id=one.tenant_id))
        theirs = await svc.inventory.list_credentials(InventoryQuery(tenant_id=two.tenant_id))
        assert len({r.object_id for r in mine}) > 5
        assert [(r.app_id, r.key_id, r.managed) for r in theirs] == [(two.app_id, two.key_id, True)]
        assert [r.customer for r in mine if r.managed] == ["InvOne"]
        for customer in (one, two):
            assert set(await svc.inventory.delta_links(customer.tenant_id)) == set(ObjectKind)
    assert [(await read(api, c)) for c in (one, two)] == before  # no rotation state read or written
