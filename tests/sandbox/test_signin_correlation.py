"""The sandbox's Entra keeps a token request's `client-request-id` as the sign-in's correlationId (signin.md: "The
identifier the client sends when sign-in is initiated"), a fresh server-made GUID without it, success and failure
alike; Graph's `correlationId eq` filter finds it (the rotator's reader sets its own probes aside by it)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.conftest import SandboxHandle
from tests.sandbox.test_signins import PPE_APP, TENANT, Keys, of_app, rows, seed, token

pytestmark = pytest.mark.sandbox


def sign_in(sb: SandboxHandle, secret: str, headers: dict[str, str] | None = None) -> int:
    return requests.post(f"{sb.endpoints['entra']}/{TENANT}/oauth2/v2.0/token",
                         data={"grant_type": "client_credentials", "client_id": PPE_APP, "client_secret": secret,
                               "scope": "https://graph.microsoft.com/.default"},
                         headers=headers or {}, verify=sb.ca_file, timeout=10).status_code


def ids(found: list[dict[str, Any]]) -> list[str]:
    return [r["correlationId"] for r in found]


def test_the_client_request_id_is_the_correlation_id_and_without_it_a_fresh_guid(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    bearer = token(sb)
    mine = str(uuid.uuid4())
    assert sign_in(sb, Keys.new, {"client-request-id": mine}) == 200
    assert sign_in(sb, Keys.new, {"Client-Request-Id": mine.upper()}) == 200  # a header name in any case; a GUID
    assert sign_in(sb, Keys.new) == 200
    assert sign_in(sb, Keys.new) == 200
    assert sign_in(sb, Keys.new, {"x-ms-client-request-id": mine}) == 200  # not Entra's header: not kept
    assert sign_in(sb, Keys.new, {"client-request-id": "not-a-guid"}) == 200
    assert sign_in(sb, "a-wrong-secret", {"client-request-id": mine}) == 401  # a refused sign-in keeps it too
    newest_first = ids(of_app(rows(sb, bearer)))
    assert newest_first[-2:] == [mine, mine] and newest_first[0] == mine
    made_up = newest_first[1:5]
    assert mine not in made_up and len(set(made_up)) == 4 and all(str(uuid.UUID(i)) == i for i in made_up)
    found = rows(sb, bearer, {"$filter": f"signInEventTypes/any(t: t eq 'servicePrincipal') and correlationId eq "
                                         f"'{mine}'"})
    assert len(of_app(found)) == 3
    assert [r["correlationId"] for r in sb.control.sign_ins(TENANT) if r["appId"] == PPE_APP].count(mine) == 3
