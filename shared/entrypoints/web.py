"""HTTP plumbing shared by the HTTP-triggered functions: JSON in, JSON out, errors as {"error": {code, message}}."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.domain import GUID
from shared.errors import Conflict, NotFound, PartnerRefused, RotationError
from shared.registry import InvalidTarget
from shared.settings import SettingsError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
# Routes are registered for every method (None: the host passes any method, TRACE and CONNECT included, which the
# library's method enum cannot name), so that a wrong method gets our 405 with `Allow`, never the host's bare 404.
ALL_METHODS = None

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


class HttpError(Exception):
    """A client mistake, answered with its status and a JSON error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# On every JSON answer, errors included: they carry customer data (tenants, apps, expiries, who rotated what), which
# no browser, proxy or CDN may keep (RFC 9111 section 5.2.2.5), and they are never to be read as another media type.
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json",
        headers={**(headers or {}), **JSON_HEADERS},  # last: no route can make an answer cacheable
    )


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def read_json(req: func.HttpRequest) -> Any:
    """The request's JSON body, or an HttpError saying what is wrong with it."""
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HttpError(415, "UnsupportedMediaType", "send the body as application/json")
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, "PayloadTooLarge", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except DuplicateKey:
        raise HttpError(400, "MalformedJson", "the body names one key twice in an object") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError also covers integers past Python's digit limit and NaN/Infinity (not JSON: RFC 8259 section 6);
        # RecursionError, absurdly deep nesting.
        raise HttpError(400, "MalformedJson", f"the body is not valid JSON: {error.__class__.__name__}") from None


class DuplicateKey(ValueError):
    """A JSON object names one key twice (RFC 8259 says names SHOULD be unique; which one wins is undefined)."""

    def __init__(self) -> None:
        super().__init__("duplicate key")  # never the key itself: it may be anything the caller sent


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise DuplicateKey
        doc[key] = value
    return doc


def path_guid(req: func.HttpRequest, name: str) -> str:
    """A GUID route parameter, lower-cased; 400 InvalidPath otherwise."""
    value = (req.route_params or {}).get(name)
    if not isinstance(value, str) or not GUID.fullmatch(value):
        raise HttpError(400, "InvalidPath", f"{name} in the path must be a GUID like {ZERO_GUID}")
    return value.lower()


def allow(req: func.HttpRequest, *methods: str) -> None:
    if req.method.upper() not in methods:
        raise HttpError(405, "MethodNotAllowed", f"use {', '.join(methods)}", {"Allow": ", ".join(methods)})


def handled(handler: Handler) -> Handler:
    """Maps every error to a JSON answer: client mistakes to 4xx, upstream failures to 502, never a stack trace."""

    @functools.wraps(handler)
    async def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return await handler(req)
        except HttpError as error:
            return error_response(error.status, error.code, error.message, error.headers)
        except InvalidTarget as error:
            return error_response(422, "InvalidTarget", error.message)
        except NotFound as error:
            return error_response(404, error.code, error.message)
        except Conflict as error:
            return error_response(409, error.code, error.message)
        except PartnerRefused as error:
            # The refusal's fix is what the admin acts on (the GDAP role to add, the consent to grant): in the answer.
            text = f"{error.message.rstrip('. ')}. Fix: {error.fix}" if error.fix else error.message
            return error_response(502, error.code, text)
        except RotationError as error:
            return error_response(502, error.code, error.message)
        except SettingsError as error:
            log.error("configuration error: %s", error)
            return error_response(500, "ConfigurationError", str(error))
        except Exception:
            log.exception("unexpected error in %s", handler.__name__)
            return error_response(500, "InternalError", "an unexpected error occurred; see the function's logs")

    return wrapper
