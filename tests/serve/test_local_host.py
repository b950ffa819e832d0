"""The local server serves HTTP functions as the Functions host does: routes, methods, parameters, body, headers,
responses; and stands in for Easy Auth only when asked, only on requests without a principal."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import azure.functions as func
import pytest
from aiohttp import web

from devhost.host import LocalHost, RouteTemplateError, http_routes, parse_template, principal_headers

echo_app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


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


@echo_app.schedule(schedule="0 0 6 * * *", arg_name="timer")
def not_http(timer: func.TimerRequest) -> None:
    """A timer: never served over HTTP."""


ROUTES = http_routes(echo_app.get_functions())
PRINCIPAL = principal_headers("alice@msp.example", ["Rotator.Read", "Rotator.Operate"])


async def _serve(principal: dict[str, str] | None) -> AsyncIterator[str]:
    runner = web.AppRunner(LocalHost(ROUTES, principal).application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async for url in _serve(None):
        yield url


@pytest.fixture
async def signed_in() -> AsyncIterator[str]:
    async for url in _serve(PRINCIPAL):
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
    assert "x-ms-client-principal" not in got["headers"]  # no stand-in for Easy Auth unless asked
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


async def test_the_easy_auth_stand_in_signs_in_requests_without_a_principal(signed_in: str) -> None:
    got = await echo("GET", f"{signed_in}/api/items")
    principal = json.loads(base64.b64decode(got["headers"]["x-ms-client-principal"]))
    assert principal["auth_typ"] == "aad" and principal["name_typ"] == "name" and principal["role_typ"] == "roles"
    claims = [(c["typ"], c["val"]) for c in principal["claims"]]
    assert ("name", "alice@msp.example") in claims and ("preferred_username", "alice@msp.example") in claims
    assert [v for t, v in claims if t == "roles"] == ["Rotator.Read", "Rotator.Operate"]
    assert got["headers"]["x-ms-client-principal-name"] == "alice@msp.example"
    assert got["headers"]["x-ms-client-principal-idp"] == "aad"
    own = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": []}).encode()).decode()
    got = await echo("GET", f"{signed_in}/api/items", headers={"X-MS-CLIENT-PRINCIPAL": own})
    assert got["headers"]["x-ms-client-principal"] == own  # a request's own principal passes through unchanged


@pytest.mark.parametrize("template", ["a/{b?}/c", "{*rest}/x", "a/{b:regex(x)}", "a/{b}c", "a//b", "a/{b=1}"])
def test_templates_the_host_would_read_differently_are_refused_at_start(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        parse_template(template)
