"""Listeners, TLS, per-service faults and holds, and the control API of the sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import ipaddress
import json
import logging
import os
import re
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import trustme
from aiohttp import ClientSession, web
from yarl import URL

from sandbox import entra, graph, identity, inventory, partner_center, psa_autotask, seeddates
from sandbox.world import (
    API_SCOPE,
    AUTOMATION_APPS,
    DEFAULT_CONSENT_REDIRECT_URI,
    MI_CLIENT_ID,
    MI_PRINCIPAL_ID,
    MSP_APP_ID,
    MSP_APP_OBJECT_ID,
    MSP_TENANT_ID,
    PARTNER_ADMIN_ID,
    PARTNER_ADMIN_UPN,
    SignInSource,
    World,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICES: tuple[str, ...] = (
    "entra", "graph", "keyvault", "proofpoint", "portal", "webhooks", "identity", "tables", "partnercenter")
SERVICES += ("psa_autotask",)  # issue 26: the Autotask PSA stand-in (sandbox/psa_autotask.py)
SERVICES += ("psa_halopsa",)  # issue 26: the HaloPSA stand-in (sandbox/psa_halopsa.py)
SERVICES += ("psa_connectwise",)  # issue 26: the ConnectWise Manage stand-in (sandbox/psa_connectwise.py)
WHEN = ("before", "after")
# Developer B's modules; the sandbox still starts (with an empty app) while one is missing.
OPTIONAL_MODULES = {"keyvault": "KeyVaultState", "proofpoint": "ProofpointState", "portal": "PortalState",
                    "webhooks": "WebhooksState"}
OPTIONAL_MODULES["psa_autotask"] = "AutotaskState"
OPTIONAL_MODULES["psa_halopsa"] = "HaloPsaState"
OPTIONAL_MODULES["psa_connectwise"] = "ConnectWiseState"


@dataclass
class Match:
    """What a fault or hold catches: service, method, path regex, OAuth client_id, body regex; the first `skip`
    matches pass."""

    service: str
    method: str | None
    path: re.Pattern[str]
    client_id: str | None
    body: re.Pattern[str] | None
    skip: int

    def hits(self, name: str, request: web.Request, seen: Seen) -> bool:
        """True when the request matches and is past the skipped ones (a skipped match is counted here)."""
        if not (
            self.service == name
            and (self.method is None or self.method.upper() == request.method)
            and self.path.search(request.path)
            and (self.client_id is None or (seen.client_id or "").lower() == self.client_id.lower())
            and (self.body is None or self.body.search(seen.body))
        ):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "method": self.method, "path": self.path.pattern,
                "client_id": self.client_id, "body": self.body.pattern if self.body else None, "skip": self.skip}


@dataclass(frozen=True)
class Seen:
    """What the middleware read of a request for matching (only when some fault or hold asks for it)."""

    client_id: str | None = None
    body: str = ""


@dataclass
class Fault:
    id: str
    match: Match
    when: str  # before: instead of the work; after: the work is done, then the fault answers
    status: int | None
    code: str | None
    message: str | None
    retry_after: float | None
    remaining: int | None  # None: until cleared
    latency_ms: float
    drop: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, **self.match.to_json(), "when": self.when,
            "status": self.status, "code": self.code, "message": self.message, "retry_after": self.retry_after,
            "count": self.remaining, "latency_ms": self.latency_ms, "drop": self.drop,
        }


@dataclass
class Hold:
    id: str
    match: Match
    when: str
    remaining: int
    waiting: int = 0
    held: int = 0  # requests caught so far
    released: bool = False
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released = True
        self.gate.set()


class Controls:
    """Faults and holds, shared by every service's middleware."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.holds: dict[str, Hold] = {}

    def _matches(self) -> list[Match]:
        return [f.match for f in self.faults] + [h.match for h in self.holds.values() if not h.released]

    async def seen(self, request: web.Request) -> Seen:
        """Read the client id and the body only when a fault or hold matches on them."""
        matches = self._matches()
        client_id = await _client_id(request) if any(m.client_id for m in matches) else None
        body = ""
        # `body_exists`, not `can_read_body`: the latter turns False once anything (the client id's form) read the
        # stream, though `read()`, `json()`, `text()` and `post()` still answer from aiohttp's cache.
        if any(m.body for m in matches) and request.body_exists:
            body = (await request.read()).decode("utf-8", errors="replace")  # cached: the handler reads it again
        return Seen(client_id, body)

    def take_fault(self, service: str, request: web.Request, when: str, seen: Seen) -> Fault | None:
        for fault in self.faults:
            if fault.when == when and fault.match.hits(service, request, seen):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def take_hold(self, service: str, request: web.Request, when: str, seen: Seen) -> Hold | None:
        for hold in self.holds.values():
            if (
                hold.when == when
                and hold.remaining > 0
                and not hold.released
                and hold.match.hits(service, request, seen)
            ):
                hold.remaining -= 1
                hold.held += 1
                return hold
        return None

    def release_all(self) -> None:
        for hold in self.holds.values():
            hold.release()
        self.holds.clear()

    def reset(self) -> None:
        self.faults.clear()
        self.release_all()


