"""The sandbox's Entra ID as App Service Authentication and the rotator's API callers meet it: RS256 tokens verifiable
with the published keys, client credentials for the MSP app's API with app roles (AADSTS501051 without an
assignment), and the authorization code flow with PKCE through the account picker (AADSTS50011 on Entra's own page,
AADSTS50105 for an unassigned user, AADSTS501481 for a wrong verifier, AADSTS54005 for a spent code, AADSTS70008 for
an expired one). Real HTTP against the running sandbox; tokens verified with PyJWT against the JWKS."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
import uuid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.client import sign_in_as
from tests.conftest import SandboxHandle
from tests.material import client_secret

CALLBACK = f"http://127.0.0.1:{secrets.randbelow(20000) + 30000}/.auth/login/aad/callback"
WEB_CLIENT = "c1e00000-0000-4000-8000-000000000001"
WEB_SECRET = client_secret("web")


def _api(sb: SandboxHandle) -> dict[str, Any]:
    return sb.control.msp_api()


def _automation(sb: SandboxHandle, role: str) -> dict[str, Any]:
    return next(a for a in _api(sb)["automation"] if a["roles"] == [role])


def _verify(sb: SandboxHandle, token: str, audience: str, tenant: str) -> dict[str, Any]:
    """Verify as a relying party does: the key named by `kid` from the tenant's jwks_uri, RS256, iss, aud, exp."""
    config = requests.get(f"{sb.endpoints['entra']}/{tenant}/v2.0/.well-known/openid-configuration",
                          verify=sb.ca_file, timeout=10).json()
    keys = jwt.PyJWKClient(config["jwks_uri"], ssl_context=ssl.create_default_context(cafile=sb.ca_file))
    claims: dict[str, Any] = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                                        audience=audience, issuer=config["issuer"])
    return claims


def _token(sb: SandboxHandle, tenant: str, **form: str) -> requests.Response:
    return requests.post(f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token", data=form, verify=sb.ca_file,
                         timeout=10)


def _aadsts(response: requests.Response) -> int:
    return int(response.json()["error_codes"][0])


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """The forms of a page: action, method and the named inputs/buttons (name -> values)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", ""), "fields": {}})
        elif tag in ("input", "button") and self.forms and a.get("name"):
            self.forms[-1]["fields"].setdefault(a["name"], []).append(a.get("value", ""))


def _form(page: str) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(page)
    assert len(parser.forms) == 1, page
    return parser.forms[0]


def _authorize(sb: SandboxHandle, tenant: str, **query: str) -> requests.Response:
    url = f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/authorize?{urlencode(query)}"
    return requests.get(url, allow_redirects=False, verify=sb.ca_file, timeout=10)


def _pick(sb: SandboxHandle, page: requests.Response, upn: str) -> requests.Response:
    """Choose an account on the picker, as the browser submits the form."""
    assert page.status_code == 200 and "Pick an account" in page.text, page.text
    form = _form(page.text)
    assert upn in form["fields"]["login_hint"]
    return requests.post(sb.endpoints["entra"] + form["action"], data={"ctx": form["fields"]["ctx"][0],
                         "login_hint": upn}, allow_redirects=False, verify=sb.ca_file, timeout=10)


def _sign_in_query(sb: SandboxHandle, upn: str, challenge: str, *, client_id: str | None = None,
                   scope: str = "openid profile email", redirect_uri: str = CALLBACK) -> dict[str, str]:
    """Sign a user in with response_mode=query; the parameters the app's redirect URI receives."""
    api = _api(sb)
    state = secrets.token_urlsafe(8)
    page = _authorize(sb, api["tenantId"], client_id=client_id or api["appId"], response_type="code",
                      redirect_uri=redirect_uri, scope=scope, state=state, code_challenge=challenge,
                      code_challenge_method="S256", response_mode="query")
    answer = _pick(sb, page, upn)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    params = dict(parse_qsl(location.query))
    assert params["state"] == state
    return params


