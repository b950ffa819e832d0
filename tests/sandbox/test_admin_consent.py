"""The Entra stand-in's admin-consent endpoint refuses what Entra refuses (AADSTS500113 without a registered reply
address, AADSTS50011 for an unregistered redirect_uri, ...) on its own error page, and on consent grants the app's
required Graph permissions and redirects with admin_consent=True, tenant, scope and state."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl, urlencode, urlparse

import pytest
import requests

from sandbox import world
from tests.conftest import SandboxHandle

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
REGISTERED = "https://func-rotator.example.net/api/consent"


def _tenant(sb: SandboxHandle, **extra: object) -> str:
    tenant = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": tenant, "name": "Consenting customer", **extra}]})
    return tenant


def register_redirect_uris(sb: SandboxHandle, *uris: str) -> None:
    """Add redirect URIs to the sandbox's MSP app (keeping those registered)."""
    msp = sb.control.msp()
    current = next(a for t in sb.control.state()["tenants"] if t["id"] == msp["tenantId"]
                   for a in t["applications"] if a["appId"] == msp["appId"])["web"]["redirectUris"]
    sb.control.seed({"tenants": [{"id": msp["tenantId"], "applications": [
        {"appId": "msp-app", "web": {"redirectUris": sorted({*current, *uris})}}]}]})


def _open(sb: SandboxHandle, tenant: str, **query: str) -> requests.Response:
    url = f"{sb.endpoints['entra']}/{tenant}/v2.0/adminconsent?{urlencode(query)}"
    return requests.get(url, allow_redirects=False, verify=sb.ca_file, timeout=10)


def _aadsts(response: requests.Response) -> int:
    assert response.status_code == 400 and "Location" not in response.headers
    found = re.search(r"AADSTS(\d+)", response.text)
    assert found, response.text
    return int(found.group(1))


def _roles(sb: SandboxHandle, tenant: str, app_id: str) -> list[str] | None:
    doc = next(t for t in sb.control.state()["tenants"] if t["id"] == tenant)
    sp = next((s for s in doc["servicePrincipals"] if s["appId"] == app_id), None)
    return None if sp is None else sp["roles"]


def test_consent_grants_the_required_permissions_and_redirects_with_the_answer(sb: SandboxHandle) -> None:
    register_redirect_uris(sb, REGISTERED)
    tenant, app = _tenant(sb), sb.control.msp()["appId"]
    assert _roles(sb, tenant, app) is None
    reply = _open(sb, tenant, client_id=app, scope=GRAPH_DEFAULT, redirect_uri=REGISTERED, state="abc")
    assert reply.status_code == 302
    location = urlparse(reply.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REGISTERED
    assert dict(parse_qsl(location.query)) == {
        "admin_consent": "True", "tenant": tenant, "scope": GRAPH_DEFAULT, "state": "abc"}
    # What the MSP app requests (infra/scripts/create-msp-app.sh): its own role and the sign-in log's two.
    assert _roles(sb, tenant, app) == ["Application.ReadWrite.OwnedBy", "AuditLog.Read.All", "Directory.Read.All"]


def test_a_declining_admin_is_sent_back_with_the_error_and_nothing_granted(sb: SandboxHandle) -> None:
    register_redirect_uris(sb, REGISTERED)
    tenant, app = _tenant(sb, consentDecision="decline"), sb.control.msp()["appId"]
    reply = _open(sb, tenant, client_id=app, scope=GRAPH_DEFAULT, redirect_uri=REGISTERED, state="s1")
    answer = dict(parse_qsl(urlparse(reply.headers["Location"]).query))
    assert answer["error"] == "access_denied" and answer["state"] == "s1"
    assert answer["error_description"].startswith("AADSTS65004")
    assert _roles(sb, tenant, app) is None


def test_an_unregistered_redirect_uri_is_refused_with_aadsts50011(sb: SandboxHandle) -> None:
    tenant, app = _tenant(sb), sb.control.msp()["appId"]
    reply = _open(sb, tenant, client_id=app, scope=GRAPH_DEFAULT, redirect_uri="https://evil.example/api/consent")
    assert _aadsts(reply) == 50011
    assert _roles(sb, tenant, app) is None


def test_a_redirect_uri_must_match_exactly(sb: SandboxHandle) -> None:
    register_redirect_uris(sb, REGISTERED)
    tenant, app = _tenant(sb), sb.control.msp()["appId"]
    for near in (REGISTERED + "/", REGISTERED.upper(), REGISTERED.replace("https", "http")):
        assert _aadsts(_open(sb, tenant, client_id=app, scope=GRAPH_DEFAULT, redirect_uri=near)) == 50011


def test_an_app_with_no_reply_address_is_refused_with_aadsts500113(sb: SandboxHandle) -> None:
    # Today's consent link without redirect_uri, for an MSP app registered without one.
    msp = sb.control.msp()
    vendor = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": msp["tenantId"], "applications": [
        {"appId": vendor, "displayName": "No reply address", "signInAudience": "AzureADMultipleOrgs"}]}]})
    tenant = _tenant(sb)
    assert _aadsts(_open(sb, tenant, client_id=vendor, scope=GRAPH_DEFAULT)) == 500113


