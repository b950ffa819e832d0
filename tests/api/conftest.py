"""Fixtures for driving the HTTP functions directly (no Functions host here): `api` calls a decorated function
with a func.HttpRequest, against the sandbox and Azurite, on the test's own tables."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest

from devhost.app import indexed_functions
from shared import bootstrap
from shared.alerts import LogAlerter
from shared.entrypoints.access import Role, platform_headers
from shared.settings import SETTINGS
from tests.openapi_check import check_response
from tests.rotation import conftest as rotation
from tests.rotation.conftest import Customer, World

world = rotation.world  # the same `world` fixture as the rotation tests (sandbox + Azurite, per-test tables)
rotator = rotation.rotator  # and the same `rotator` (the engine's services with the sandbox's settings)

JSON = {"Content-Type": "application/json"}
OPERATOR = "operator@msp.example"
BOTH_ROLES = (Role.READ.value, Role.OPERATE.value)
WAIT = {"wait": "true"}  # POST /api/rotations works on the rotation in the call and answers its outcome
ROUTES = {
    "me": "me",
    "openapi": "openapi.json",
    "targets": "targets",
    "target": "targets/{tenantId}/{appId}",
    "details": "targets/{tenantId}/{appId}/details",
    "proofpoint_check": "targets/{tenantId}/{appId}/proofpoint-check",
    "offboard_target": "targets/{tenantId}/{appId}/offboard",
    "status": "status",
    "rotations": "rotations",
    "rotation": "rotations/{rotationId}",
    "acknowledgements": "acknowledgements",
    "discover": "discover/{tenantId}",
    "push": "push",
    "dashboard": "dashboard",
    "dashboard_asset": "dashboard/{asset}",
    "consent": "consent",
    "consent_url": "consent-url/{tenantId}",
    "alert_test": "alerts/test",
    "onboarding_runs": "onboarding/runs",
    "onboarding_run": "onboarding/runs/{runId}",
    "onboarding_customers": "onboarding/runs/{runId}/customers",
    "onboarding_start": "onboarding/runs/{runId}/start",
    "onboarding_resume": "onboarding/runs/{runId}/resume",
    "onboarding_session": "onboarding/runs/{runId}/session",
    "onboarding_signin": "onboarding/signin",
    "onboarding_callback": "onboarding/callback",
    "inventory": "inventory",
    "exclusions": "exclusions",
    "exclusion": "exclusions/{exclusionId}",
    "warning_thresholds": "warning-thresholds/{tenantId}",
    "report": "reports/{tenantId}",
    "approvals": "approvals",
    "approval": "approvals/{tenantId}/{appId}",
    "approval_link": "approval-links",
    "tickets": "tickets",
    "ticket_test": "tickets/test",
}


def app_functions() -> tuple[Any, ...]:
    """The app's functions: `get_functions()` only once per process (a second call fails on duplicate names), so
    taken from the local host's one indexing of the app."""
    return indexed_functions()


def functions() -> dict[str, Callable[[func.HttpRequest], Any]]:
    """The app's user functions by name."""
    return {f.get_function_name(): f.get_user_function() for f in app_functions()}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str
    data: bytes = b""

    @property
    def code(self) -> str | None:
        return self.body.get("error", {}).get("code") if isinstance(self.body, dict) else None


@dataclass
class Api:
    """Calls the HTTP functions as the host would."""

    world: World
    alerter: LogAlerter

    async def call(
        self,
        function: str,
        method: str = "GET",
        route: dict[str, str] | None = None,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        caller: tuple[str, tuple[str, ...]] | None = (OPERATOR, BOTH_ROLES),
    ) -> Reply:
        """Call a function as the host would; `caller` is the signed-in (name, app roles) whose principal header
        App Service Authentication would inject (None: no principal, as without a sign-in)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent = dict(headers if headers is not None else JSON)
        if caller is not None:
            sent.update(platform_headers(caller[0], caller[1]))
        path = ROUTES[function]
        for name, value in (route or {}).items():
            path = path.replace("{" + name + "}", value)
        request = func.HttpRequest(
            method, f"http://localhost/api/{path}", headers=sent,
            params=params or {}, route_params=route or {}, body=data,
        )
        response = await functions()[function](request)
        body = response.get_body()
        answered = dict(response.headers)
        if "content-type" not in {k.lower() for k in answered}:
            answered["Content-Type"] = response.mimetype  # what the worker sends from the mimetype
        # Every answer a test gets must be one the OpenAPI document describes (status, headers, body schema).
        check_response(f"/api/{ROUTES[function]}", method, response.status_code, answered, body, route)
        text = body.decode("utf-8", "replace")  # a PDF's bytes too (kept whole in `data`)
        is_json = (response.mimetype or "").endswith("json")
        if is_json:
            # Every JSON answer, errors included, carries customer data or says something about it: never cached.
            cache = {k.lower(): v for k, v in response.headers.items()}
            assert cache.get("cache-control") == "no-store", (function, method, response.status_code)
            assert cache.get("x-content-type-options") == "nosniff", (function, method, response.status_code)
        return Reply(response.status_code, json.loads(text) if text and is_json else None, dict(response.headers), text,
                     body)

    async def put(self, customer: Customer, doc: dict[str, Any] | None = None) -> Reply:
        return await self.call("target", "PUT", ids(customer), doc if doc is not None else {"customer": customer.name})


def ids(customer: Customer) -> dict[str, str]:
    return {"tenantId": customer.tenant_id, "appId": customer.app_id}


@pytest.fixture
def api(world: World, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The environment the functions read (the sandbox's settings), and the test seam for the table prefix."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    alerter = LogAlerter()
    monkeypatch.setitem(bootstrap.DEFAULTS, "table_prefix", world.prefix)
    monkeypatch.setitem(bootstrap.DEFAULTS, "work_queue", world.queue)
    monkeypatch.setitem(bootstrap.DEFAULTS, "alerter", alerter)
    return Api(world, alerter)


@pytest.fixture
async def svc(api: Api) -> AsyncIterator[bootstrap.Services]:
    """The same services the functions build (same tables), for seeding and looking at state."""
    async with bootstrap.services() as built:
        yield built