def _mi_assertion(sb: SandboxHandle) -> str:
    """The managed identity's api://AzureADTokenExchange token: the MSP app's federated client credential, as the
    deployed App Service Authentication uses it (OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID)."""
    response = requests.get(sb.settings["IDENTITY_ENDPOINT"],
                            params={"resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"},
                            headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10)
    return str(response.json()["access_token"])


def _redeem(sb: SandboxHandle, code: str, verifier: str, **extra: str) -> requests.Response:
    api = _api(sb)
    form = {"grant_type": "authorization_code", "client_id": api["appId"], "code": code, "redirect_uri": CALLBACK,
            "code_verifier": verifier,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _mi_assertion(sb), **extra}
    return _token(sb, api["tenantId"], **form)


@pytest.fixture
def callback(sb: SandboxHandle) -> str:
    sb.control.add_redirect_uri("msp-app", CALLBACK)
    return CALLBACK


# Keys and signatures


def test_every_token_is_rs256_with_a_kid_the_jwks_publishes(sb: SandboxHandle) -> None:
    api = _api(sb)
    config = requests.get(api["openidConfiguration"], verify=sb.ca_file, timeout=10).json()
    assert config["jwks_uri"] == f"{sb.endpoints['entra']}/{api['tenantId']}/discovery/v2.0/keys"
    tenant_keys = requests.get(config["jwks_uri"], verify=sb.ca_file, timeout=10).json()["keys"]
    common = requests.get(f"{sb.endpoints['entra']}/common/discovery/v2.0/keys", verify=sb.ca_file, timeout=10)
    assert [k["kid"] for k in common.json()["keys"]] == [k["kid"] for k in tenant_keys]
    assert {(k["kty"], k["use"]) for k in tenant_keys} == {("RSA", "sig")}
    # A Key Vault token of the managed identity (v1-shaped, aud = the resource URI) is signed with the same key.
    vault = requests.get(sb.settings["IDENTITY_ENDPOINT"], params={"resource": "https://vault.azure.net",
                         "api-version": "2019-08-01"}, headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]},
                         timeout=10).json()["access_token"]
    header = jwt.get_unverified_header(vault)
    assert header["alg"] == "RS256" and header["kid"] in {k["kid"] for k in tenant_keys}
    assert _verify(sb, vault, "https://vault.azure.net", api["tenantId"])["tid"] == api["tenantId"]


def test_unknown_tenant_has_no_keys(sb: SandboxHandle) -> None:
    response = requests.get(f"{sb.endpoints['entra']}/{uuid.uuid4()}/discovery/v2.0/keys", verify=sb.ca_file,
                            timeout=10)
    assert response.status_code == 400 and _aadsts(response) == 90002


@pytest.mark.parametrize("forge", ["other-rsa-key", "hs256", "unsigned"])
def test_graph_refuses_a_token_not_signed_by_the_sandbox(sb: SandboxHandle, forge: str) -> None:
    api = _api(sb)
    op = _automation(sb, "Rotator.Operate")
    good = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=op["appId"],
                  client_secret=op["clientSecret"], scope="https://graph.microsoft.com/.default").json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    if forge == "other-rsa-key":
        forged = jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256",
                            headers={"kid": kid})
    elif forge == "hs256":
        forged = jwt.encode(claims, secrets.token_bytes(32), "HS256", headers={"kid": kid})
    else:
        forged = jwt.encode(claims, None, "none")
    graph = f"{sb.endpoints['graph']}/v1.0/applications"
    assert requests.get(graph, headers={"Authorization": f"Bearer {good}"}, verify=sb.ca_file,
                        timeout=10).status_code != 401
    refused = requests.get(graph, headers={"Authorization": f"Bearer {forged}"}, verify=sb.ca_file, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "InvalidAuthenticationToken"


# Client credentials for the rotator's API


@pytest.mark.parametrize("role", ["Rotator.Operate", "Rotator.Read"])
@pytest.mark.parametrize("prefix", ["api://{app}", "{app}"])
def test_automation_principal_gets_a_v2_token_with_its_app_role(sb: SandboxHandle, role: str, prefix: str) -> None:
    api = _api(sb)
    caller = _automation(sb, role)
    response = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=caller["appId"],
                      client_secret=caller["clientSecret"], scope=prefix.format(app=api["appId"]) + "/.default")
    assert response.status_code == 200, response.text
    claims = _verify(sb, response.json()["access_token"], api["appId"], api["tenantId"])
    assert claims["iss"] == f"{sb.endpoints['entra']}/{api['tenantId']}/v2.0" == api["issuer"]
    assert claims["ver"] == "2.0" and "idtyp" not in claims and "scp" not in claims and claims["roles"] == [role]
    assert claims["azp"] == caller["appId"] and claims["azpacr"] == "1" and claims["tid"] == api["tenantId"]
    assert claims["oid"] == claims["sub"] == caller["servicePrincipalId"]
    assert "scp" not in claims and "appid" not in claims
    assert claims["nbf"] <= claims["iat"] < claims["exp"] == claims["iat"] + 3600