def test_a_missing_redirect_uri_is_refused_even_when_one_is_registered(sb: SandboxHandle) -> None:
    tenant, app = _tenant(sb), sb.control.msp()["appId"]
    assert _aadsts(_open(sb, tenant, client_id=app, scope=GRAPH_DEFAULT)) == 900144


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"scope": GRAPH_DEFAULT, "redirect_uri": REGISTERED}, 900144),  # no client_id
        ({"client_id": str(uuid.uuid4()), "scope": GRAPH_DEFAULT, "redirect_uri": REGISTERED}, 700016),
        ({"client_id": "msp", "redirect_uri": REGISTERED}, 900144),  # no scope
        ({"client_id": "msp", "scope": "https://graph.microsoft.com/User.Read", "redirect_uri": REGISTERED}, 70011),
    ],
)
def test_a_malformed_request_gets_entras_error_page(sb: SandboxHandle, query: dict[str, str], code: int) -> None:
    register_redirect_uris(sb, REGISTERED)
    tenant = _tenant(sb)
    query = {k: (sb.control.msp()["appId"] if v == "msp" else v) for k, v in query.items()}
    assert _aadsts(_open(sb, tenant, **query)) == code


def test_an_unknown_tenant_and_a_single_tenant_app_are_refused(sb: SandboxHandle) -> None:
    register_redirect_uris(sb, REGISTERED)
    app = sb.control.msp()["appId"]
    assert _aadsts(_open(sb, str(uuid.uuid4()), client_id=app, scope=GRAPH_DEFAULT, redirect_uri=REGISTERED)) == 90002
    home, local_app = _tenant(sb), str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": home, "applications": [
        {"appId": local_app, "web": {"redirectUris": [REGISTERED]}}]}]})
    assert _aadsts(_open(sb, _tenant(sb), client_id=local_app, scope=GRAPH_DEFAULT, redirect_uri=REGISTERED)) == 50194


def test_a_resource_without_a_service_principal_in_the_tenant_fails_the_consent_with_aadsts650052(
        sb: SandboxHandle) -> None:
    """Why create-msp-app.sh keeps Partner Center out of the registration's requiredResourceAccess: `.default` asks
    for every resource listed, and a customer tenant without Partner Center's service principal refuses it all."""
    register_redirect_uris(sb, REGISTERED)
    msp = sb.control.msp()
    partner_center = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd"
    registered = world.World().directory.find_application(world.MSP_APP_ID)
    assert registered is not None
    required = [*registered.required_resource_access, {"resourceAppId": partner_center, "resourceAccess": [
        {"id": "1cebfa2a-fb4d-419e-b5f9-839b4383e05a", "type": "Scope"}]}]
    sb.control.seed({"tenants": [{"id": msp["tenantId"], "applications": [
        {"appId": "msp-app", "requiredResourceAccess": required}]}]})
    tenant = _tenant(sb)
    query = {"client_id": msp["appId"], "scope": GRAPH_DEFAULT, "redirect_uri": REGISTERED}
    assert _aadsts(_open(sb, tenant, **query)) == 650052
    assert _roles(sb, tenant, msp["appId"]) is None  # nothing granted
    with_partner_center = _tenant(sb, grants=[{"appId": partner_center}])
    assert _open(sb, with_partner_center, **query).status_code == 302
