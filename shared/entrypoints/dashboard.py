"""The dashboard: GET /api/dashboard (the page) and /api/dashboard/{asset} (its one script, stylesheet and icon).

The page is a shell with no data: it reads the same HTTP API as every other client, which enforces the roles.
Everything is served from the package (no CDN, no font, no inline script or style) under a Content-Security-Policy
that allows this origin only, and Trusted Types so that no string can become markup. Assets are referenced with a
content hash (`?v=`), so a matching request may be cached for a year and a new deployment is fetched at once.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlencode

import azure.functions as func

from shared.entrypoints.access import principal
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled

bp = func.Blueprint()  # type: ignore[no-untyped-call]
# Anonymous at the Functions host: a browser cannot send a function key. App Service Authentication lets
# unauthenticated requests through (infra/app/easy-auth.json), so the page itself sends a browser without a session
# to the platform's sign-in, which brings it back here; the data comes from the API routes, which check the roles.
AUTH = func.AuthLevel.ANONYMOUS
# App Service Authentication's login endpoint for Entra ID and its return parameter
# (learn.microsoft.com/azure/app-service/configure-authentication-customize-sign-in-out).
LOGIN_PATH = "/.auth/login/aad"
PAGE_PATH = "/api/dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
CONTENT_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
IMMUTABLE = "private, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """One file of the page with its content type and content hash."""

    body: bytes
    content_type: str
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _read(name: str) -> bytes:
    return resources.files("shared").joinpath("dashboard", name).read_bytes()


@functools.cache
def assets() -> dict[str, Asset]:
    """The page's assets, read from the package once per worker (not at import)."""
    found: dict[str, Asset] = {}
    for name, content_type in CONTENT_TYPES.items():
        body = _read(name)
        found[name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:20])
    return found


@functools.cache
def page() -> Asset:
    """index.html with each asset's reference carrying its content hash."""
    html = _read("index.html").decode("utf-8")
    for name, asset in assets().items():
        html = html.replace("{{" + name + "}}", asset.version)
    body = html.encode("utf-8")
    return Asset(body, "text/html; charset=utf-8", hashlib.sha256(body).hexdigest()[:20])


def _response(req: func.HttpRequest, asset: Asset, cache_control: str) -> func.HttpResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in [t.strip() for t in (req.headers.get("if-none-match") or "").split(",")]:
        return func.HttpResponse(status_code=304, headers=headers)
    body = b"" if req.method.upper() == "HEAD" else asset.body
    return func.HttpResponse(body, status_code=200, headers={**headers, "Content-Type": asset.content_type})


@bp.route(route="dashboard", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/dashboard: the page an MSP engineer keeps open; a browser without a session goes to sign in first."""
    allow(req, "GET", "HEAD")
    if principal(req) is None:
        return func.HttpResponse(status_code=302, headers={
            **SECURITY_HEADERS, "Cache-Control": "no-store",
            "Location": f"{LOGIN_PATH}?{urlencode({'post_login_redirect_uri': PAGE_PATH})}",
        })
    return _response(req, page(), "no-cache")


@bp.route(route="dashboard/{asset}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def dashboard_asset(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/dashboard/{app.js,app.css,icon.svg}: the page's script, stylesheet and icon."""
    allow(req, "GET", "HEAD")
    name = (req.route_params or {}).get("asset", "")
    asset = assets().get(name)
    if asset is None:
        raise HttpError(404, "NotFound", f"no dashboard asset {name!r}; there are {', '.join(sorted(CONTENT_TYPES))}")
    versioned = req.params.get("v") == asset.version
    return _response(req, asset, IMMUTABLE if versioned else "no-cache")