def _seed_unassigned_app(sb: SandboxHandle, **extra: Any) -> tuple[str, str]:
    app_id, secret = str(uuid.uuid4()), client_secret("una")
    sb.control.seed({"tenants": [{"id": _api(sb)["tenantId"], "applications": [
        {"appId": app_id, "displayName": "Unassigned script",
         "passwordCredentials": [{"secretText": secret, "endDateTime": "+30d"}]}], **extra}]})
    return app_id, secret


def test_app_without_an_assignment_is_refused_501051(sb: SandboxHandle) -> None:
    api = _api(sb)
    app_id, secret = _seed_unassigned_app(sb)
    response = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=app_id, client_secret=secret,
                      scope=f"api://{api['appId']}/.default")
    assert response.status_code == 400 and _aadsts(response) == 501051
    assert response.json()["error"] == "invalid_client" and "access_token" not in response.json()
    # Assigned one role (POST /servicePrincipals/{id}/appRoleAssignedTo), the same app gets exactly that role.
    sb.control.seed({"tenants": [{"id": api["tenantId"], "appRoleAssignments": [
        {"principal": app_id, "resource": "msp-app", "appRole": "Rotator.Read"}]}]})
    again = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=app_id, client_secret=secret,
                   scope=f"api://{api['appId']}/.default")
    assert _verify(sb, again.json()["access_token"], api["appId"], api["tenantId"])["roles"] == ["Rotator.Read"]


def test_without_assignment_required_an_unassigned_app_gets_a_token_without_roles(sb: SandboxHandle) -> None:
    api = _api(sb)
    app_id, secret = _seed_unassigned_app(sb)
    sb.control.seed({"tenants": [{"id": api["tenantId"], "applications": [
        {"appId": "msp-app", "appRoleAssignmentRequired": False}]}]})
    response = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=app_id, client_secret=secret,
                      scope=f"{api['appId']}/.default")
    claims = _verify(sb, response.json()["access_token"], api["appId"], api["tenantId"])
    assert claims["azp"] == app_id and "roles" not in claims


@pytest.mark.parametrize(("scope", "code"), [
    ("api://{app}/user_impersonation", 1002012),  # client credentials take only /.default
    ("api://{app}/Rotator.Nothing", 70011),
    ("api://00000000-0000-4000-8000-0000000000ff/.default", 500011),
])
def test_client_credentials_with_a_bad_api_scope_is_refused(sb: SandboxHandle, scope: str, code: int) -> None:
    api = _api(sb)
    caller = _automation(sb, "Rotator.Operate")
    response = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=caller["appId"],
                      client_secret=caller["clientSecret"], scope=scope.format(app=api["appId"]))
    assert response.status_code == 400 and _aadsts(response) == code


def test_a_wrong_automation_secret_is_7000215(sb: SandboxHandle) -> None:
    api = _api(sb)
    caller = _automation(sb, "Rotator.Operate")
    response = _token(sb, api["tenantId"], grant_type="client_credentials", client_id=caller["appId"],
                      client_secret=client_secret("bad"), scope=f"api://{api['appId']}/.default")
    assert response.status_code == 401 and _aadsts(response) == 7000215


