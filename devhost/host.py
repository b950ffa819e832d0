"""`python -m shared serve`: the function app's HTTP functions on a loopback aiohttp server, as the Functions host
serves them in Azure, with App Service Authentication in front (Core Tools cannot be installed here, and `func start`
would ignore keys and sign-in alike).

What the Functions host does and this server copies (Azure/azure-functions-host; learn.microsoft.com/azure/
azure-functions/functions-bindings-http-webhook-trigger):
- every HTTP-triggered function of `function_app.app` is served at `/api/<route>`; route templates as the host
  (ASP.NET Core routing) matches them: literal segments case-insensitive, `{name}` one segment, `{name?}` an
  optional last segment, `{*name}` the rest of the path, constraints `int`, `long`, `bool`, `guid`, `alpha`; a
  trailing slash is ignored; literal routes win over parameterised ones;
- a method the function is not registered for, or a path no route matches, gets a bare 404 (the host's answer);
- each function's `authLevel` is enforced (`devhost.keys`, from the host's FunctionAuthorizationHandler.cs,
  AuthUtility.cs, AuthenticationLevelHandler.cs): ANONYMOUS needs nothing, FUNCTION a key of that function or a host
  key (`x-functions-key` header or `code` query parameter), ADMIN the master key; otherwise 401 with an empty body,
  before the function runs. The keys are made at start and written to a file (never printed or logged);
- the function gets a real `azure.functions.HttpRequest` (method, full URL, headers, query and route parameters,
  body bytes) and its `HttpResponse` is turned into the HTTP answer by the worker's own converter (status, headers,
  `content-type` from the mimetype, body); an exception in the function is a bare 500, as on the host.

In front of the host, App Service Authentication as `infra/app/easy-auth.json` and the Bicep configure it
(`devhost.easyauth`): a client-sent `X-MS-CLIENT-PRINCIPAL` never reaches the code; a valid Entra bearer token or
sign-in session becomes the principal the platform injects; `/.auth/login/aad`, `/.auth/me`, `/.auth/logout`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web
from azure.functions.http import HttpResponseConverter

from devhost.app import indexed_functions
from devhost.easyauth import EasyAuth, Provider, Settings, without_client_principal
from devhost.keys import ANONYMOUS, HostKeys, admitted, presented_key
from devhost.queues import work_queue_forever
from shared.bootstrap import close_invocation_services

log = logging.getLogger(__name__)

ROUTE_PREFIX = "api"  # host.json's extensions.http.routePrefix (not set: the default)
MAX_BODY_BYTES = 100 * 1024 * 1024  # the host's default maxRequestBodySize

_CONSTRAINTS = {
    "int": re.compile(r"-?\d+"),
    "long": re.compile(r"-?\d+"),
    "bool": re.compile(r"(?i)true|false"),
    "guid": re.compile(r"(?i)\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?"),
    "alpha": re.compile(r"[A-Za-z]+"),
}
_PARAMETER = re.compile(r"\{(?P<star>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>\w+))?(?P<optional>\?)?\}")


class RouteTemplateError(ValueError):
    """A route template this server cannot match as the host would (refused at start, never guessed)."""


@dataclass(frozen=True)
class Segment:
    literal: str | None = None
    name: str | None = None
    constraint: re.Pattern[str] | None = None
    optional: bool = False
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        if self.literal is not None:
            return value.lower() == self.literal.lower()
        return value != "" and (self.constraint is None or self.constraint.fullmatch(value) is not None)


@dataclass(frozen=True)
class Route:
    """One HTTP function: its route template parsed, its methods, and how to call it."""

    function_name: str
    template: str
    segments: tuple[Segment, ...]
    methods: frozenset[str]
    binding_name: str
    user_function: Any
    auth_level: str = ANONYMOUS  # the trigger's authLevel: ANONYMOUS, FUNCTION or ADMIN

    @property
    def precedence(self) -> tuple[int, ...]:
        """Literal segments before parameters before optional and catch-all ones, position by position."""
        return tuple(0 if s.literal is not None else 2 if (s.optional or s.catch_all) else 1 for s in self.segments)

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """The route parameters when the decoded path segments match this template, else None."""
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                if rest:
                    values[segment.name or ""] = rest
                return values
            if index >= len(parts):
                if segment.optional:
                    continue
                return None
            if not segment.accepts(parts[index]):
                return None
            if segment.name is not None:
                values[segment.name] = parts[index]
        return values if len(parts) == len(self.segments) or (
            len(parts) < len(self.segments) and all(s.optional for s in self.segments[len(parts):])
        ) else None


def parse_template(template: str) -> tuple[Segment, ...]:
    """The segments of a route template; RouteTemplateError for what the host would read differently."""
    segments: list[Segment] = []
    parts = [p for p in template.strip("/").split("/")] if template.strip("/") else []
    for index, part in enumerate(parts):
        found = _PARAMETER.fullmatch(part)
        if found is None:
            if "{" in part or "}" in part or part == "":
                raise RouteTemplateError(f"route {template!r}: segment {part!r} is not supported by the local server")
            segments.append(Segment(literal=part))
            continue
        constraint = found["constraint"]
        if constraint is not None and constraint not in _CONSTRAINTS:
            raise RouteTemplateError(f"route {template!r}: constraint {constraint!r} is not supported locally")
        last = index == len(parts) - 1
        if (found["optional"] or found["star"]) and not last:
            raise RouteTemplateError(f"route {template!r}: only the last segment may be optional or catch-all")
        segments.append(Segment(
            name=found["name"], constraint=_CONSTRAINTS.get(constraint or ""), optional=bool(found["optional"]),
            catch_all=bool(found["star"]),
        ))
    return tuple(segments)


def http_routes(functions: Iterable[Any]) -> list[Route]:
    """The HTTP-triggered functions of an app (`app.get_functions()`), most specific route first."""
    routes = []
    for function in functions:
        for binding in function.get_bindings():
            if binding.type != "httpTrigger":
                continue
            template = binding.route or function.get_function_name()
            methods = binding.methods or ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
                                          "CONNECT"]
            routes.append(Route(
                function_name=function.get_function_name(),
                template=template,
                segments=parse_template(template),
                methods=frozenset(str(getattr(m, "value", m)).upper() for m in methods),
                binding_name=binding.name,
                user_function=function.get_user_function(),
                auth_level=str(getattr(binding.auth_level, "value", binding.auth_level) or "FUNCTION").upper(),
            ))
    return sorted(routes, key=lambda r: r.precedence)


def _joined(pairs: Iterable[tuple[str, str]], separator: str) -> dict[str, str]:
    """Repeated names joined as the host's dictionaries join them (one string per name)."""
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]}{separator}{value}" if key in joined else value
    return joined


