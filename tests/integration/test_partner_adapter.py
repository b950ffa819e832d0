"""The product's partner adapters (shared.adapters.delegated, shared.adapters.partner) over real HTTPS against the
sandbox: device code and authorization code sign-ins, the customers with the roles the admin holds, both install
methods, idempotent re-calls, each missing-role refusal with its fix, and no token in logs or errors."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import requests

from sandbox.client import answer_device_code, sign_in_as
from sandbox.gdap import customers_seed
from shared import partner_roles
from shared.adapters.delegated import DelegatedSignIn, pkce
from shared.adapters.partner import GdapPartnerSession
from shared.errors import PartnerRefused, RotationError, Throttled
from shared.ports import InstallMethod
from shared.settings import Settings
from tests.conftest import SandboxHandle

pytestmark = pytest.mark.sandbox

ADMIN = "partner-admin@msp.example"
ROLES = ("Application.ReadWrite.OwnedBy", "AuditLog.Read.All")
APP_ADMINS_GROUP = "5a1d0000-0000-4000-8000-000000000041"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _sign_in(sb: SandboxHandle, http: aiohttp.ClientSession, *, confidential: bool = False,
             tenant: str | None = None) -> DelegatedSignIn:
    async def assertion() -> str:
        answer = await asyncio.to_thread(requests.get, sb.settings["IDENTITY_ENDPOINT"], params={
            "resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"},
            headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10)
        return str(answer.json()["access_token"])

    return DelegatedSignIn(authority=sb.settings["AZURE_AUTHORITY_HOST"], client_id=sb.settings["MSP_APP_CLIENT_ID"],
                           home_tenant_id=tenant or sb.settings["MSP_TENANT_ID"], session=http,
                           ca_bundle=sb.ca_file, client_assertion=assertion if confidential else None)


async def _device(sb: SandboxHandle, sign_in: DelegatedSignIn, upn: str = ADMIN, approve: bool = True) -> Any:
    sb.control.set_device_code_interval(1)
    prompt = await sign_in.start_device_code()
    assert prompt.user_code in prompt.message and prompt.verification_uri.endswith("/devicelogin")
    waiting = asyncio.ensure_future(sign_in.wait_device_code(prompt))
    await asyncio.to_thread(answer_device_code, sb.endpoints["entra"], prompt.user_code, upn, sb.ca_file,
                            approve=approve)
    return await waiting


async def _session(sb: SandboxHandle, http: aiohttp.ClientSession) -> GdapPartnerSession:
    sign_in = _sign_in(sb, http)
    await _device(sb, sign_in)
    return GdapPartnerSession(sign_in, app_id=sb.settings["MSP_APP_CLIENT_ID"],
                              graph_base_url=sb.settings["GRAPH_BASE_URL"],
                              partner_center_url=sb.settings["PARTNER_CENTER_URL"], session=http,
                              ca_bundle=sb.ca_file)


def _tenant(sb: SandboxHandle, tenant_id: str) -> dict[str, Any]:
    return next(t for t in sb.control.state()["tenants"] if t["id"] == tenant_id)


def _msp_sp(sb: SandboxHandle, tenant_id: str) -> dict[str, Any] | None:
    return next((s for s in _tenant(sb, tenant_id)["servicePrincipals"]
                 if s["appId"] == sb.settings["MSP_APP_CLIENT_ID"]), None)


async def test_customers_carry_the_roles_the_admin_holds_through_active_relationships(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    ids = sb.control.seed_gdap_customers(3, missing_role_every=3)
    other_group = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": sb.settings["MSP_TENANT_ID"], "groups": [
        {"id": other_group, "displayName": "Somebody else's"}]}], "gdap": {"relationships": [
            {"customer": {"tenantId": ids[0], "displayName": "Customer 0001"}, "status": "terminated",
             "roles": ["Global Administrator"], "accessAssignments": [
                 {"group": APP_ADMINS_GROUP, "roles": ["Global Administrator"]}]},
            {"customer": {"tenantId": ids[1], "displayName": "Customer 0002"},
             "roles": ["User Administrator"], "accessAssignments": [
                 {"group": other_group, "roles": ["User Administrator"]}]}]}})
    session = await _session(sb, http)
    assert session.admin.user_principal_name == ADMIN and session.admin.tenant_id == sb.settings["MSP_TENANT_ID"]
    customers = await session.customers()
    assert [c.tenant_id for c in customers] == ids
    both = frozenset({partner_roles.APPLICATION_ADMINISTRATOR, partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR})
    assert customers[0].roles == both and len(customers[0].relationship_ids) == 1  # the terminated one is left out
    assert customers[1].roles == both and len(customers[1].relationship_ids) == 2  # not the other group's role
    assert customers[2].roles == {partner_roles.APPLICATION_ADMINISTRATOR}
    await session.install_app(ids[0], ROLES, InstallMethod.PARTNER_CENTER)
    assert await session.domains(ids[0]) == ["customer0001.example", "customer0001.onmicrosoft.com"]


async def test_partner_center_install_then_owner_then_removal_each_idempotent(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    session = await _session(sb, http)
    first = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert first.created and first.roles_granted == ROLES
    again = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert again == type(first)(first.service_principal_id, False, ())
    sp = _msp_sp(sb, tenant)
    assert sp is not None and sorted(sp["roles"]) == sorted(ROLES)  # the rotator's app-only tokens carry them
    app = next(a for a in _tenant(sb, tenant)["applications"] if a["displayName"] == "Proofpoint Essentials")
    assert await session.add_owner(tenant, app["id"], first.service_principal_id) is True
    assert await session.add_owner(tenant, app["id"], first.service_principal_id) is False
    assert next(a for a in _tenant(sb, tenant)["applications"] if a["id"] == app["id"])["owners"] == [
        first.service_principal_id]
    assert await session.remove_owner(tenant, app["id"], first.service_principal_id) is True
    assert await session.remove_owner(tenant, app["id"], first.service_principal_id) is False
    assert await session.remove_app(tenant) is True
    assert _msp_sp(sb, tenant) is None
    await session.close()


async def test_graph_install_needs_the_app_consented_and_grants_the_missing_permissions(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    fresh, consented = sb.control.seed_gdap_customers(2)
    sb.control.seed({"tenants": [{"id": consented, "delegatedGrants": {
        "msp-app": ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All", "Domain.Read.All"]},
        "grants": [{"appId": "msp-app", "roles": ["Application.ReadWrite.OwnedBy"]}]}]})
    session = await _session(sb, http)
    with pytest.raises(PartnerRefused) as refused:
        await session.install_app(fresh, ROLES, InstallMethod.GRAPH)
    assert refused.value.code == "AppNotConsented" and "Partner Center" in refused.value.fix
    installed = await session.install_app(consented, ROLES, InstallMethod.GRAPH)
    assert not installed.created and installed.roles_granted == ("AuditLog.Read.All",)
    assert (await session.install_app(consented, ROLES, InstallMethod.GRAPH)).roles_granted == ()


async def test_a_missing_gdap_role_names_the_role_and_the_relationship_and_a_rerun_completes(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1, missing_role_every=1)[0]
    session = await _session(sb, http)
    customer = (await session.customers())[0]
    with pytest.raises(PartnerRefused) as refused:
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert refused.value.code == "MissingGdapRole"
    assert "Privileged Role Administrator" in refused.value.fix and customer.relationship_ids[0] in refused.value.fix
    sp = _msp_sp(sb, tenant)
    assert sp is not None and sp["roles"] == []  # the consent was made; no permission was granted
    sb.control.seed(customers_seed(1))  # the MSP adds the role to the relationship (same ids, both roles)
    done = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert not done.created and done.roles_granted == ROLES


async def test_partner_center_refuses_an_admin_without_a_consenting_role(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = str(uuid.uuid4())
    sb.control.seed({"gdap": {"relationships": [{"customer": {"tenantId": tenant, "displayName": "Readers"},
                                                 "roles": ["Directory Readers"], "accessAssignments": [
        {"group": APP_ADMINS_GROUP, "roles": ["Directory Readers"]}]}]}})
    session = await _session(sb, http)
    with pytest.raises(PartnerRefused) as refused:
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert refused.value.code == "ConsentRefused" and "Application Administrator" in refused.value.fix
    with pytest.raises(PartnerRefused) as unknown:
        await session.install_app(str(uuid.uuid4()), ROLES, InstallMethod.PARTNER_CENTER)
    assert unknown.value.code == "NotACustomer"
    expired = str(uuid.uuid4())
    sb.control.seed({"gdap": {"relationships": [{"customer": {"tenantId": expired, "displayName": "Lapsed"},
                                                 "roles": ["Application Administrator"], "endDateTime": "-1d",
                                                 "accessAssignments": [{"group": APP_ADMINS_GROUP,
                                                                        "roles": ["Application Administrator"]}]}]}})
    with pytest.raises(PartnerRefused) as lapsed:
        await session.install_app(expired, ROLES, InstallMethod.PARTNER_CENTER)
    assert lapsed.value.code == "RelationshipNotActive" and "renew" in lapsed.value.fix


async def test_owner_and_removal_refused_without_application_administrator(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    session = await _session(sb, http)
    installed = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    sb.control.seed({"gdap": {"relationships": [{"id": customers_seed(1)["gdap"]["relationships"][0]["id"],
                                                 "customer": {"tenantId": tenant}, "status": "terminated"}]}})
    sb.control.seed({"gdap": {"relationships": [{"customer": {"tenantId": tenant}, "roles": ["Directory Readers"],
                                                 "accessAssignments": [
        {"group": APP_ADMINS_GROUP, "roles": ["Directory Readers"]}]}]}})
    app = next(a for a in _tenant(sb, tenant)["applications"] if a["displayName"] == "Proofpoint Essentials")
    with pytest.raises(PartnerRefused) as refused:
        await session.add_owner(tenant, app["id"], installed.service_principal_id)
    assert refused.value.code == "MissingGdapRole" and "Application Administrator" in refused.value.fix
    with pytest.raises(PartnerRefused):
        await session.remove_app(tenant)
    assert _msp_sp(sb, tenant) is not None and _tenant(sb, tenant)["applications"][0]["owners"] == []


async def test_throttling_is_reported_with_its_wait(sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    sb.control.seed_gdap_customers(1)
    session = await _session(sb, http)
    sb.control.add_fault("graph", path="delegatedAdminRelationships", status=429, retry_after=7)
    with pytest.raises(Throttled) as throttled:
        await session.customers()
    assert throttled.value.retry_after == 7


async def test_device_code_declined_and_expired(sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    with pytest.raises(PartnerRefused) as declined:
        await _device(sb, _sign_in(sb, http), approve=False)
    assert declined.value.code == "authorization_declined"
    sign_in = _sign_in(sb, http)
    prompt = await sign_in.start_device_code()
    sb.control.set_clock(16 * 60)
    with pytest.raises(PartnerRefused) as expired:
        await sign_in.wait_device_code(prompt)
    assert expired.value.code == "expired_token"


async def test_a_throttled_device_code_poll_waits_as_told_and_the_sign_in_completes(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    """Entra's token endpoint answers a poll with 429 and Retry-After (twice), then a 503 without it: the poll waits
    as told (or backs off), keeps the code and signs the admin in; before, the first 429 ended the sign-in."""
    sign_in = _sign_in(sb, http)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    sign_in.sleep = sleep
    sb.control.add_fault("entra", path="/token$", body_match="device_code=", status=429, retry_after=2, count=2)
    sb.control.add_fault("entra", path="/token$", body_match="device_code=", status=503)  # after the two
    admin = await _device(sb, sign_in)
    assert admin.user_principal_name == ADMIN
    assert waits[:4] == [1.0, 2.0, 2.0, 4.0]  # the interval, Retry-After twice, then backed off (third in a row)
    assert sb.control.faults() == []  # every fault was met


def test_the_device_code_backoff_follows_retry_after_within_bounds() -> None:
    from shared.adapters.delegated import _device_backoff
    assert _device_backoff(7, 1, 5) == 7
    assert _device_backoff(2, 1, 5) == 5  # never faster than the polling interval
    assert _device_backoff(3600, 1, 5) == 60  # capped
    assert [_device_backoff(None, n, 5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert _device_backoff(float("nan"), 1, 5) == 5 and _device_backoff(-1, 2, 5) == 10


async def test_authorization_code_with_pkce_and_the_client_assertion_then_a_customer_token(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    redirect = f"http://localhost:{secrets.randbelow(20000) + 30000}/api/onboarding/callback"
    sb.control.add_redirect_uri("msp-app", redirect)
    sign_in = _sign_in(sb, http, confidential=True)
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    answer = await asyncio.to_thread(sign_in_as, sign_in.authorize_url(redirect, state, challenge), ADMIN,
                                     sb.ca_file)
    assert answer.params["state"] == state
    with pytest.raises(RotationError) as refused:  # a wrong verifier: the code is refused (and spent)
        await sign_in.redeem_code(answer.params["code"], redirect, pkce()[0])
    assert refused.value.code == "AADSTS501481" and answer.params["code"] not in str(refused.value)
    answer = await asyncio.to_thread(sign_in_as, sign_in.authorize_url(redirect, state, challenge), ADMIN,
                                     sb.ca_file)
    admin = await sign_in.redeem_code(answer.params["code"], redirect, verifier)
    assert admin.user_principal_name == ADMIN
    session = GdapPartnerSession(sign_in, app_id=sb.settings["MSP_APP_CLIENT_ID"],
                                 graph_base_url=sb.settings["GRAPH_BASE_URL"],
                                 partner_center_url=sb.settings["PARTNER_CENTER_URL"], session=http,
                                 ca_bundle=sb.ca_file)
    assert (await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)).roles_granted == ROLES


async def test_no_token_in_logs_or_errors(sb: SandboxHandle, http: aiohttp.ClientSession,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = sb.control.seed_gdap_customers(1, missing_role_every=1)[0]
    session = await _session(sb, http)
    errors: list[str] = []
    try:
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    except PartnerRefused as error:
        errors.append(f"{error} {error.fix} {error!r}")
    try:
        await session.install_app(str(uuid.uuid4()), ROLES, InstallMethod.GRAPH)
    except PartnerRefused as error:
        errors.append(f"{error} {error.fix} {error!r}")
    sign_in = session._sign_in  # the test reads what must never leak
    held = [sign_in.refresh_token_for_vault() or "", *(t for t, _ in sign_in._tokens.values())]
    assert len(errors) == 2 and all(len(t) > 20 for t in held)
    text = caplog.text + " ".join(errors)
    assert not any(token in text for token in held)
    await session.close()
    assert sign_in.refresh_token_for_vault() is None
    with pytest.raises(PartnerRefused) as gone:
        await sign_in.access_token(tenant)
    assert gone.value.code == "NotSignedIn"


async def test_a_run_resumes_from_a_kept_refresh_token_and_a_bad_one_is_refused(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    first = _sign_in(sb, http)
    await _device(sb, first)
    kept = first.refresh_token_for_vault()
    assert kept
    await first.close()
    again = _sign_in(sb, http)
    admin = await again.resume(kept)
    assert admin.user_principal_name == ADMIN
    session = GdapPartnerSession(again, app_id=sb.settings["MSP_APP_CLIENT_ID"],
                                 graph_base_url=sb.settings["GRAPH_BASE_URL"],
                                 partner_center_url=sb.settings["PARTNER_CENTER_URL"], session=http,
                                 ca_bundle=sb.ca_file)
    assert [c.tenant_id for c in await session.customers()] == [tenant]
    sb.control.set_clock(91 * 24 * 3600)  # past the refresh token's 90 days
    with pytest.raises(PartnerRefused) as expired:
        await _sign_in(sb, http).resume(kept)
    assert expired.value.code == "SignInExpired" and kept not in str(expired.value)


async def test_customers_follow_every_page_of_relationships(sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    ids = sb.control.seed_gdap_customers(130, missing_role_every=13)  # Graph pages at 100 by default
    session = await _session(sb, http)
    customers = await session.customers()
    assert sorted(c.tenant_id for c in customers) == sorted(ids)
    assert sum(partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR not in c.roles for c in customers) == 10


async def test_a_consent_graph_does_not_show_yet_is_throttled_and_a_retry_completes(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    session = await _session(sb, http)
    # Graph's directory replicates behind Partner Center: the service principal is not found yet, once.
    msp_app = sb.settings["MSP_APP_CLIENT_ID"]
    sb.control.add_fault("graph", method="GET", path=rf"/servicePrincipals\(appId='{msp_app}'\)", status=404,
                         code="Request_ResourceNotFound")
    with pytest.raises(Throttled) as throttled:
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert throttled.value.code == "NotYetVisible" and throttled.value.retry_after
    retried = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert not retried.created and retried.roles_granted == ROLES  # the consent answered 409: made the first time


async def test_offboarding_withdraws_the_consent_and_a_stale_consent_is_renewed(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    first, second = sb.control.seed_gdap_customers(2)
    session = await _session(sb, http)
    await session.install_app(first, ROLES, InstallMethod.PARTNER_CENTER)
    assert await session.remove_app(first) is True
    assert _msp_sp(sb, first) is None and sb.control.partner()["applicationConsents"] == []
    again = await session.install_app(first, ROLES, InstallMethod.PARTNER_CENTER)
    assert again.created and again.roles_granted == ROLES

    # The service principal deleted by hand (the portal), Partner Center still recording the consent.
    installed = await session.install_app(second, ROLES, InstallMethod.PARTNER_CENTER)
    token = await session._sign_in.access_token(second)  # the test deletes as an admin would in the portal
    deleted = await asyncio.to_thread(requests.delete, f"{sb.settings['GRAPH_BASE_URL']}/servicePrincipals/"
                                      f"{installed.service_principal_id}", headers={"Authorization": f"Bearer {token}"},
                                      verify=sb.ca_file, timeout=10)
    assert deleted.status_code == 204
    assert len([c for c in sb.control.partner()["applicationConsents"] if c["customerTenantId"] == second]) == 1
    renewed = await session.install_app(second, ROLES, InstallMethod.PARTNER_CENTER)
    assert renewed.created and renewed.roles_granted == ROLES
    assert renewed.service_principal_id != installed.service_principal_id


async def test_partner_center_refuses_a_user_who_is_not_an_admin_agent(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tenant = sb.control.seed_gdap_customers(1)[0]
    helper = "helper@msp.example"
    sb.control.seed({"tenants": [{"id": sb.settings["MSP_TENANT_ID"], "users": [{"userPrincipalName": helper}],
                                  "groups": [{"id": APP_ADMINS_GROUP, "displayName": "GDAP App Admins",
                                              "members": [helper]},
                                             {"id": "5a1d0000-0000-4000-8000-000000000042",
                                              "displayName": "GDAP Privileged Role Admins", "members": [helper]}]}]})
    sign_in = _sign_in(sb, http)
    await _device(sb, sign_in, upn=helper)
    settings = Settings.from_env({**sb.settings, "STATE_TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true"})
    session = GdapPartnerSession.for_settings(settings, sign_in, http)
    assert (await session.customers())[0].roles  # GDAP gives the roles ...
    with pytest.raises(PartnerRefused) as refused:  # ... but Partner Center wants its own role too
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert refused.value.code == "NotAdminAgent" and helper in refused.value.fix
    assert _msp_sp(sb, tenant) is None


async def test_an_expired_partner_tenant_token_is_renewed_with_the_scopes_consented_at_sign_in(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    ids = sb.control.seed_gdap_customers(1)
    session = await _session(sb, http)
    later = time.monotonic() + 2 * 3600
    session._sign_in.monotonic = lambda: later  # every cached token has expired: each is renewed from the refresh
    assert [c.tenant_id for c in await session.customers()] == ids


async def test_partner_center_needs_the_partner_tenants_consent_and_the_refusal_names_the_script(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    """Without the one-time admin consent to Partner Center's user_impersonation in the partner tenant (what
    infra/scripts/create-msp-app.sh grants) Entra refuses the Partner Center token (AADSTS65001): the install stops
    before any write, names the fix, and completes once the consent is there."""
    tenant = sb.control.seed_gdap_customers(1)[0]
    msp, app = sb.settings["MSP_TENANT_ID"], sb.settings["MSP_APP_CLIENT_ID"]
    sb.control.seed({"tenants": [{"id": msp, "partnerCenterGrants": {app: []}}]})
    session = await _session(sb, http)
    with pytest.raises(PartnerRefused) as refused:
        await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert refused.value.code == "PartnerCenterNotConsented" and "AADSTS65001" in str(refused.value)
    assert "create-msp-app.sh" in refused.value.fix
    assert _msp_sp(sb, tenant) is None  # nothing was done in the customer tenant
    sb.control.seed({"tenants": [{"id": msp, "partnerCenterGrants": {app: ["user_impersonation"]}}]})
    installed = await session.install_app(tenant, ROLES, InstallMethod.PARTNER_CENTER)
    assert installed.created and installed.roles_granted == ROLES


async def test_a_partner_tenant_without_the_sign_in_consent_is_refused_with_the_fix(
        sb: SandboxHandle, http: aiohttp.ClientSession) -> None:
    """The partner tenant's admin never consented to DelegatedAdminRelationship.Read.All (create-msp-app.sh not run):
    the device code sign-in is refused with the partner tenant's fix, not a customer's."""
    msp = sb.settings["MSP_TENANT_ID"]
    sb.control.seed({"tenants": [{"id": msp, "delegatedGrants": {sb.settings["MSP_APP_CLIENT_ID"]: []}}]})
    with pytest.raises(PartnerRefused) as refused:
        await _device(sb, _sign_in(sb, http))
    assert refused.value.code == "PartnerSignInNotConsented"
    assert "create-msp-app.sh" in refused.value.fix and "customer" not in refused.value.fix