def test_tokens_follow_the_sandbox_clock(sb: SandboxHandle) -> None:
    """An API token's lifetime is stamped by the sandbox clock; Graph judges expiry by it too."""
    api = _api(sb)
    caller = _automation(sb, "Rotator.Operate")

    def get(scope: str) -> str:
        return str(_token(sb, api["tenantId"], grant_type="client_credentials", client_id=caller["appId"],
                          client_secret=caller["clientSecret"], scope=scope).json()["access_token"])

    graph_token = get("https://graph.microsoft.com/.default")
    sb.control.set_clock(3601)
    later = jwt.decode(get(f"api://{api['appId']}/.default"), options={"verify_signature": False})
    before = jwt.decode(graph_token, options={"verify_signature": False})
    assert later["iat"] - before["iat"] >= 3600
    expired = requests.get(f"{sb.endpoints['graph']}/v1.0/applications",
                           headers={"Authorization": f"Bearer {graph_token}"}, verify=sb.ca_file, timeout=10)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


# Authorization code with PKCE


@pytest.mark.parametrize(("upn", "roles"), [("operator@msp.example", ["Rotator.Operate"]),
                                            ("reader@msp.example", ["Rotator.Read"])])
def test_hybrid_form_post_sign_in_then_code_redemption(sb: SandboxHandle, callback: str, upn: str,
                                                       roles: list[str]) -> None:
    """What App Service Authentication does: response_type `code id_token`, form_post, nonce; the code redeemed
    with the app's credential and the PKCE verifier."""
    api = _api(sb)
    verifier, challenge = _pkce()
    nonce, state = secrets.token_urlsafe(12), "redir=%2Fapi%2Ftargets"
    page = _authorize(sb, api["tenantId"], client_id=api["appId"], response_type="code id_token",
                      redirect_uri=callback, scope="openid profile email", state=state, nonce=nonce,
                      response_mode="form_post", code_challenge=challenge, code_challenge_method="S256")
    posted = _pick(sb, page, upn)
    assert posted.status_code == 200 and "Location" not in posted.headers
    form = _form(posted.text)
    assert form["action"] == callback and form["method"].upper() == "POST"
    fields = {k: v[0] for k, v in form["fields"].items()}
    assert fields["state"] == state
    early = _verify(sb, fields["id_token"], api["appId"], api["tenantId"])
    assert early["nonce"] == nonce and early["preferred_username"] == upn and early["roles"] == roles
    code_hash = hashlib.sha256(fields["code"].encode()).digest()[:16]
    assert early["c_hash"] == base64.urlsafe_b64encode(code_hash).rstrip(b"=").decode()

    response = _redeem(sb, fields["code"], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and 3000 < body["expires_in"] <= 3600
    id_claims = _verify(sb, body["id_token"], api["appId"], api["tenantId"])
    user = next(u for u in api["users"] if u["userPrincipalName"] == upn)
    assert id_claims["oid"] == user["id"] and id_claims["name"] == user["displayName"]
    assert id_claims["nonce"] == nonce and id_claims["roles"] == roles and id_claims["tid"] == api["tenantId"]
    assert id_claims["sub"] != user["id"]  # pairwise per application
    graph = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert graph["aud"] == "https://graph.microsoft.com" and graph["oid"] == user["id"]


def test_delegated_api_token_carries_scp_and_the_users_roles(sb: SandboxHandle, callback: str) -> None:
    api = _api(sb)
    verifier, challenge = _pkce()
    params = _sign_in_query(sb, "operator@msp.example", challenge, scope=f"openid profile {api['scope']}")
    body = _redeem(sb, params["code"], verifier).json()
    claims = _verify(sb, body["access_token"], api["appId"], api["tenantId"])
    assert claims["scp"] == "user_impersonation" and claims["roles"] == ["Rotator.Operate"]
    assert claims["azp"] == api["appId"] and claims["azpacr"] == "2" and claims["ver"] == "2.0"
    assert claims["preferred_username"] == "operator@msp.example" and claims["name"] == "Olivia Operator"
    assert body["scope"] == api["scope"]


def test_another_web_client_with_a_secret_gets_a_token_for_the_api(sb: SandboxHandle) -> None:
    """A separate confidential client (client_secret) signing a user in for the MSP app's API: aud = the API,
    azp = the client, roles = the user's roles on the API."""
    api = _api(sb)
    redirect = "https://client.example.net/signin-oidc"
    sb.control.seed({"tenants": [{"id": api["tenantId"], "applications": [
        {"appId": WEB_CLIENT, "displayName": "Another web client", "web": {"redirectUris": [redirect]},
         "passwordCredentials": [{"secretText": WEB_SECRET, "endDateTime": "+30d"}]}]}]})
    verifier, challenge = _pkce()
    params = _sign_in_query(sb, "reader@msp.example", challenge, client_id=WEB_CLIENT, redirect_uri=redirect,
                            scope=f"openid {api['scope']}")
    response = _token(sb, api["tenantId"], grant_type="authorization_code", client_id=WEB_CLIENT,
                      client_secret=WEB_SECRET, code=params["code"], redirect_uri=redirect, code_verifier=verifier)
    assert response.status_code == 200, response.text
    claims = _verify(sb, response.json()["access_token"], api["appId"], api["tenantId"])
    assert claims["azp"] == WEB_CLIENT and claims["azpacr"] == "1" and claims["roles"] == ["Rotator.Read"]
    id_claims = _verify(sb, response.json()["id_token"], WEB_CLIENT, api["tenantId"])
    assert "roles" not in id_claims and "preferred_username" not in id_claims  # no profile scope asked


def test_unregistered_redirect_uri_is_shown_never_redirected(sb: SandboxHandle) -> None:
    api = _api(sb)
    response = _authorize(sb, api["tenantId"], client_id=api["appId"], response_type="code",
                          redirect_uri="http://127.0.0.1:1/.auth/login/aad/callback", scope="openid", state="s")
    assert response.status_code == 400 and "Location" not in response.headers
    assert "AADSTS50011" in response.text and "Pick an account" not in response.text


@pytest.mark.parametrize(("client", "code"), [("00000000-0000-4000-8000-0000000000aa", 700016), ("", 900144)])
def test_unknown_client_is_shown_never_redirected(sb: SandboxHandle, callback: str, client: str, code: int) -> None:
    response = _authorize(sb, _api(sb)["tenantId"], client_id=client, response_type="code", redirect_uri=callback,
                          scope="openid")
    assert response.status_code == 400 and "Location" not in response.headers and f"AADSTS{code}" in response.text


def test_user_without_an_assignment_is_blocked_50105(sb: SandboxHandle, callback: str) -> None:
    api = _api(sb)
    _, challenge = _pkce()
    page = _authorize(sb, api["tenantId"], client_id=api["appId"], response_type="code", redirect_uri=callback,
                      scope="openid", state="s", code_challenge=challenge, code_challenge_method="S256")
    blocked = _pick(sb, page, "nobody@msp.example")
    assert blocked.status_code == 400 and "Location" not in blocked.headers
    assert "AADSTS50105" in blocked.text and "code=" not in blocked.text


def test_a_protocol_error_after_the_redirect_uri_is_trusted_goes_back_to_the_app(sb: SandboxHandle,
                                                                                 callback: str) -> None:
    api = _api(sb)
    sb.control.seed({"tenants": [{"id": api["tenantId"], "applications": [
        {"appId": "msp-app", "web": {"implicitGrantSettings": {"enableIdTokenIssuance": False}}}]}]})
    response = _authorize(sb, api["tenantId"], client_id=api["appId"], response_type="code id_token",
                          redirect_uri=callback, scope="openid", nonce="n", state="s", response_mode="form_post")
    fields = {k: v[0] for k, v in _form(response.text)["fields"].items()}
    assert fields["error"] == "unsupported_response_type" and fields["error_description"].startswith("AADSTS700054")
    assert fields["state"] == "s"


def test_a_wrong_verifier_is_501481_and_spends_the_code(sb: SandboxHandle, callback: str) -> None:
    verifier, challenge = _pkce()
    code = _sign_in_query(sb, "operator@msp.example", challenge)["code"]
    wrong = _redeem(sb, code, _pkce()[0])
    assert wrong.status_code == 400 and _aadsts(wrong) == 501481 and wrong.json()["error"] == "invalid_grant"
    assert _aadsts(_redeem(sb, code, verifier)) == 54005


def test_a_missing_verifier_is_refused_when_a_challenge_was_sent(sb: SandboxHandle, callback: str) -> None:
    _, challenge = _pkce()
    code = _sign_in_query(sb, "operator@msp.example", challenge)["code"]
    assert _aadsts(_redeem(sb, code, "")) == 501481


def test_a_code_is_single_use_54005(sb: SandboxHandle, callback: str) -> None:
    verifier, challenge = _pkce()
    code = _sign_in_query(sb, "reader@msp.example", challenge)["code"]
    assert _redeem(sb, code, verifier).status_code == 200
    again = _redeem(sb, code, verifier)
    assert again.status_code == 400 and _aadsts(again) == 54005 and "access_token" not in again.json()


def test_a_code_expires_after_ten_minutes_70008(sb: SandboxHandle, callback: str) -> None:
    verifier, challenge = _pkce()
    fresh = _sign_in_query(sb, "reader@msp.example", challenge)["code"]
    stale = _sign_in_query(sb, "reader@msp.example", challenge)["code"]
    sb.control.set_clock(9 * 60)
    assert _redeem(sb, fresh, verifier).status_code == 200
    sb.control.set_clock(10 * 60 + 1)
    expired = _redeem(sb, stale, verifier)
    assert expired.status_code == 400 and _aadsts(expired) == 70008


def test_redemption_checks_redirect_uri_client_and_credential(sb: SandboxHandle, callback: str) -> None:
    api = _api(sb)
    verifier, challenge = _pkce()
    code = _sign_in_query(sb, "operator@msp.example", challenge)["code"]
    other = _redeem(sb, code, verifier, redirect_uri=callback + "x")
    assert other.status_code == 400 and _aadsts(other) == 500112
    code = _sign_in_query(sb, "operator@msp.example", challenge)["code"]
    bare = _token(sb, api["tenantId"], grant_type="authorization_code", client_id=api["appId"], code=code,
                  redirect_uri=callback, code_verifier=verifier)
    assert bare.status_code == 401 and _aadsts(bare) == 7000218
    assert _redeem(sb, code, verifier).status_code == 200  # an unauthenticated attempt did not spend it
    assert _aadsts(_redeem(sb, "not-a-code", verifier)) == 70000


# Control API


def test_redirect_uri_registration_survives_reset_and_is_checked(sb: SandboxHandle) -> None:
    uri = f"http://localhost:{secrets.randbelow(20000) + 30000}/.auth/login/aad/callback"
    assert uri in sb.control.add_redirect_uri("msp-app", uri)
    sb.control.reset()
    assert uri in _api(sb)["redirectUris"]
    for bad in ("http://rotator.example.net/cb", "not a uri", "https://x.example/cb#frag"):
        with pytest.raises(RuntimeError, match="400"):
            sb.control.add_redirect_uri("msp-app", bad)
    with pytest.raises(RuntimeError, match="404"):
        sb.control.add_redirect_uri(str(uuid.uuid4()), uri)


def test_the_seed_names_users_and_automation_principals_and_keeps_secrets_out_of_files(sb: SandboxHandle) -> None:
    api = _api(sb)
    assert {u["userPrincipalName"]: u["roles"] for u in api["users"]} == {
        "operator@msp.example": ["Rotator.Operate"], "reader@msp.example": ["Rotator.Read"],
        "nobody@msp.example": [], "partner-admin@msp.example": ["Rotator.Operate"]}
    assert sorted(a["roles"][0] for a in api["automation"]) == ["Rotator.Operate", "Rotator.Read"]
    assert api["appRoles"] == ["Rotator.Read", "Rotator.Operate"] and api["appRoleAssignmentRequired"] is True
    secrets_made = [a["clientSecret"] for a in api["automation"]]
    assert all(re.fullmatch(r"[A-Za-z0-9~_.-]{3}8Q~[A-Za-z0-9~_.-]{34}", s) for s in secrets_made)
    sb.control.reset()
    assert [a["clientSecret"] for a in _api(sb)["automation"]] == secrets_made  # made at start, kept across reset
    for path in sb.state_dir.iterdir():
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets_made), path.name


