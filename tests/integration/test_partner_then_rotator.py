"""After a partner admin installs the MSP app and adds it as owner through GDAP, the rotator's own Graph adapter (app-
only, as on every pass) finds the Proofpoint app, sees itself as its owner and may write a secret on it; after the
owner is removed it may not. The world is one: nothing is seeded behind the adapters' backs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from sandbox.client import answer_device_code
from shared.adapters.delegated import DelegatedSignIn
from shared.adapters.partner import GdapPartnerSession
from shared.bootstrap import Services
from shared.errors import NotOwner
from shared.ports import InstallMethod
from tests.rotation import conftest as rotation

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_rotator_owns_what_the_partner_admin_installed(world: rotation.World, svc: Services,
                                                                 http: aiohttp.ClientSession) -> None:
    sb = world.sb
    tenant = sb.control.seed_gdap_customers(1)[0]
    sign_in = DelegatedSignIn(authority=sb.settings["AZURE_AUTHORITY_HOST"],
                              client_id=sb.settings["MSP_APP_CLIENT_ID"], home_tenant_id=sb.settings["MSP_TENANT_ID"],
                              session=http, ca_bundle=sb.ca_file)
    sb.control.set_device_code_interval(1)
    prompt = await sign_in.start_device_code()
    waiting = asyncio.ensure_future(sign_in.wait_device_code(prompt))
    await asyncio.to_thread(answer_device_code, sb.endpoints["entra"], prompt.user_code, "partner-admin@msp.example",
                            sb.ca_file)
    await waiting
    session = GdapPartnerSession(sign_in, app_id=sb.settings["MSP_APP_CLIENT_ID"],
                                 graph_base_url=sb.settings["GRAPH_BASE_URL"],
                                 partner_center_url=sb.settings["PARTNER_CENTER_URL"], session=http,
                                 ca_bundle=sb.ca_file)
    installed = await session.install_app(tenant, ["Application.ReadWrite.OwnedBy"], InstallMethod.PARTNER_CENTER)

    found = await svc.directory.find_applications(tenant, ["Proofpoint"])
    assert [a.display_name for a in found] == ["Proofpoint Essentials"]
    app = found[0]
    assert (await svc.directory.ownership(tenant, app.app_id)).owned is False
    assert await session.add_owner(tenant, app.object_id, installed.service_principal_id)
    ownership = await svc.directory.ownership(tenant, app.app_id)
    assert ownership.owned and ownership.principal is not None
    assert ownership.principal.object_id == installed.service_principal_id
    created = await svc.directory.add_password(tenant, app.object_id, "rotator-test",
                                               datetime.now(UTC) + timedelta(days=30))
    await svc.directory.remove_password(tenant, app.object_id, created.credential.key_id)

    assert await session.remove_owner(tenant, app.object_id, installed.service_principal_id)
    with pytest.raises(NotOwner):
        await svc.directory.add_password(tenant, app.object_id, "rotator-test", datetime.now(UTC) + timedelta(days=30))
    await session.close()
