"""Replay the request/response examples of the Graph reference pages (shared/contracts/graph) against the sandbox.

Each page's request block is sent over HTTPS with a valid token after seeding the ids it names; the status line
and the JSON shape (keys at every level and JSON types) of the answer must match the example. Examples marked
"truncated" are minimal: the sandbox must have at least their keys. A null on either side matches any type,
because those properties are nullable in the schema and the examples fill in values a new app does not have.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import SandboxHandle
from tests.material import client_secret

CONTRACTS = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "graph"
if not CONTRACTS.is_dir():
    CONTRACTS = Path(__file__).resolve().parents[2] / "shared" / "contracts" / "graph"
PAGES = [
    "application-addpassword.md",
    "application-removepassword.md",
    "application-list.md",
    "application-get.md",
    "serviceprincipal-list.md",
]
TENANT = "c0000000-0000-4000-8000-000000000041"
ADMIN_APP = "a0000000-0000-4000-8000-000000000041"
ADMIN_SECRET = client_secret("adm")
NOBODY_APP = "a0000000-0000-4000-8000-000000000042"
NOBODY_SECRET = client_secret("nob")
# The object id that stands for "{id}" in the addPassword and removePassword examples.
PLACEHOLDER_OBJECT = "b0000000-0000-4000-8000-000000000041"

_ANNOTATION = re.compile(r"<!--\s*(\{.*?\})\s*-->", re.DOTALL)
_FENCE = re.compile(r"```[\w-]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Example:
    page: str
    name: str
    request: str
    response: str
    truncated: bool


def parse_examples(page: str) -> list[Example]:
    """Pair each request block of a page with the response block that follows it."""
    text = (CONTRACTS / page).read_text()
    blocks: list[tuple[str, dict[str, Any], str]] = []
    for match in _ANNOTATION.finditer(text):
        try:
            annotation = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        kind = annotation.get("blockType")
        if kind not in ("request", "response"):
            continue
        fence = _FENCE.search(text, match.end())
        assert fence is not None, f"{page}: no fenced block after a {kind} annotation"
        blocks.append((kind, annotation, fence.group(1)))
    examples = []
    for (kind, annotation, body), following in itertools.pairwise(blocks):
        if kind == "request" and following[0] == "response":
            examples.append(
                Example(page, annotation.get("name", page), body, following[2], bool(following[1].get("truncated")))
            )
    return examples


def split_http(block: str) -> tuple[str, dict[str, str], str]:
    """First line, headers and body of an HTTP message written in a doc block."""
    head, _, body = block.strip().partition("\n\n")
    lines = head.splitlines()
    headers: dict[str, str] = {}
    rest: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[\w-]+", name) and not rest:
            headers[name.strip()] = value.strip()
        else:
            rest.append(line)
    # Some pages put the body right under the headers, without a blank line.
    body = "\n".join(rest + ([body] if body else []))
    return lines[0].strip(), headers, body.strip()


def shape_errors(example: Any, actual: Any, where: str, at_least: bool) -> list[str]:
    """Differences in keys and JSON types between an example value and the sandbox's."""
    if example is None or actual is None:
        return []
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {type(actual).__name__}"]
        errors = [f"{where}.{key}: missing" for key in example if key not in actual]
        if not at_least:
            errors += [f"{where}.{key}: not in the example" for key in actual if key not in example]
        for key in example:
            if key in actual:
                errors += shape_errors(example[key], actual[key], f"{where}.{key}", at_least)
        return errors
    if isinstance(example, list):
        if not isinstance(actual, list):
            return [f"{where}: expected an array, got {type(actual).__name__}"]
        if example and not actual:
            return [f"{where}: expected a non-empty array"]
        return shape_errors(example[0], actual[0], f"{where}[0]", at_least) if example else []
    kinds = (bool, int, float, str)
    example_kind = next(k for k in kinds if isinstance(example, k))
    numeric = (int, float)
    if example_kind in numeric and isinstance(actual, numeric) and not isinstance(actual, bool):
        return []
    if type(actual) is not example_kind:
        return [f"{where}: expected {example_kind.__name__}, got {type(actual).__name__}"]
    return []


def seed_document() -> dict[str, Any]:
    web = "Web"
    return {
        "tenants": [
            {
                "id": TENANT,
                "name": "Contoso",
                "applications": [
                    {"appId": "631a96bc-a705-4eda-9f99-fdaf9f54f6a2", "id": "acc848e9-e8ec-4feb-a521-8d58b5482e09",
                     "displayName": "Display name", "identifierUris": ["http://contoso/"]},
                    {"appId": "46e6adf4-a9cf-4b60-9390-0ba6fb00bf6b", "displayName": f"Postman{web}",
                     "identifierUris": ["http://postman/"],
                     "requiredResourceAccess": [{"resourceAppId": "00000003-0000-0000-c000-000000000000",
                                                 "resourceAccess": [{"id": "ad902697-1014-4ef5-81ef-2b4301988e8c",
                                                                     "type": "Scope"}]}]},
                    {"appId": "a0000000-0000-4000-8000-000000000043", "id": PLACEHOLDER_OBJECT, "displayName": "a",
                     "identifierUris": ["http://a/"],
                     "passwordCredentials": [{"keyId": "f0b0b335-1d71-4883-8f98-567911bfdca6",
                                              "displayName": "Password friendly name", "endDateTime": "+30d"}]},
                    {"appId": ADMIN_APP, "displayName": "Admin", "identifierUris": ["http://admin/"],
                     "passwordCredentials": [{"secretText": ADMIN_SECRET, "endDateTime": "+30d"}]},
                    {"appId": NOBODY_APP, "displayName": "Nobody", "identifierUris": ["http://nobody/"],
                     "passwordCredentials": [{"secretText": NOBODY_SECRET, "endDateTime": "+30d"}]},
                ],
                "grants": [{"appId": ADMIN_APP, "roles": ["Application.ReadWrite.All"]}],
            }
        ]
    }