def test_sign_in_as_plays_the_browser_for_the_local_hosts_tests(sb: SandboxHandle, callback: str) -> None:
    """sandbox.client.sign_in_as: open the authorize URL the app redirects to, pick a user, get what Entra posts to
    the callback; Entra's error page raises."""
    api = _api(sb)
    nonce = secrets.token_urlsafe(8)
    query = {"client_id": api["appId"], "response_type": "code id_token", "redirect_uri": callback,
             "scope": "openid profile email", "state": "st", "nonce": nonce, "response_mode": "form_post"}
    url = f"{sb.endpoints['entra']}/{api['tenantId']}/oauth2/v2.0/authorize?{urlencode(query)}"
    answer = sign_in_as(url, "reader@msp.example", sb.ca_file)
    assert answer.redirect_uri == callback and answer.method == "POST" and answer.params["state"] == "st"
    assert _verify(sb, answer.params["id_token"], api["appId"], api["tenantId"])["roles"] == ["Rotator.Read"]
    assert _redeem(sb, answer.params["code"], "").status_code == 200  # no PKCE asked, none checked
    with pytest.raises(PermissionError, match="AADSTS50105"):
        sign_in_as(url, "nobody@msp.example", sb.ca_file)
    with pytest.raises(LookupError):
        sign_in_as(url, "someone@elsewhere.example", sb.ca_file)
    with pytest.raises(PermissionError, match="AADSTS50011"):
        sign_in_as(url.replace("127.0.0.1%3A", "localhost%3A"), "reader@msp.example", sb.ca_file)
    refused = sign_in_as(url.replace("nonce=", "x="), "reader@msp.example", sb.ca_file)  # hybrid without a nonce
    assert refused.method == "POST" and refused.params["error"] == "invalid_request"
    assert refused.params["error_description"].startswith("AADSTS900144")