FaultFormatter = Callable[[int, str | None, str | None], dict[str, Any]]


def _generic_fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    return {"error": {"code": code or "Fault", "message": message or "Injected fault."}}


async def _client_id(request: web.Request) -> str | None:
    """The OAuth client_id of a request: a query parameter, or a field of a form-encoded body (read and cached)."""
    if "client_id" in request.query:
        return request.query["client_id"]
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        value = (await request.post()).get("client_id")  # aiohttp caches the form: the handler reads it again
        return value if isinstance(value, str) else None
    return None


def _middleware(service: str, controls: Controls, formatter: FaultFormatter) -> Any:
    @web.middleware
    async def faults_and_holds(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen = await controls.seen(request)
        fault = controls.take_fault(service, request, "before", seen)
        if fault is not None:
            answer = await _apply(fault, request, formatter)
            if answer is not None:
                return answer
        hold = controls.take_hold(service, request, "before", seen)
        if hold is not None:
            await _wait(hold)
            await asyncio.sleep(0)  # let a pending connection_lost land first
            if request.transport is None or request.transport.is_closing():
                # The caller died while parked (a killed rotator): the request never reaches the service.
                raise asyncio.CancelledError
        response = await handler(request)
        hold = controls.take_hold(service, request, "after", seen)
        if hold is not None:
            await _wait(hold)
        fault = controls.take_fault(service, request, "after", seen)
        if fault is not None:
            # The work is done (credential created, version written, settings stored); the caller never learns it.
            answer = await _apply(fault, request, formatter)
            if answer is not None:
                return answer
        return response

    return faults_and_holds


async def _apply(fault: Fault, request: web.Request, formatter: FaultFormatter) -> web.StreamResponse | None:
    """Latency, then a dropped connection or an error answer; None when the fault only delays."""
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.drop:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing more to say on a dropped connection
    if fault.status is not None:
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        return web.json_response(formatter(fault.status, fault.code, fault.message), status=fault.status,
                                 headers=headers)
    return None


async def _wait(hold: Hold) -> None:
    hold.waiting += 1
    try:
        await hold.gate.wait()
    finally:
        hold.waiting -= 1


def _pattern(doc: dict[str, Any], key: str = "path") -> re.Pattern[str]:
    try:
        return re.compile(doc.get(key) or ".*")
    except (re.error, TypeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad {key} regex: {exc}"}),
                                 content_type="application/json") from exc


def _tables_fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    # The Table service's JSON error format (odata.error), as Azurite and Azure Storage answer.
    return {"odata.error": {"code": code or "InternalError",
                            "message": {"lang": "en-US", "value": message or "Injected fault."}}}


# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the proxy's HTTP stack sets itself.
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                  "host", "content-length"}