def _path_segments(raw_path: str) -> list[str] | None:
    """The decoded segments after the route prefix (`%2F` stays encoded, as in ASP.NET Core), or None."""
    parts = raw_path.split("/")[1:]
    if parts and parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]  # one trailing slash is ignored
    if not parts or parts[0].lower() != ROUTE_PREFIX:
        return None
    return [unquote(re.sub(r"%2[Ff]", "%252F", p)) for p in parts[1:]]


class LocalHost:
    """Serves routes as the Functions host does, behind App Service Authentication when `easy_auth` is given."""

    def __init__(self, routes: Sequence[Route], keys: HostKeys | None = None,
                 easy_auth: EasyAuth | None = None) -> None:
        self.routes = list(routes)
        self.keys = keys or HostKeys.generate(r.function_name for r in self.routes)
        self.easy_auth = easy_auth

    def application(self) -> web.Application:
        """An aiohttp app whose one middleware answers every request: aiohttp's own routing never decides."""

        @web.middleware
        async def every_request(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self.handle(request)

        return web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[every_request])

    def find(self, method: str, parts: Sequence[str]) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            params = route.match(parts)
            if params is not None and method in route.methods:
                return route, params
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The platform's module first: it sees every request, strips what only it may set, signs callers in.
        headers = without_client_principal(_joined(request.headers.items(), ","))
        if self.easy_auth is not None:
            if request.path.lower().startswith(self.easy_auth.settings.api_prefix.lower() + "/"):
                return await self.easy_auth.endpoint(request)
            refusal, identity = await self.easy_auth.authenticate(request)
            if refusal is not None:
                return refusal
            headers.update(identity)
        parts = _path_segments(request.raw_path.split("?", 1)[0])
        found = self.find(request.method.upper(), parts) if parts is not None else None
        if found is None:
            return web.Response(status=404)
        route, params = found
        query = _joined(request.query.items(), ",")
        presented = presented_key(request.headers, request.query)
        if not admitted(route.auth_level, self.keys, presented, route.function_name):
            return web.Response(status=401)  # FunctionInvocationMiddleware: UnauthorizedResult, no body
        http_request = func.HttpRequest(
            request.method.upper(), str(request.url), headers=headers, params=query, route_params=params,
            body=await request.read(),
        )
        arguments = {route.binding_name: http_request}
        try:
            if inspect.iscoroutinefunction(route.user_function):
                result = await route.user_function(**arguments)
            else:  # the Python worker runs a plain function on a thread, not on the event loop
                result = await asyncio.to_thread(route.user_function, **arguments)
            return _response(result)
        except Exception:
            log.exception("function %s failed", route.function_name)
            return web.Response(status=500)


