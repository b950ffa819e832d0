"""Who may call: the principal App Service Authentication injects, its app roles, and GET /api/me."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest

from shared.entrypoints.access import PRINCIPAL_HEADER, Caller, Role, authorize, platform_headers, principal
from shared.entrypoints.web import HttpError
from tests.api.conftest import Api

READER = ("reader@msp.example", (Role.READ.value,))
OPERATOR_ONLY = ("alice@msp.example", (Role.OPERATE.value,))
NOBODY = ("guest@msp.example", ())


def request(headers: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest("GET", "http://localhost/api/me", headers=headers, body=b"")


def encoded(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


# ----------------------------------------------------------------------------------------- parsing (plain data)


def test_a_user_principal_as_the_platform_builds_it() -> None:
    found = principal(request(platform_headers("alice@msp.example", {"Rotator.Operate"})))
    assert found == Caller("alice@msp.example", frozenset({"Rotator.Operate"}), "user")
    assert found.has(Role.OPERATE) and found.has(Role.READ)


def test_roles_under_the_principals_role_type_count_too() -> None:
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": role_typ,
           "claims": [{"typ": "preferred_username", "val": "bob@msp.example"}, {"typ": role_typ, "val": "Rotator.Read"},
                      {"typ": "groups", "val": "Rotator.Operate"}]}
    found = principal(request({PRINCIPAL_HEADER: encoded(doc)}))
    assert found is not None and found.roles == frozenset({"Rotator.Read"}) and not found.has(Role.OPERATE)


def test_an_app_only_caller_is_named_by_its_client_id() -> None:
    doc = {"auth_typ": "aad", "claims": [{"typ": "idtyp", "val": "app"}, {"typ": "name", "val": "looks-like-a-user"},
                                         {"typ": "appid", "val": "5a1d0000-0000-4000-8000-000000000009"},
                                         {"typ": "roles", "val": "Rotator.Operate"}]}
    found = principal(request({PRINCIPAL_HEADER: encoded(doc)}))
    assert found == Caller("app:5a1d0000-0000-4000-8000-000000000009", frozenset({"Rotator.Operate"}), "app")


@pytest.mark.parametrize("header", [
    "not base64!", encoded([1, 2]), encoded({"claims": "x"}), encoded({"claims": [{"typ": 1, "val": "x"}]}),
    encoded({"claims": [{"typ": "roles", "val": "Rotator.Operate"}]}),  # nobody named
    base64.b64encode(b"\xff\xfe").decode(), "A" * 20_000,
])
def test_a_principal_that_is_not_the_platforms_is_unauthenticated(header: str) -> None:
    with pytest.raises(HttpError) as caught:
        authorize(request({PRINCIPAL_HEADER: header}), Role.READ)
    assert (caught.value.status, caught.value.code) == (401, "Unauthenticated")


def test_a_missing_role_is_forbidden_and_no_principal_is_unauthenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOW_FUNCTION_KEY_CALLERS", raising=False)
    with pytest.raises(HttpError) as forbidden:
        authorize(request(platform_headers(*READER)), Role.OPERATE)
    assert (forbidden.value.status, forbidden.value.code) == (403, "Forbidden")
    with pytest.raises(HttpError) as anonymous:
        authorize(request({}), Role.READ)
    assert (anonymous.value.status, anonymous.value.code) == (401, "Unauthenticated")


def test_function_key_callers_only_when_the_setting_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_FUNCTION_KEY_CALLERS", "true")
    found = authorize(request({}), Role.OPERATE)
    assert found == Caller("function-key", frozenset({"Rotator.Read", "Rotator.Operate"}), "function-key")
    # A signed-in caller is still held to its roles.
    with pytest.raises(HttpError):
        authorize(request(platform_headers(*READER)), Role.OPERATE)


# ----------------------------------------------------------------------------------------- through the functions


async def test_me_answers_who_is_calling(api: Api) -> None:
    reply = await api.call("me", caller=OPERATOR_ONLY)
    assert reply.status == 200 and reply.body == {"name": "alice@msp.example", "kind": "user",
                                                  "roles": ["Rotator.Operate", "Rotator.Read"]}
    guest = await api.call("me", caller=NOBODY)
    assert guest.status == 200 and guest.body["roles"] == [] and guest.body["name"] == "guest@msp.example"
    anonymous = await api.call("me", caller=None)
    assert (anonymous.status, anonymous.code) == (401, "Unauthenticated")