def _upstream(value: object) -> str | None:
    """An upstream Table endpoint's origin (scheme://host:port) on loopback, or None (no upstream)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("tables_upstream must be a URL string or null")
    url = URL(value)
    if url.scheme not in ("http", "https") or url.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("tables_upstream must be an http(s) URL on loopback (Azurite)")
    return str(url.origin())


class TablesProxy:
    """A plain-http pass-through to Azurite's Table endpoint, so faults and holds can strike state writes.

    The path, query, headers and body are forwarded untouched: SharedKey signs the account and path, not the host,
    so a connection string whose TableEndpoint names the proxy works unchanged.
    """

    def __init__(self) -> None:
        self.upstream: str | None = None
        self._session: ClientSession | None = None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if self.upstream is None:
            return web.json_response(_tables_fault_body(502, "NoUpstream", "POST /settings {tables_upstream} first"),
                                     status=502)
        if self._session is None:
            self._session = ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        body = await request.read()
        # No body, no payload: aiohttp would add a Content-Type, which SharedKey signs.
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED}
            return web.Response(status=upstream.status, headers=out, body=answer)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_control_app(world: World, controls: Controls, tables: TablesProxy) -> web.Application:
    """The control API: reset, seed, state, faults, holds, clock, settings."""
    routes = web.RouteTableDef()

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.body_exists:
            return {}
        try:
            doc = await request.json()
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"invalid JSON: {exc}"})) from exc
        if not isinstance(doc, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "expected a JSON object"}))
        return doc

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        controls.reset()
        world.reset()
        return web.json_response({"ok": True})

    @routes.post("/seed")
    async def seed(request: web.Request) -> web.Response:
        try:
            world.seed(await body(request))
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad seed document: {exc!r}"}, status=400)
        return web.json_response({"ok": True})

    @routes.get("/state")
    async def state(request: web.Request) -> web.Response:
        return web.json_response(world.dump())

    @routes.get("/msp")
    async def msp(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "tenantId": MSP_TENANT_ID,
                "managedIdentityClientId": MI_CLIENT_ID,
                "managedIdentityPrincipalId": MI_PRINCIPAL_ID,
                "appId": MSP_APP_ID,
                "appObjectId": MSP_APP_OBJECT_ID,
            }
        )

    @routes.get("/msp/partner")
    async def msp_partner(request: web.Request) -> web.Response:
        """The partner relationship: the partner admin, its groups, and every GDAP relationship with its access
        assignments (as seeded under `gdap`) and Partner Center's application consents."""
        tenant = world.directory.tenants[MSP_TENANT_ID]
        return web.json_response({
            "tenantId": MSP_TENANT_ID,
            "admin": {"id": PARTNER_ADMIN_ID, "userPrincipalName": PARTNER_ADMIN_UPN},
            "groups": [{"id": g.id, "displayName": g.display_name, "members": list(g.members)}
                       for g in tenant.groups.values()],
            **world.gdap.dump(),
        })

    @routes.get("/msp/api")
    async def msp_api(request: web.Request) -> web.Response:
        """The rotator's API as App Service Authentication and its callers see it: the MSP app's id, issuer and
        app roles, the MSP users (no passwords: the sign-in page picks one) and the automation principals with their
        client secrets (made at start; the control API is loopback test equipment, never logged)."""
        tenant = world.directory.tenants[MSP_TENANT_ID]
        api = tenant.service_principals[MSP_APP_ID]
        app = world.directory.find_application(MSP_APP_ID)
        assert app is not None  # re-created by every reset
        role_of = {r.id: r.value for r in app.app_roles}

        def roles(principal_id: str) -> list[str]:
            return sorted(role_of[a.app_role_id] for a in api.assigned_to if a.principal_id == principal_id)

        return web.json_response({
            "tenantId": MSP_TENANT_ID,
            "appId": MSP_APP_ID,
            "identifierUri": app.identifier_uris[0],
            "issuer": world.issuer(MSP_TENANT_ID),
            "openidConfiguration": f"{world.urls['entra']}/{MSP_TENANT_ID}/v2.0/.well-known/openid-configuration",
            "appRoles": [r.value for r in app.app_roles],
            "scope": f"{app.identifier_uris[0]}/{API_SCOPE}",
            "appRoleAssignmentRequired": api.app_role_assignment_required,
            "redirectUris": list(app.redirect_uris),
            "users": [{"id": u.id, "userPrincipalName": u.user_principal_name, "displayName": u.display_name,
                       "roles": roles(u.id)} for u in tenant.users.values()],
            "automation": [{"appId": app_id, "servicePrincipalId": sp_id, "displayName": name,
                            "clientSecret": world.automation_secrets[app_id], "roles": roles(sp_id)}
                           for app_id, _, sp_id, name, _ in AUTOMATION_APPS],
        })

    @routes.post("/applications/{app_id}/redirectUris")
    async def add_redirect_uri(request: web.Request) -> web.Response:
        """Register a web redirect URI on an app, as `az ad app update --web-redirect-uris` would (appending);
        kept across reset. Entra accepts http only for localhost (reply-url.md)."""
        uri = (await body(request)).get("uri")
        parsed = urlparse(uri) if isinstance(uri, str) else None
        if parsed is None or not parsed.netloc or parsed.fragment or not (
            parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in ("localhost", "127.0.0.1"))
        ):
            return web.json_response({"error": "uri must be an absolute https URI (http only on localhost or "
                                      "127.0.0.1), without a fragment"}, status=400)
        try:
            uris = world.add_redirect_uri(world.directory.resolve_app_id(request.match_info["app_id"]), str(uri))
        except KeyError:
            return web.json_response({"error": "no such application"}, status=404)
        return web.json_response({"redirectUris": uris})

    def match(doc: dict[str, Any]) -> Match:
        if doc.get("service") not in SERVICES:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"service must be one of {SERVICES}"}),
                                     content_type="application/json")
        client_id, skip = doc.get("client_id"), doc.get("skip", 0)
        if client_id is not None and not isinstance(client_id, str):
            raise web.HTTPBadRequest(text=json.dumps({"error": "client_id must be a string"}),
                                     content_type="application/json")
        if not isinstance(skip, int) or skip < 0:
            raise web.HTTPBadRequest(text=json.dumps({"error": "skip must be a non-negative integer"}),
                                     content_type="application/json")
        return Match(doc["service"], doc.get("method"), _pattern(doc), client_id,
                     _pattern(doc, "body") if doc.get("body") is not None else None, skip)

    def when(doc: dict[str, Any]) -> str:
        value = doc.get("when", "before")
        if value not in WHEN:
            raise web.HTTPBadRequest(text=json.dumps({"error": "when must be before or after"}),
                                     content_type="application/json")
        return str(value)

    @routes.post("/faults")
    async def add_fault(request: web.Request) -> web.Response:
        doc = await body(request)
        count = doc.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            return web.json_response({"error": "count must be a positive integer or null"}, status=400)
        fault = Fault(
            id=uuid.uuid4().hex,
            match=match(doc),
            when=when(doc),
            status=doc.get("status"),
            code=doc.get("code"),
            message=doc.get("message"),
            retry_after=doc.get("retry_after"),
            remaining=count,
            latency_ms=float(doc.get("latency_ms") or 0),
            drop=bool(doc.get("drop", False)),
        )
        if fault.when == "after" and fault.status is None and not fault.drop:
            return web.json_response({"error": "a fault after the work needs a status or drop"}, status=400)
        controls.faults.append(fault)
        return web.json_response({"id": fault.id})

    @routes.get("/faults")
    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in controls.faults]})

    @routes.delete("/faults")
    async def clear_faults(request: web.Request) -> web.Response:
        controls.faults.clear()
        return web.json_response({"ok": True})

    @routes.post("/holds")
    async def add_hold(request: web.Request) -> web.Response:
        doc = await body(request)
        hold = Hold(uuid.uuid4().hex, match(doc), when(doc), int(doc.get("count", 1)))
        controls.holds[hold.id] = hold
        return web.json_response({"id": hold.id})

    @routes.get("/holds/{id}")
    async def get_hold(request: web.Request) -> web.Response:
        hold = controls.holds.get(request.match_info["id"])
        if hold is None:
            # Released-all holds are forgotten; to a poller they are simply released.
            return web.json_response({"waiting": 0, "held": 0, "released": True})
        return web.json_response({"waiting": hold.waiting, "held": hold.held, "released": hold.released})

    @routes.post("/holds/{id}/release")
    async def release(request: web.Request) -> web.Response:
        hold = controls.holds.get(request.match_info["id"])
        if hold is None:
            return web.json_response({"error": "no such hold"}, status=404)
        hold.release()
        return web.json_response({"ok": True})

    @routes.delete("/holds")
    async def release_all(request: web.Request) -> web.Response:
        controls.release_all()
        return web.json_response({"ok": True})

    @routes.post("/clock")
    async def clock(request: web.Request) -> web.Response:
        world.clock_offset = dt.timedelta(seconds=float((await body(request)).get("offset_seconds", 0)))
        return web.json_response({"now": world.now().isoformat()})

    @routes.post("/settings")
    async def settings(request: web.Request) -> web.Response:
        doc = await body(request)
        try:
            world.configure_propagation(doc)
            world.configure_sign_ins(doc)
            if "tables_upstream" in doc:
                tables.upstream = _upstream(doc["tables_upstream"])
            if "keyvault_create_limit" in doc:
                limit = int(doc["keyvault_create_limit"])
                if not 1 <= limit <= 300:
                    raise ValueError("keyvault_create_limit must be 1..300")
                world.keyvault.create_limit = limit  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad settings: {exc!r}"}, status=400)
        return web.json_response({**world.propagation_settings(), **world.sign_in_settings(),
                                  "tables_upstream": tables.upstream})

    @routes.post("/sign-in")
    async def sign_in(request: web.Request) -> web.Response:
        """Another client (a forgotten integration, a hand-pasted key somewhere) signs in with an app's secret from
        an address of its own: judged and logged as the token endpoint would, without a token."""
        doc = await body(request)
        try:
            tenant_id, app_id, secret = str(doc["tenantId"]), str(doc["appId"]), str(doc["secret"])
            address = str(ipaddress.ip_address(doc.get("ipAddress") or "203.0.113.7"))
            at = seeddates.resolve(doc["at"], world.now()) if doc.get("at") else None
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad sign-in: {exc!r}"}, status=400)
        resource = str(doc.get("resourceDisplayName") or "Microsoft Graph")
        source = SignInSource(address, str(doc.get("resourceId") or "00000003-0000-0000-c000-000000000000"), resource)
        error = world.check_client_secret(tenant_id, world.directory.resolve_app_id(app_id), secret, at, source)
        return web.json_response({"ok": error is None, "error": error})

    @routes.get("/keyvault/writes")
    async def keyvault_writes(request: web.Request) -> web.Response:
        counts = getattr(world.keyvault, "write_counts", None)
        if counts is None:
            return web.json_response({"error": "the keyvault module is not mounted"}, status=501)
        return web.json_response(counts())

    @routes.post("/proofpoint/sync")
    async def proofpoint_sync(request: web.Request) -> web.Response:
        sync = getattr(world.proofpoint, "sync", None)
        if sync is None:
            return web.json_response({"error": "the proofpoint module is not mounted"}, status=501)
        return web.json_response({"results": sync()})

    inventory.add_control_routes(routes, world)
    psa_autotask.add_control_routes(routes, world)  # a person completing or deleting an Autotask ticket
    app = web.Application()
    app.add_routes(routes)
    return app


