"""Listeners, TLS, per-service faults and holds, and the control API of the sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
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

import trustme
from aiohttp import web

from sandbox import entra, graph, identity
from sandbox.world import MI_CLIENT_ID, MI_PRINCIPAL_ID, MSP_APP_ID, MSP_APP_OBJECT_ID, MSP_TENANT_ID, World

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICES = ("entra", "graph", "keyvault", "proofpoint", "portal", "identity")
# Developer B's modules; the sandbox still starts (with an empty app) while one is missing.
OPTIONAL_MODULES = {"keyvault": "KeyVaultState", "proofpoint": "ProofpointState", "portal": "PortalState"}


@dataclass
class Fault:
    id: str
    service: str
    method: str | None
    path: re.Pattern[str]
    status: int | None
    code: str | None
    message: str | None
    retry_after: float | None
    remaining: int | None  # None: until cleared
    latency_ms: float
    drop: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "method": self.method, "path": self.path.pattern,
            "status": self.status, "code": self.code, "message": self.message, "retry_after": self.retry_after,
            "count": self.remaining, "latency_ms": self.latency_ms, "drop": self.drop,
        }


@dataclass
class Hold:
    id: str
    service: str
    method: str | None
    path: re.Pattern[str]
    when: str
    remaining: int
    waiting: int = 0
    released: bool = False
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released = True
        self.gate.set()


def _matches(service: str, method: str | None, path: re.Pattern[str], request: web.Request, name: str) -> bool:
    return service == name and (method is None or method.upper() == request.method) and bool(path.search(request.path))


class Controls:
    """Faults and holds, shared by every service's middleware."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.holds: dict[str, Hold] = {}

    def take_fault(self, service: str, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if _matches(fault.service, fault.method, fault.path, request, service):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def take_hold(self, service: str, request: web.Request, when: str) -> Hold | None:
        for hold in self.holds.values():
            if hold.when == when and hold.remaining > 0 and not hold.released and _matches(
                hold.service, hold.method, hold.path, request, service
            ):
                hold.remaining -= 1
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


def _middleware(service: str, controls: Controls, formatter: FaultFormatter) -> Any:
    @web.middleware
    async def faults_and_holds(request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = controls.take_fault(service, request)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.drop:
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError  # nothing more to say on a dropped connection
            if fault.status is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                return web.json_response(
                    formatter(fault.status, fault.code, fault.message), status=fault.status, headers=headers
                )
        hold = controls.take_hold(service, request, "before")
        if hold is not None:
            await _wait(hold)
        response = await handler(request)
        hold = controls.take_hold(service, request, "after")
        if hold is not None:
            await _wait(hold)
        return response

    return faults_and_holds


async def _wait(hold: Hold) -> None:
    hold.waiting += 1
    try:
        await hold.gate.wait()
    finally:
        hold.waiting -= 1


def _pattern(doc: dict[str, Any]) -> re.Pattern[str]:
    try:
        return re.compile(doc.get("path") or ".*")
    except re.error as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"bad path regex: {exc}"})) from exc


def build_control_app(world: World, controls: Controls) -> web.Application:
    """The control API: reset, seed, state, faults, holds, clock, settings."""
    routes = web.RouteTableDef()

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
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

    @routes.post("/faults")
    async def add_fault(request: web.Request) -> web.Response:
        doc = await body(request)
        if doc.get("service") not in SERVICES:
            return web.json_response({"error": f"service must be one of {SERVICES}"}, status=400)
        fault = Fault(
            id=uuid.uuid4().hex,
            service=doc["service"],
            method=doc.get("method"),
            path=_pattern(doc),
            status=doc.get("status"),
            code=doc.get("code"),
            message=doc.get("message"),
            retry_after=doc.get("retry_after"),
            remaining=doc.get("count", 1),
            latency_ms=float(doc.get("latency_ms") or 0),
            drop=bool(doc.get("drop", False)),
        )
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
        when = doc.get("when", "before")
        if doc.get("service") not in SERVICES or when not in ("before", "after"):
            return web.json_response({"error": "need a known service and when = before|after"}, status=400)
        hold = Hold(uuid.uuid4().hex, doc["service"], doc.get("method"), _pattern(doc), when, int(doc.get("count", 1)))
        controls.holds[hold.id] = hold
        return web.json_response({"id": hold.id})

    @routes.get("/holds/{id}")
    async def get_hold(request: web.Request) -> web.Response:
        hold = controls.holds.get(request.match_info["id"])
        if hold is None:
            # Released-all holds are forgotten; to a poller they are simply released.
            return web.json_response({"waiting": 0, "released": True})
        return web.json_response({"waiting": hold.waiting, "released": hold.released})

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
        if "propagation_delay_seconds" in doc:
            world.propagation_delay = dt.timedelta(seconds=float(doc["propagation_delay_seconds"]))
        return web.json_response({"propagation_delay_seconds": world.propagation_delay.total_seconds()})

    @routes.post("/proofpoint/sync")
    async def proofpoint_sync(request: web.Request) -> web.Response:
        sync = getattr(world.proofpoint, "sync", None)
        if sync is None:
            return web.json_response({"error": "the proofpoint module is not mounted"}, status=501)
        return web.json_response({"results": sync()})

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


def build_apps(world: World, controls: Controls) -> dict[str, web.Application]:
    """One aiohttp application per listener, each service wrapped in its faults/holds middleware."""
    apps: dict[str, web.Application] = {
        "entra": entra.build_app(world),
        "graph": graph.build_app(world),
        "identity": identity.build_app(world),
    }
    formatters: dict[str, FaultFormatter] = {
        "entra": entra.fault_body,
        "graph": graph.fault_body,
        "identity": entra.fault_body,
    }
    for name in OPTIONAL_MODULES:
        module = _load_optional(world, name)
        apps[name] = module.build_app(world) if module else web.Application()
        formatters[name] = getattr(module, "fault_body", _generic_fault_body)
    for name in SERVICES:
        apps[name].middlewares.insert(0, _middleware(name, controls, formatters[name]))
    apps["control"] = build_control_app(world, controls)
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
        self.endpoints: dict[str, str] = {}
        self._seed = seed
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ssl)
        apps = build_apps(self.world, self.controls)
        for name, app in apps.items():
            # The identity endpoint is plain http, as App Service's local one is.
            tls = None if name == "identity" else server_ssl
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
            "IDENTITY_ENDPOINT": self.endpoints["identity"] + "/msi/token",
            "IDENTITY_HEADER": self.world.identity_header,
            "AZURE_CLIENT_ID": MI_CLIENT_ID,
            "MSP_APP_CLIENT_ID": MSP_APP_ID,
            "MSP_TENANT_ID": MSP_TENANT_ID,
            "IDENTITY_MODE": "federated",
            "CA_BUNDLE": str(ca_file),
        }

    async def stop(self) -> None:
        self.controls.release_all()
        for runner in self._runners:
            await runner.cleanup()
