"""The local server serves HTTP functions as the Functions host does: routes, methods, parameters, body, headers,
responses, each function's authLevel with the keys it made; and App Service Authentication in front, from settings
(every unauthenticatedClientAction, excluded paths, header stripping, bearer tokens checked against a JWKS)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import azure.functions as func
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from devhost.easyauth import EasyAuth, Provider, Settings
from devhost.host import LocalHost, RouteTemplateError, http_routes, parse_template
from devhost.keys import HostKeys
from tests.conftest import ROOT

echo_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _echo(req: func.HttpRequest, function: str) -> func.HttpResponse:
    body = {
        "function": function,
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "route": dict(req.route_params),
        "headers": {k.lower(): v for k, v in req.headers.items()},
        "body": req.get_body().decode("utf-8", "replace"),
    }
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json")


@echo_app.route(route="items", methods=["GET", "POST"])
async def items(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "items")


@echo_app.route(route="items/special", methods=["GET"])
async def special(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "special")


@echo_app.route(route="items/{itemId}/{part?}", methods=["GET", "DELETE"])
async def item(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "item")


@echo_app.route(route="numbers/{n:int}", methods=["GET"], trigger_arg_name="request")
def numbers(request: func.HttpRequest) -> func.HttpResponse:  # a plain function, another binding name
    return _echo(request, "numbers")


@echo_app.route(route="files/{*path}", methods=["GET"])
async def files(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "files")


@echo_app.route(route="answer", methods=["PUT"])
async def answer(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b"\x00made", status_code=418, headers={"X-Custom": "yes", "Retry-After": "7"},
                             mimetype="application/octet-stream")


@echo_app.route(route="text", methods=["GET"])
async def text(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("plain", status_code=202)


@echo_app.route(route="broken", methods=["GET"])
async def broken(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@echo_app.route(route="keyed", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def keyed(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "keyed")


@echo_app.route(route="other-keyed", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def other_keyed(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "other_keyed")


@echo_app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
async def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "admin_only")


@echo_app.schedule(schedule="0 0 6 * * *", arg_name="timer")
def not_http(timer: func.TimerRequest) -> None:
    """A timer: never served over HTTP."""


ROUTES = http_routes(echo_app.get_functions())
KEYS = HostKeys.generate(r.function_name for r in ROUTES)


@asynccontextmanager
async def _serve(easy_auth: EasyAuth | None = None) -> AsyncIterator[str]:
    runner = web.AppRunner(LocalHost(ROUTES, KEYS, easy_auth).application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with _serve() as url:
        yield url


async def fetch(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


async def echo(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    status, headers, body = await fetch(method, url, **kwargs)
    assert status == 200, (status, body)
    assert headers["Content-Type"] == "application/json"
    result: dict[str, Any] = json.loads(body)
    return result


async def test_routes_match_as_the_host_matches_them(base: str) -> None:
    assert (await echo("GET", f"{base}/api/items"))["function"] == "items"
    assert (await echo("GET", f"{base}/api/items/"))["function"] == "items"  # a trailing slash is ignored
    assert (await echo("GET", f"{base}/API/Items"))["function"] == "items"  # literals are case-insensitive
    assert (await echo("GET", f"{base}/api/items/special"))["function"] == "special"  # literal before parameter
    got = await echo("GET", f"{base}/api/items/other")
    assert (got["function"], got["route"]) == ("item", {"itemId": "other"})  # the optional part absent
    got = await echo("GET", f"{base}/api/items/a%20b/c%0A")
    assert got["route"] == {"itemId": "a b", "part": "c\n"}  # route values are decoded
    assert (await echo("GET", f"{base}/api/items/x%2Fy"))["route"] == {"itemId": "x%2Fy"}  # %2F stays encoded
    assert (await echo("GET", f"{base}/api/numbers/42"))["route"] == {"n": "42"}
    assert (await echo("GET", f"{base}/api/files/a/b/c.txt"))["route"] == {"path": "a/b/c.txt"}


@pytest.mark.parametrize("path", ["/api/nothing", "/items", "/api", "/", "/api/numbers/forty-two",
                                  "/api/items/a/b/c", "/api/not_http", "/runtime/webhooks/eventgrid"])
async def test_a_path_no_route_matches_is_a_bare_404(base: str, path: str) -> None:
    status, _, body = await fetch("GET", base + path)
    assert (status, body) == (404, b"")


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/api/items"), ("POST", "/api/items/special"),
                                              ("PUT", "/api/items/1"), ("TRACE", "/api/items"),
                                              ("GET", "/api/answer")])
async def test_a_method_the_function_is_not_registered_for_is_a_bare_404(base: str, method: str, path: str) -> None:
    status, _, body = await fetch(method, base + path)
    assert (status, body) == (404, b"")


async def test_method_query_body_and_headers_reach_the_function(base: str) -> None:
    got = await echo("POST", f"{base}/api/items?a=1&b=two%20words&a=3", data=b'{"x": 1}',
                     headers={"Content-Type": "application/json", "X-Trace": "t-1"})
    assert got["method"] == "POST"
    assert got["params"] == {"a": "1,3", "b": "two words"}
    assert got["body"] == '{"x": 1}'
    assert got["headers"]["content-type"] == "application/json" and got["headers"]["x-trace"] == "t-1"
    assert got["url"].endswith("/api/items?a=1&b=two%20words&a=3")
    assert "x-ms-client-principal" not in got["headers"]  # nobody signed in: no principal
    assert (await echo("DELETE", f"{base}/api/items/7/part"))["method"] == "DELETE"


async def test_the_response_keeps_status_headers_and_body(base: str) -> None:
    status, headers, body = await fetch("PUT", f"{base}/api/answer")
    assert (status, body) == (418, b"\x00made")
    assert headers["X-Custom"] == "yes" and headers["Retry-After"] == "7"
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = await fetch("GET", f"{base}/api/text")
    assert (status, body, headers["Content-Type"]) == (202, b"plain", "text/plain; charset=utf-8")


async def test_a_function_that_raises_is_a_bare_500(base: str) -> None:
    status, _, body = await fetch("GET", f"{base}/api/broken")
    assert (status, body) == (500, b"")


@pytest.mark.parametrize("template", ["a/{b?}/c", "{*rest}/x", "a/{b:regex(x)}", "a/{b}c", "a//b", "a/{b=1}"])
def test_templates_the_host_would_read_differently_are_refused_at_start(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        parse_template(template)


# ------------------------------------------------------------------------------------------------------- authLevel


@pytest.mark.parametrize("path", ["/api/keyed", "/api/admin-only"])
async def test_a_keyed_function_without_a_key_is_refused_by_the_host_with_an_empty_401(base: str, path: str) -> None:
    for headers, query in (({}, ""), ({"x-functions-key": "not-a-key"}, ""), ({}, "?code=not-a-key"),
                           ({"x-functions-key": ""}, "?code=")):
        status, _, body = await fetch("GET", base + path + query, headers=headers)
        assert (status, body) == (401, b""), (headers, query)


async def test_a_function_key_opens_its_function_and_a_host_key_every_function_level_route(base: str) -> None:
    own = KEYS.functions["keyed"]["default"]
    host = KEYS.host["default"]
    assert (await echo("GET", f"{base}/api/keyed", headers={"x-functions-key": own}))["function"] == "keyed"
    assert (await echo("GET", f"{base}/api/keyed?code={own}"))["function"] == "keyed"
    assert (await echo("GET", f"{base}/api/other-keyed?code={host}"))["function"] == "other_keyed"
    # Another function's key is no key for this one; neither a function nor a host key opens an ADMIN function.
    assert (await fetch("GET", f"{base}/api/other-keyed?code={own}"))[0] == 401
    for key in (own, host):
        assert (await fetch("GET", f"{base}/api/admin-only", headers={"x-functions-key": key}))[0] == 401
    # The header wins over the query parameter (AuthenticationLevelHandler reads it first).
    assert (await fetch("GET", f"{base}/api/keyed?code={own}", headers={"x-functions-key": "wrong"}))[0] == 401


async def test_the_master_key_opens_every_level(base: str) -> None:
    for path in ("/api/keyed", "/api/admin-only", "/api/items"):
        assert (await fetch("GET", f"{base}{path}", headers={"x-functions-key": KEYS.master}))[0] == 200, path


def test_keys_are_written_for_their_owner_only(tmp_path: Any) -> None:
    path = tmp_path / "keys.json"
    KEYS.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    written = json.loads(path.read_text())
    assert written["masterKey"] == KEYS.master and written["functionKeys"] == {"default": KEYS.host["default"]}
    assert set(written["functions"]) == {r.function_name for r in ROUTES}


# ------------------------------------------------------------------------------------ App Service Authentication
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CLIENT = "a1b2c3d4-0000-4000-8000-000000000001"


@asynccontextmanager
async def _issuer() -> AsyncIterator[str]:
    """An OpenID issuer publishing SIGNING_KEY (kid "k1") at its jwks_uri."""
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key()))
    routes = web.RouteTableDef()
    holder: dict[str, str] = {}

    @routes.get("/tenant/v2.0/.well-known/openid-configuration")
    async def configuration(request: web.Request) -> web.Response:
        return web.json_response({"issuer": holder["issuer"], "jwks_uri": holder["base"] + "/tenant/keys",
                                  "authorization_endpoint": holder["base"] + "/tenant/authorize",
                                  "token_endpoint": holder["base"] + "/tenant/token"})

    @routes.get("/tenant/keys")
    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [{**public, "kid": "k1", "use": "sig"}]})

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    holder["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    holder["issuer"] = holder["base"] + "/tenant/v2.0"
    try:
        yield holder["issuer"]
    finally:
        await runner.cleanup()


def _token(issuer: str, *, key: Any = SIGNING_KEY, kid: str = "k1", aud: str = CLIENT, expires_in: int = 3600,
           **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": aud, "iat": now, "nbf": now, "exp": now + expires_in, "oid": "oid-1",
            "azp": "automation-app", "idtyp": "app", "roles": ["Rotator.Read", "Rotator.Operate"], **claims}
    return jwt.encode(body, key, "RS256", headers={"kid": kid})


def _settings(action: str, require: bool = True, excluded: tuple[str, ...] = ()) -> Settings:
    return Settings.from_document({"globalValidation": {"requireAuthentication": require,
                                                        "unauthenticatedClientAction": action,
                                                        "excludedPaths": list(excluded)}})


@asynccontextmanager
async def _behind(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    async with _issuer() as issuer:
        provider = Provider(CLIENT, issuer, (CLIENT, f"api://{CLIENT}"))
        async with _serve(EasyAuth(settings, provider)) as url:
            yield url, issuer


def test_the_deployed_settings_are_read_from_the_file_the_bicep_loads() -> None:
    deployed = json.loads((ROOT / "infra/app/easy-auth.json").read_text())
    settings = Settings.load()
    assert settings.unauthenticated_action == deployed["globalValidation"]["unauthenticatedClientAction"]
    assert settings.require_authentication is deployed["globalValidation"]["requireAuthentication"]
    assert settings.token_store is deployed["login"]["tokenStore"]["enabled"]


@pytest.mark.parametrize(("action", "status"), [("Return401", 401), ("Return403", 403), ("RedirectToLoginPage", 302),
                                                 ("AllowAnonymous", 200)])
async def test_each_unauthenticated_client_action(action: str, status: int) -> None:
    async with _behind(_settings(action, excluded=("/api/text",))) as (url, issuer):
        got, headers, _ = await fetch("GET", f"{url}/api/items?x=1", allow_redirects=False)
        assert got == status
        if action == "RedirectToLoginPage":
            assert headers["Location"] == "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fitems%3Fx%3D1"
        # An excluded path reaches the code unauthenticated; a valid token always does.
        assert (await fetch("GET", f"{url}/api/text", allow_redirects=False))[0] == 202
        signed = await echo("GET", f"{url}/api/items", headers={"Authorization": f"Bearer {_token(issuer)}"})
        assert "x-ms-client-principal" in signed["headers"]


async def test_without_require_authentication_every_action_lets_the_unauthenticated_through() -> None:
    async with _behind(_settings("Return401", require=False)) as (url, _):
        assert (await fetch("GET", f"{url}/api/items"))[0] == 200


async def test_a_valid_token_becomes_the_principal_the_platform_injects() -> None:
    async with _behind(_settings("AllowAnonymous", require=False)) as (url, issuer):
        token = _token(issuer, aud=f"api://{CLIENT}", preferred_username="ops@msp.example")
        got = await echo("GET", f"{url}/api/items", headers={"Authorization": f"Bearer {token}"})
    principal = json.loads(base64.b64decode(got["headers"]["x-ms-client-principal"]))
    assert principal["auth_typ"] == "aad" and principal["role_typ"].endswith("/claims/role")
    claims = [(c["typ"], c["val"]) for c in principal["claims"]]
    assert [v for t, v in claims if t == "roles"] == ["Rotator.Read", "Rotator.Operate"]  # one entry per value
    assert ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid-1") in claims  # mapped
    assert ("preferred_username", "ops@msp.example") in claims  # kept
    assert got["headers"]["x-ms-client-principal-name"] == "ops@msp.example"
    assert (got["headers"]["x-ms-client-principal-id"], got["headers"]["x-ms-client-principal-idp"]) == ("oid-1", "aad")


@pytest.mark.parametrize("case", ["other-key", "unknown-kid", "other-audience", "other-issuer", "expired",
                                  "not-yet-valid", "hs256", "garbage"])
async def test_an_invalid_token_is_refused_401_even_under_allow_anonymous(case: str) -> None:
    async with _behind(_settings("AllowAnonymous", require=False)) as (url, issuer):
        token = {
            "other-key": lambda: _token(issuer, key=OTHER_KEY),
            "unknown-kid": lambda: _token(issuer, kid="k2"),
            "other-audience": lambda: _token(issuer, aud="api://someone-else"),
            "other-issuer": lambda: _token(issuer.replace("/tenant/", "/other/")),
            "expired": lambda: _token(issuer, expires_in=-400),  # past the 5-minute clock skew
            "not-yet-valid": lambda: _token(issuer, nbf=int(time.time()) + 900),
            "hs256": lambda: jwt.encode({"iss": issuer, "aud": CLIENT, "exp": int(time.time()) + 60}, "k" * 32,
                                        "HS256", headers={"kid": "k1"}),
            "garbage": lambda: "not.a.jwt",
        }[case]()
        status, headers, body = await fetch("GET", f"{url}/api/items", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and body == b""


async def test_a_client_sent_principal_never_reaches_the_code() -> None:
    forged = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"auth_typ":"aad","claims":[]}').decode(),
              "X-MS-CLIENT-PRINCIPAL-NAME": "admin@msp.example", "X-MS-CLIENT-PRINCIPAL-ID": "x",
              "x-ms-client-principal-idp": "aad", "X-MS-TOKEN-AAD-ID-TOKEN": "t"}
    async with _behind(_settings("AllowAnonymous", require=False)) as (url, issuer):
        got = await echo("GET", f"{url}/api/items", headers=forged)
        assert not [h for h in got["headers"] if h.startswith(("x-ms-client-principal", "x-ms-token"))]
        signed = await echo("GET", f"{url}/api/items", headers={**forged, "Authorization": f"Bearer {_token(issuer)}"})
        assert signed["headers"]["x-ms-client-principal-name"] != "admin@msp.example"
    # Without App Service Authentication in front at all, the host still never passes them on.
    async with _serve() as bare:
        got = await echo("GET", f"{bare}/api/items", headers=forged)
    assert not [h for h in got["headers"] if h.startswith("x-ms-client-principal")]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "evil",
                                    "/\t/evil.example", "/\n/evil.example", " //evil.example"])
async def test_sign_in_accepts_only_a_path_on_this_app_as_where_to_return(target: str) -> None:
    async with _behind(_settings("AllowAnonymous", require=False)) as (url, issuer):
        status, _, _ = await fetch("GET", f"{url}/.auth/login/aad", params={"post_login_redirect_uri": target},
                                   allow_redirects=False)
        assert status == 403
        status, headers, _ = await fetch("GET", f"{url}/.auth/login/aad",
                                         params={"post_login_redirect_uri": "/api/items"}, allow_redirects=False)
    location = urlsplit(headers["Location"])
    assert status == 302 and headers["Location"].startswith(issuer.removesuffix("/v2.0") + "/authorize?")
    query = dict(parse_qsl(location.query))
    assert query["redirect_uri"] == f"{url}/.auth/login/aad/callback" and query["client_id"] == CLIENT
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert query["state"] and query["nonce"] and len(query["code_challenge"]) == 43


async def test_the_token_store_off_means_no_auth_me_and_unknown_auth_paths_are_404() -> None:
    async with _behind(_settings("AllowAnonymous", require=False)) as (url, _):
        assert (await fetch("GET", f"{url}/.auth/me"))[0] == 404
        assert (await fetch("GET", f"{url}/.auth/nothing"))[0] == 404


async def test_a_token_is_refused_when_the_issuers_keys_cannot_be_read() -> None:
    async with _issuer() as issuer:
        token = _token(issuer)
    # the issuer is gone: nothing can prove the signature, so nothing is let in as that caller
    provider = Provider(CLIENT, issuer, (CLIENT,))
    async with _serve(EasyAuth(_settings("AllowAnonymous", require=False), provider)) as url:
        status, headers, _ = await fetch("GET", f"{url}/api/items", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")


async def test_without_an_identity_provider_nobody_signs_in_and_the_action_still_applies() -> None:
    """No client id yet (before create-msp-app.sh): the module has no provider; Return401 refuses everyone, a token
    included, and AllowAnonymous lets everyone through unauthenticated."""
    async with _issuer() as issuer:
        token = _token(issuer)
        for action, expected in (("Return401", 401), ("AllowAnonymous", 200)):
            async with _serve(EasyAuth(_settings(action), Provider("", issuer, ()))) as url:
                status, _, body = await fetch("GET", f"{url}/api/items", headers={"Authorization": f"Bearer {token}"})
                assert status == expected, action
                if status == 200:
                    assert b"x-ms-client-principal" not in body
                assert (await fetch("GET", f"{url}/.auth/login/aad", allow_redirects=False))[0] == 404