def _load_optional(world: World, name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(f"sandbox.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"sandbox.{name}":
            raise
        log.warning("sandbox.%s is missing; its listener serves nothing", name)
        return None
    setattr(world, name, getattr(module, OPTIONAL_MODULES[name])(world))
    return module


def build_apps(world: World, controls: Controls, tables: TablesProxy) -> dict[str, web.Application]:
    """One aiohttp application per listener, each service wrapped in its faults/holds middleware."""
    world.inventory = inventory.InventoryState(world)  # served by Graph's listener (delta queries)
    apps: dict[str, web.Application] = {
        "entra": entra.build_app(world),
        "graph": graph.build_app(world),
        "identity": identity.build_app(world),
        "tables": tables.build_app(),
        "partnercenter": partner_center.build_app(world),
    }
    formatters: dict[str, FaultFormatter] = {
        "entra": entra.fault_body,
        "graph": graph.fault_body,
        "identity": entra.fault_body,
        "tables": _tables_fault_body,
        "partnercenter": partner_center.fault_body,
    }
    for name in OPTIONAL_MODULES:
        module = _load_optional(world, name)
        apps[name] = module.build_app(world) if module else web.Application()
        formatters[name] = getattr(module, "fault_body", _generic_fault_body)
    for name in SERVICES:
        apps[name].middlewares.insert(0, _middleware(name, controls, formatters[name]))
    apps["control"] = build_control_app(world, controls, tables)
    return apps


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class Sandbox:
    """The running sandbox: listeners up, files written."""

    def __init__(self, state_dir: Path, seed: dict[str, Any] | None = None) -> None:
        self.state_dir = state_dir
        self.world = World()
        self.controls = Controls()
        self.tables = TablesProxy()
        self.endpoints: dict[str, str] = {}
        self._seed = seed
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ssl)
        apps = build_apps(self.world, self.controls, self.tables)
        for name, app in apps.items():
            # The identity endpoint is plain http, as App Service's local one is; the Tables proxy as Azurite.
            tls = None if name in ("identity", "tables") else server_ssl
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls, backlog=2048)
            await site.start()
            self._runners.append(runner)
            port = runner.addresses[0][1]
            self.endpoints[name] = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.world.urls = dict(self.endpoints)
        # The MSP app's federated credential names the entra URL, known only now.
        self.world.reset()
        if self._seed:
            self.world.seed(self._seed)
        ca_file = self.state_dir / "ca.pem"
        _write_atomically(ca_file, ca.cert_pem.bytes().decode())
        _write_atomically(self.state_dir / "settings.json", json.dumps(self.settings(ca_file), indent=2))
        _write_atomically(self.state_dir / "endpoints.json", json.dumps(self.endpoints, indent=2))

    def settings(self, ca_file: Path) -> dict[str, str]:
        """The app settings that point the rotator at this sandbox."""
        return {
            "AZURE_AUTHORITY_HOST": self.endpoints["entra"],
            "GRAPH_BASE_URL": self.endpoints["graph"] + "/v1.0",
            "KEY_VAULT_URL": self.endpoints["keyvault"],
            "PROOFPOINT_BASE_URL": self.endpoints["proofpoint"] + "/{stack}/api/v1",
            "PORTAL_BASE_URL": self.endpoints["portal"],
            "PARTNER_CENTER_URL": self.endpoints["partnercenter"],
            "IDENTITY_ENDPOINT": self.endpoints["identity"] + "/msi/token",
            "IDENTITY_HEADER": self.world.identity_header,
            "AZURE_CLIENT_ID": MI_CLIENT_ID,
            "MSP_APP_CLIENT_ID": MSP_APP_ID,
            "MSP_TENANT_ID": MSP_TENANT_ID,
            "IDENTITY_MODE": "federated",
            "CA_BUNDLE": str(ca_file),
            "CONSENT_REDIRECT_URI": DEFAULT_CONSENT_REDIRECT_URI,
            # Every sandbox service listens on loopback, which the destinations' address guard refuses otherwise.
            "DESTINATION_ALLOWED_HOSTS": ",".join(
                sorted({urlparse(url).hostname or "" for url in self.endpoints.values()} - {""})
            ),
        }

    async def stop(self) -> None:
        self.controls.release_all()
        for runner in self._runners:
            await runner.cleanup()
        await self.tables.close()
