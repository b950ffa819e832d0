"""The dashboard's page and assets as the function serves them: content types, cache headers, the CSP, and no
inline or third-party code (no browser here: tests/dashboard/test_browser.py drives one)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import azure.functions as func
import pytest

from shared.entrypoints import dashboard
from shared.entrypoints.access import platform_headers
from tests.api.conftest import functions


async def get(route: str, asset: str | None = None, *, method: str = "GET", headers: dict[str, str] | None = None,
              params: dict[str, str] | None = None) -> func.HttpResponse:
    name = "dashboard" if asset is None else "dashboard_asset"
    url = "http://localhost/api/dashboard" + (f"/{asset}" if asset else "")
    signed_in = {**platform_headers("reader@msp.example", {"Rotator.Read"}), **(headers or {})}
    request = func.HttpRequest(method, url, headers=signed_in, params=params or {},
                               route_params={"asset": asset} if asset else {}, body=b"")
    response: func.HttpResponse = await functions()[name](request)
    return response


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.script_text: list[str] = []
        self._in: str = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in in ("script", "style") and data.strip():
            self.script_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = ""


async def test_the_page_is_html_under_a_strict_content_security_policy() -> None:
    response = await get("dashboard")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == ["'self'"], directive
    assert csp["base-uri"] == ["'none'"] and csp["form-action"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["require-trusted-types-for"] == ["'script'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_browser_without_a_session_is_sent_to_sign_in_and_back(method: str) -> None:
    """No principal: App Service Authentication's login endpoint, returning to the page; no page, never cached."""
    request = func.HttpRequest(method, "http://localhost/api/dashboard", headers={}, params={}, route_params={},
                               body=b"")
    response: func.HttpResponse = await functions()["dashboard"](request)
    assert response.status_code == 302
    assert response.headers["Location"] == "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fdashboard"
    assert response.headers["Cache-Control"] == "no-store" and response.get_body() == b""


async def test_the_page_has_no_inline_script_or_style_and_references_hashed_assets() -> None:
    html = (await get("dashboard")).get_body().decode()
    parser = Tags()
    parser.feed(html)
    assert parser.script_text == []
    assert not any(tag == "style" for tag, _ in parser.tags)
    assert not any("style" in attrs or any(a.startswith("on") for a in attrs) for _, attrs in parser.tags)
    versions = {name: asset.version for name, asset in dashboard.assets().items()}
    referenced = dict(re.findall(r'/api/dashboard/([a-z.]+)\?v=([0-9a-f]+)"', html))
    assert referenced == versions


@pytest.mark.parametrize("name, content_type", [
    ("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"), ("icon.svg", "image/svg+xml"),
])
async def test_assets_have_their_content_type_and_are_cached_only_by_content_hash(name: str, content_type: str) -> None:
    version = dashboard.assets()[name].version
    current = await get("dashboard", name, params={"v": version})
    assert current.status_code == 200
    assert current.headers["Content-Type"] == content_type
    assert current.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert "Content-Security-Policy" in current.headers
    stale = await get("dashboard", name, params={"v": "0123"})
    assert stale.headers["Cache-Control"] == "no-cache"
    again = await get("dashboard", name, headers={"If-None-Match": current.headers["ETag"]})
    assert again.status_code == 304 and again.get_body() == b""


async def test_nothing_is_loaded_from_another_origin() -> None:
    bodies = [(await get("dashboard")).get_body().decode()]
    bodies += [(await get("dashboard", name)).get_body().decode() for name in dashboard.CONTENT_TYPES]
    for body in bodies:
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", body, re.IGNORECASE))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls
        assert "@import" not in body and "@font-face" not in body


async def test_an_unknown_asset_is_404_and_a_wrong_method_405() -> None:
    missing = await get("dashboard", "secrets.json")
    assert missing.status_code == 404
    assert b'"code": "NotFound"' in missing.get_body()
    for route, asset in (("dashboard", None), ("dashboard", "app.js")):
        refused = await get(route, asset, method="POST")
        assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