def bearer(sb: SandboxHandle, app_id: str = ADMIN_APP, secret: str = ADMIN_SECRET) -> dict[str, str]:
    response = requests.post(
        f"{sb.endpoints['entra']}/{TENANT}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
              "scope": "https://graph.microsoft.com/.default"},
        verify=sb.ca_file, timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


EXAMPLES = [example for page in PAGES for example in parse_examples(page)]


def test_every_page_has_examples() -> None:
    assert {e.page for e in EXAMPLES} == set(PAGES)
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_documented_example(sb: SandboxHandle, example: Example) -> None:
    sb.control.seed(seed_document())
    request_line, headers, body = split_http(example.request)
    method, url = request_line.split(" ", 1)
    url = url.replace("https://graph.microsoft.com/v1.0", sb.settings["GRAPH_BASE_URL"]).replace(
        "{id}", PLACEHOLDER_OBJECT
    )
    response = requests.request(
        method, url, headers={**headers, **bearer(sb)}, data=body.encode() or None, verify=sb.ca_file, timeout=10
    )
    status_line, expected_headers, expected_body = split_http(example.response)
    assert f"{response.status_code} {response.reason}" == status_line.split(" ", 1)[1], response.text
    content_type = expected_headers.get("Content-type", expected_headers.get("Content-Type", ""))
    if not expected_body:
        assert response.content == b""
    elif content_type.startswith("text/plain"):
        assert response.headers["Content-Type"].startswith("text/plain") and response.text.isdigit()
    else:
        assert response.headers["Content-Type"].startswith("application/json")
        errors = shape_errors(json.loads(expected_body), response.json(), "$", example.truncated)
        assert errors == [], "\n".join(errors)


def assert_error_format(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert isinstance(error["innerError"]["request-id"], str) and isinstance(error["innerError"]["date"], str)
    return error


def test_not_found_error_format(sb: SandboxHandle) -> None:
    sb.control.seed(seed_document())
    url = f"{sb.settings['GRAPH_BASE_URL']}/applications/00000000-0000-4000-8000-00000000beef"
    error = assert_error_format(requests.get(url, headers=bearer(sb), verify=sb.ca_file, timeout=10), 404)
    assert error["code"] == "Request_ResourceNotFound"


def test_forbidden_error_format(sb: SandboxHandle) -> None:
    sb.control.seed(seed_document())
    url = f"{sb.settings['GRAPH_BASE_URL']}/applications"
    response = requests.get(url, headers=bearer(sb, NOBODY_APP, NOBODY_SECRET), verify=sb.ca_file, timeout=10)
    assert assert_error_format(response, 403)["code"] == "Authorization_RequestDenied"


def test_unauthorized_error_format(sb: SandboxHandle) -> None:
    response = requests.get(f"{sb.settings['GRAPH_BASE_URL']}/applications", verify=sb.ca_file, timeout=10)
    assert assert_error_format(response, 401)["code"] == "InvalidAuthenticationToken"


def test_throttled_error_format(sb: SandboxHandle) -> None:
    sb.control.seed(seed_document())
    sb.control.add_fault("graph", method="POST", path="addPassword$", status=429, retry_after=2.128)
    url = f"{sb.settings['GRAPH_BASE_URL']}/applications/{PLACEHOLDER_OBJECT}/addPassword"
    response = requests.post(url, json={}, headers=bearer(sb), verify=sb.ca_file, timeout=10)
    assert assert_error_format(response, 429)["code"] == "TooManyRequests"
    assert float(response.headers["Retry-After"]) == pytest.approx(2.128)


def test_shape_comparison_catches_missing_keys_and_wrong_types() -> None:
    example = {"value": [{"id": "x", "tags": [], "n": 1}], "ok": True}
    assert shape_errors(example, {"value": [{"id": "y", "tags": [], "n": 2.5}], "ok": False}, "$", False) == []
    assert shape_errors(example, {"value": [{"id": 1, "tags": [], "n": 1}], "ok": True}, "$", True) == [
        "$.value[0].id: expected str, got int"
    ]
    assert shape_errors(example, {"value": [], "ok": True}, "$", True) == ["$.value: expected a non-empty array"]
    assert shape_errors(example, {"value": [{"id": "x", "tags": [], "n": 1}], "ok": True, "more": 1}, "$", False) == [
        "$.more: not in the example"
    ]