def test_logout_returns_only_to_a_registered_uri(sb: SandboxHandle, callback: str) -> None:
    api = _api(sb)
    end_session = requests.get(api["openidConfiguration"], verify=sb.ca_file, timeout=10).json()["end_session_endpoint"]

    def logout(target: str) -> requests.Response:
        return requests.get(end_session, params={"post_logout_redirect_uri": target}, allow_redirects=False,
                            verify=sb.ca_file, timeout=10)

    assert logout(callback).headers["Location"] == callback
    stranger = logout("https://elsewhere.example/")
    assert stranger.status_code == 200 and "Location" not in stranger.headers and "signed out" in stranger.text


def test_client_secret_basic_authenticates_like_the_form(sb: SandboxHandle) -> None:
    """RFC 6749 section 2.3.1: form-urlencoded client id and secret in an Authorization: Basic header."""
    api = _api(sb)
    caller = _automation(sb, "Rotator.Operate")

    def basic(secret: str) -> requests.Response:
        pair = f"{quote_plus(caller['appId'])}:{quote_plus(secret)}".encode()
        return requests.post(f"{sb.endpoints['entra']}/{api['tenantId']}/oauth2/v2.0/token",
                             data={"grant_type": "client_credentials", "scope": f"api://{api['appId']}/.default"},
                             headers={"Authorization": "Basic " + base64.b64encode(pair).decode()},
                             verify=sb.ca_file, timeout=10)

    good = basic(caller["clientSecret"])
    assert good.status_code == 200, good.text
    assert _verify(sb, good.json()["access_token"], api["appId"], api["tenantId"])["azp"] == caller["appId"]
    wrong = basic(client_secret("bad"))
    assert wrong.status_code == 401 and _aadsts(wrong) == 7000215