def _response(result: Any) -> web.Response:
    """The worker's conversion of a function's return value into the HTTP answer."""
    datum = HttpResponseConverter.encode(result, expected_type=None)
    if datum is None:
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not an HttpResponse")
    if datum.type == "string":
        return web.Response(status=200, body=str(datum.value).encode())
    value = datum.value
    response = web.Response(status=int(value["status_code"].value), body=value["body"].value or b"")
    for name, header in value["headers"].items():
        response.headers.add(name, str(header.value))
    return response


def app_routes() -> list[Route]:
    """The routes of the real function app's HTTP functions."""
    return http_routes(indexed_functions())


async def serve(port: int, keys_file: Path, announce: bool = True, *, work_queue_connection: str = "",
                environment: dict[str, str] | None = None) -> None:
    """Serve the function app on 127.0.0.1:port (0: a free port) until cancelled, behind App Service Authentication
    configured from infra/app/easy-auth.json and the provider settings in `environment`; the host's keys go to
    `keys_file`. With a work queue connection string, also take work from the rotation queue, as the host runs the
    queue trigger beside HTTP."""

    routes = app_routes()
    keys = HostKeys.generate(r.function_name for r in routes)
    keys.write(keys_file)
    provider = Provider.from_environment(environment if environment is not None else dict(os.environ))
    host = LocalHost(routes, keys, EasyAuth(Settings.load(), provider))
    runner = web.AppRunner(host.application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    if announce:
        print(f"Serving the function app at http://127.0.0.1:{bound}/api/ (Ctrl-C stops)", flush=True)
        for route in host.routes:
            print(f"  {','.join(sorted(route.methods)):<40} /{ROUTE_PREFIX}/{route.template} [{route.auth_level}]",
                  flush=True)
        print(f"Function keys (as `az functionapp keys list` shows them): {keys_file}", flush=True)
        if provider.enabled:
            print(f"App Service Authentication: Entra ID issuer {provider.issuer}, client {provider.client_id}; sign "
                  f"in at http://127.0.0.1:{bound}/.auth/login/aad (callback "
                  f"http://127.0.0.1:{bound}/.auth/login/aad/callback)", flush=True)
        else:
            print("App Service Authentication: no identity provider (no AUTH_CLIENT_ID or MSP_APP_CLIENT_ID): nobody "
                  "signs in", flush=True)
    try:
        if work_queue_connection:
            if announce:
                print("Taking work from the rotation queue (advance_target, poisoned_work)", flush=True)
            await work_queue_forever(work_queue_connection)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await close_invocation_services()
