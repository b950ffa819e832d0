"""The MSP portal (Vircom Portal) stand-in: any POST or PUT with the seeded Authorization value is recorded."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox.world import iso

if TYPE_CHECKING:
    from sandbox.world import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """The body an injected fault answers with: {"error": ...}."""
    default = "Too many requests." if status == 429 else "Service unavailable."
    body: dict[str, Any] = {"error": message or default}
    if code:
        body["code"] = code
    return body


class PortalState:
    """The accepted Authorization value and every request the portal received."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.authorization: str | None = None
        self.received: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.authorization = None
        self.received.clear()

    def seed(self, section: dict[str, Any]) -> None:
        if "authorization" in section:
            self.authorization = section["authorization"]

    def dump(self) -> dict[str, Any]:
        return {"authorization": self.authorization, "received": list(self.received)}

    def authorized(self, header: str | None) -> bool:
        # No seeded value means nobody may post: a misconfigured portal must not look like success.
        return bool(self.authorization and header and secrets.compare_digest(header, self.authorization))


def build_app(world: World) -> web.Application:
    """The portal's aiohttp application, recording into `world.portal`."""

    def state() -> PortalState:
        return cast(PortalState, world.portal)

    async def receive(request: web.Request) -> web.Response:
        if not state().authorized(request.headers.get("Authorization")):
            return web.json_response({"error": "Unauthorized: missing or invalid Authorization header."}, status=401)
        text = await request.text()
        body: Any
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        state().received.append(
            {"method": request.method, "path": request.path, "body": body, "at": iso(world.now())}
        )
        return web.json_response({"status": "ok", "received": True})

    async def not_allowed(request: web.Request) -> web.Response:
        return web.json_response({"error": f"Method {request.method} not allowed."}, status=405)

    app = web.Application()
    app.router.add_route("POST", "/{path:.*}", receive)
    app.router.add_route("PUT", "/{path:.*}", receive)
    app.router.add_route("*", "/{path:.*}", not_allowed)
    return app
