"""Signing in to the served function app as in Azure: App Service Authentication (the local host, from
infra/app/easy-auth.json) validates bearer tokens and sign-in sessions issued by the sandbox's Entra ID, the code
checks the app roles. No function key, no principal built for every request: a caller is who Entra says it is."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import requests
from aiohttp import web

from devhost.easyauth import EasyAuth, Provider, Settings
from devhost.host import LocalHost
from sandbox.client import sign_in_as
from shared.entrypoints.access import platform_headers
from tests.rotation.conftest import World
from tests.serve.conftest import automation_token, bearer, register_callback, serving, signed_in
from tests.serve.test_local_host import KEYS, ROUTES

READ, OPERATE = "Rotator.Read", "Rotator.Operate"
PERSON = "Rotator.Operate, a person"
JSON_ACCEPT = {"Accept": "application/json"}
# Operator routes and the role each needs (docs/api.md); every one is tried with no credential, each role's token.
READ_ROUTES = [("GET", "/api/status"), ("GET", "/api/targets"), ("GET", "/api/me"), ("GET", "/api/openapi.json")]


def _unauthenticated(reply: requests.Response) -> bool:
    return reply.status_code == 401 and reply.json()["error"]["code"] == "Unauthenticated"


def test_each_operator_route_takes_a_bearer_token_with_the_right_role_and_nothing_else(world: World) -> None:
    operate, read = bearer(world.sb, OPERATE), bearer(world.sb, READ)
    tenant, app = str(uuid.uuid4()), str(uuid.uuid4())
    target = f"/api/targets/{tenant}/{app}"
    with serving(world) as served:
        for method, path in READ_ROUTES:
            assert _unauthenticated(requests.request(method, served.url + path, timeout=60)), path
            for token in (read, operate):
                reply = requests.request(method, served.url + path, headers=token, timeout=60)
                assert reply.status_code == 200, (path, reply.text)
        # A registry change needs Rotator.Operate: none is 401, Read is 403, Operate writes.
        body = {"customer": "Token Ltd"}
        assert _unauthenticated(requests.put(served.url + target, json=body, timeout=60))
        forbidden = requests.put(served.url + target, json=body, headers=read, timeout=60)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "Forbidden"
        created = requests.put(served.url + target, json=body, headers=operate, timeout=60)
        assert created.status_code == 201, created.text
        me = requests.get(served.url + "/api/me", headers=operate, timeout=60).json()
        # A function key is no credential at all: every route is anonymous at the host, the code asks for a principal.
        master = served.keys()["masterKey"]
        keyed = requests.get(served.url + "/api/status", headers={"x-functions-key": master}, timeout=60)
        # The dashboard sends a browser without a session to sign in, and shows the page to a token's bearer.
        page = requests.get(served.url + "/api/dashboard", allow_redirects=False, timeout=60)
        shown = requests.get(served.url + "/api/dashboard", headers=read, allow_redirects=False, timeout=60)
        output = served.output()
    assert me["kind"] == "app" and me["name"].startswith("app:") and OPERATE in me["roles"]
    assert _unauthenticated(keyed)
    assert page.status_code == 302 and page.headers["Location"].startswith("/.auth/login/aad?")
    assert shown.status_code == 200 and shown.headers["Content-Type"].startswith("text/html")
    # The server prints where its keys are, never a key or a token.
    assert str(served.keys_file) in output and master not in output
    assert read["Authorization"][7:] not in output


def test_a_forged_client_principal_is_stripped(world: World) -> None:
    forged = platform_headers("mallory@msp.example", {OPERATE})
    with serving(world) as served:
        reply = requests.get(served.url + "/api/targets", headers=forged, timeout=60)
        as_reader = requests.put(f"{served.url}/api/targets/{uuid.uuid4()}/{uuid.uuid4()}", json={"customer": "X"},
                                 headers={**forged, **bearer(world.sb, READ)}, timeout=60)
    assert _unauthenticated(reply)
    assert as_reader.status_code == 403  # the token's own roles count, not the forged header's


def test_tokens_the_platform_would_refuse_are_refused_401(world: World) -> None:
    sb = world.sb
    vault = requests.get(sb.settings["IDENTITY_ENDPOINT"], params={"resource": "https://vault.azure.net",
                         "api-version": "2019-08-01"}, headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]},
                         timeout=30).json()["access_token"]  # signed by Entra, for another audience
    good = automation_token(sb, OPERATE)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")  # the signature no longer matches
    sb.control.set_clock(-3 * 3600)  # Entra's clock three hours behind: its tokens have expired by ours
    try:
        expired = automation_token(sb, OPERATE)
    finally:
        sb.control.set_clock(0)
    with serving(world) as served:
        answers = {name: requests.get(served.url + "/api/status", headers={"Authorization": f"Bearer {token}"},
                                      timeout=60) for name, token in (("audience", vault), ("signature", tampered),
                                                                      ("expired", expired), ("garbage", "x.y.z"))}
        accepted = requests.get(served.url + "/api/status", headers={"Authorization": f"Bearer {good}"}, timeout=60)
    assert accepted.status_code == 200
    for name, reply in answers.items():
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer"), name


def test_a_person_signs_in_through_the_redirect_and_keeps_a_session(world: World) -> None:
    with serving(world) as served:
        register_callback(world.sb, served.url)
        operator = signed_in(world.sb, served.url, "operator@msp.example")
        cookie = next(c for c in operator.cookies if c.name == "AppServiceAuthSession")
        me = operator.get(served.url + "/api/me", timeout=60)
        reader = signed_in(world.sb, served.url, "reader@msp.example", then="/api/dashboard")
        page = reader.get(served.url + "/api/dashboard", allow_redirects=False, timeout=60)
        refused = reader.put(f"{served.url}/api/targets/{uuid.uuid4()}/{uuid.uuid4()}", json={"customer": "X"},
                             timeout=60)
        me_endpoint = operator.get(served.url + "/.auth/me", timeout=60)  # the token store is off
        out = operator.get(served.url + "/.auth/logout", allow_redirects=False, timeout=60)
        after = operator.get(served.url + "/api/me", timeout=60)
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "operator@msp.example" and me.json()["kind"] == "user"
    assert OPERATE in me.json()["roles"]
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.expires is not None
    assert page.status_code == 200 and refused.status_code == 403
    assert me_endpoint.status_code == 404
    assert out.status_code == 302 and _unauthenticated(after)
    # signed out at Entra too, which is asked to return the browser to the platform's signed-out page
    assert out.headers["Location"].startswith(world.env["AZURE_AUTHORITY_HOST"])
    assert "/oauth2/v2.0/logout?post_logout_redirect_uri=http" in out.headers["Location"]


def test_the_callback_refuses_an_unknown_state_or_another_browser(world: World) -> None:
    with serving(world) as served:
        register_callback(world.sb, served.url)
        forged = requests.get(f"{served.url}/.auth/login/aad/callback", params={"code": "c", "state": "guess"},
                              allow_redirects=False, timeout=60)
        # A real sign-in's redirect replayed in a browser that did not start it (no binding cookie).
        session = requests.Session()
        start = session.get(f"{served.url}/.auth/login/aad", allow_redirects=False, timeout=60)
        stranger = requests.get(f"{served.url}/.auth/login/aad/callback", params={
            "code": "c", "state": dict(p.split("=", 1) for p in start.headers["Location"].split("?", 1)[1].split("&"))[
                "state"]}, allow_redirects=False, timeout=60)
    assert forged.status_code == 401 and "AppServiceAuthSession" not in forged.headers.get("Set-Cookie", "")
    assert stranger.status_code == 401


@asynccontextmanager
async def _echo_behind(world: World, settings: Settings) -> AsyncIterator[str]:
    host = LocalHost(ROUTES, KEYS, EasyAuth(settings, Provider.from_environment(world.env)))
    runner = web.AppRunner(host.application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_auth_me_with_the_token_store_on_answers_the_signed_in_user_only(world: World) -> None:
    settings = Settings.from_document({"login": {"tokenStore": {"enabled": True}}})
    async with _echo_behind(world, settings) as url:
        register_callback(world.sb, url)
        anonymous = await asyncio.to_thread(requests.get, f"{url}/.auth/me", timeout=60)
        session = await asyncio.to_thread(signed_in, world.sb, url, "reader@msp.example", "/api/items")
        mine = await asyncio.to_thread(session.get, f"{url}/.auth/me", timeout=60)
    assert anonymous.status_code == 401
    assert mine.status_code == 200
    (entry,) = mine.json()
    claims = {(c["typ"], c["val"]) for c in entry["user_claims"]}
    assert entry["provider_name"] == "aad" and ("preferred_username", "reader@msp.example") in claims
    assert ("roles", READ) in claims and entry["id_token"].count(".") == 2


async def test_a_wrong_nonce_in_the_id_token_is_refused(world: World) -> None:
    from devhost.easyauth import InvalidToken

    easy = EasyAuth(Settings(), Provider.from_environment(world.env))
    token = await asyncio.to_thread(automation_token, world.sb, READ)
    audience = f"api://{world.env['MSP_APP_CLIENT_ID']}"
    assert (await easy.validate(token, (audience, world.env["MSP_APP_CLIENT_ID"])))["roles"] == [READ]
    with pytest.raises(InvalidToken):
        await easy.validate(token, (audience, world.env["MSP_APP_CLIENT_ID"]), nonce="the-one-we-sent")


def test_a_user_without_an_app_role_is_stopped_at_entra(world: World) -> None:
    with serving(world) as served:
        register_callback(world.sb, served.url)
        start = requests.get(f"{served.url}/.auth/login/aad", allow_redirects=False, timeout=60)
        with pytest.raises(PermissionError, match="AADSTS50105"):
            sign_in_as(start.headers["Location"], "nobody@msp.example", world.sb.ca_file)


# Every operation the OpenAPI document says needs a signed-in caller (it documents 401), and the role it needs
# (docs/api.md's table). A route added to the document without a row here fails the test below.
_T, _A, _R = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
ROUTE_ROLES = {
    ("GET", "/api/openapi.json"): READ,
    ("GET", "/api/me"): None,  # any signed-in caller
    ("GET", "/api/status"): READ,
    ("GET", "/api/targets"): READ,
    ("GET", "/api/targets/{tenantId}/{appId}"): READ,
    ("GET", "/api/targets/{tenantId}/{appId}/details"): READ,
    ("GET", "/api/rotations/{rotationId}"): READ,
    ("GET", "/api/discover/{tenantId}"): READ,
    ("PUT", "/api/targets/{tenantId}/{appId}"): OPERATE,
    ("DELETE", "/api/targets/{tenantId}/{appId}"): OPERATE,
    ("GET", "/api/targets/{tenantId}/{appId}/proofpoint-check"): OPERATE,
    ("POST", "/api/targets/{tenantId}/{appId}/offboard"): OPERATE,
    ("POST", "/api/rotations"): OPERATE,
    ("POST", "/api/acknowledgements"): OPERATE,
    ("POST", "/api/push"): OPERATE,
    ("GET", "/api/consent-url/{tenantId}"): OPERATE,
    ("POST", "/api/alerts/test"): OPERATE,
    ("GET", "/api/onboarding/runs"): READ,
    ("GET", "/api/onboarding/runs/{runId}"): READ,
    ("GET", "/api/onboarding/runs/{runId}/customers"): OPERATE,
    ("POST", "/api/onboarding/runs/{runId}/start"): OPERATE,
    ("POST", "/api/onboarding/runs/{runId}/resume"): OPERATE,
    ("DELETE", "/api/onboarding/runs/{runId}/session"): OPERATE,
    # The partner sign-in sends a browser to Entra: Rotator.Operate, and a person (an app's token: PersonRequired).
    ("GET", "/api/onboarding/signin"): PERSON,
    ("GET", "/api/onboarding/callback"): PERSON,
    ("GET", "/api/inventory"): READ,
    ("GET", "/api/exclusions"): READ,
    ("POST", "/api/exclusions"): OPERATE,
    ("DELETE", "/api/exclusions/{exclusionId}"): OPERATE,
    ("GET", "/api/warning-thresholds/{tenantId}"): READ,
    ("PUT", "/api/warning-thresholds/{tenantId}"): OPERATE,
    ("GET", "/api/reports/{tenantId}"): READ,
    ("GET", "/api/tickets"): READ,
    ("POST", "/api/tickets/test"): OPERATE,
    ("GET", "/api/approvals"): READ,
    ("POST", "/api/approvals/{tenantId}/{appId}"): OPERATE,
    # The signed link's confirmation form: the decision is the signed-in operator's (the link alone decides nothing).
    ("POST", "/api/approval-links"): OPERATE,
}


def _documented_signed_in_operations() -> set[tuple[str, str]]:
    from shared.entrypoints.api import openapi_document

    document = openapi_document()
    return {(method.upper(), path) for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if isinstance(operation, dict) and "401" in operation.get("responses", {})}


def test_the_role_table_names_every_operation_that_needs_a_sign_in() -> None:
    assert set(ROUTE_ROLES) == _documented_signed_in_operations()


def test_every_operator_route_with_only_a_bearer_token(world: World) -> None:
    """No credential: 401 JSON; a token without the role: 403 before the request is even read; a token with it:
    past both (whatever the route then says of the made-up ids and the empty body)."""
    tokens = {READ: bearer(world.sb, READ), OPERATE: bearer(world.sb, OPERATE)}
    answers: dict[tuple[str, str], dict[str, int]] = {}
    with serving(world) as served:
        for (method, template), role in ROUTE_ROLES.items():
            path = template.format(tenantId=_T, appId=_A, rotationId=_R, runId=_R, exclusionId=_T)
            send = {"json": {}} if method in ("POST", "PUT") else {}
            seen = answers.setdefault((method, template), {})
            # An API client's Accept: the signed link's form route answers a browser (no JSON asked) with a page.
            anonymous = requests.request(method, served.url + path, headers=JSON_ACCEPT, timeout=60,
                                         **send)  # type: ignore[arg-type]
            assert _unauthenticated(anonymous), (method, template, anonymous.status_code, anonymous.text)
            for held, token in tokens.items():
                reply = requests.request(method, served.url + path, headers={**token, **JSON_ACCEPT}, timeout=60,
                                         **send)  # type: ignore[arg-type]
                seen[held] = reply.status_code
                if role in (OPERATE, PERSON) and held == READ:
                    assert reply.status_code == 403 and reply.json()["error"]["code"] == "Forbidden", (method, path)
                elif role == PERSON:  # these bearer tokens are apps' (client credentials)
                    code = reply.json()["error"]["code"]
                    assert reply.status_code == 403 and code == "PersonRequired", (method, path)
                else:
                    assert reply.status_code not in (401, 403), (method, path, held, reply.text)
    assert len(answers) == len(ROUTE_ROLES)
