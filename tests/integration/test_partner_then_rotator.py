"""After a partner admin signs in on the web (authorization code + PKCE, the rotator authenticating with its
federated client assertion, every adapter built from the settings as the composition root builds them), installs the
MSP app and adds it as owner through GDAP, the rotator's own Graph adapter (app-only, as on every pass) finds the
Proofpoint app, sees itself as its owner and may write a secret on it; after the owner is removed it may not. The
world is one: nothing is seeded behind the adapters' backs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from sandbox.client import sign_in_as
from shared.adapters.delegated import DelegatedSignIn, pkce
from shared.adapters.identity import Credentials, close_transport, shared_transport
from shared.adapters.partner import GdapPartnerSession
from shared.bootstrap import Services
from shared.errors import NotOwner
from shared.ports import InstallMethod
from shared.settings import Settings
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
    settings = world.settings()
    redirect = "http://localhost:7071/api/onboarding/callback"
    sb.control.add_redirect_uri("msp-app", redirect)
    transport = shared_transport(settings, 4)
    credentials = Credentials(settings, transport)
    try:
        await _install_own_and_disown(world, svc, http, settings, credentials, redirect, tenant)
    finally:
        await credentials.close()
        await close_transport(transport)


async def _install_own_and_disown(world: rotation.World, svc: Services, http: aiohttp.ClientSession,
                                  settings: Settings, credentials: Credentials, redirect: str, tenant: str) -> None:
    sb = world.sb
    sign_in = DelegatedSignIn.for_settings(settings, http, client_assertion=credentials.client_assertion)
    verifier, challenge = pkce()
    answer = await asyncio.to_thread(sign_in_as, sign_in.authorize_url(redirect, "state", challenge),
                                     "partner-admin@msp.example", sb.ca_file)
    await sign_in.redeem_code(answer.params["code"], redirect, verifier)
    session = GdapPartnerSession.for_settings(settings, sign_in, http)
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
