"""The Microsoft Graph stand-in: applications, their password credentials, service principals."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from sandbox.world import World


def error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Graph's error format (contracts/graph/errors.md)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id or str(uuid.uuid4()),
                "client-request-id": request_id or str(uuid.uuid4()),
            },
        }
    }


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """An injected fault in Graph's format; 429 as in contracts/graph/throttling.md."""
    if status == 429:
        return error_body(code or "TooManyRequests", message or "Please retry again later.")
    return error_body(code or "generalException", message or "Injected fault.")


def build_app(world: World) -> web.Application:
    return web.Application()
