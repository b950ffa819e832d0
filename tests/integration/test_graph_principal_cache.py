"""The rotator's service principal in a tenant is cached for PRINCIPAL_TTL_SECONDS, not for the life of the worker
process: a customer's new consent (a new service principal) is seen within the hour."""

from __future__ import annotations

import pytest

from shared.adapters.graph import PRINCIPAL_TTL_SECONDS
from shared.bootstrap import Services
from shared.errors import Unreachable
from tests.rotation import conftest as rotation
from tests.rotation.conftest import World

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


async def test_the_rotators_principal_is_read_again_after_its_time_to_live(world: World, svc: Services) -> None:
    customer = world.seed_customer("Consented", 100)
    now = [1000.0]
    svc.directory.monotonic = lambda: now[0]
    first = await svc.directory.rotator_principal(customer.tenant_id)
    assert first is not None
    # From now on every read of the principal fails: only the cache can answer.
    world.sb.control.add_fault("graph", method="GET", path=r"/servicePrincipals\(", status=403,
                            code="Authorization_RequestDenied", count=None)
    now[0] += PRINCIPAL_TTL_SECONDS - 1
    assert await svc.directory.rotator_principal(customer.tenant_id) == first
    now[0] += 2
    with pytest.raises(Unreachable):
        await svc.directory.rotator_principal(customer.tenant_id)
