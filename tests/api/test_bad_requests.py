"""Client mistakes: each gets its 4xx and {"error": {"code", "message"}}, and changes nothing anywhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.destinations.options import looks_like_secret
from tests.api.conftest import Api, ids
from tests.rotation.conftest import ACCOUNT_SECRET, World, random_secret

T, A = "{T}", "{A}"  # replaced by the registered target's ids
OTHER = "11111111-2222-4333-8444-555555555555"
PP = {"name": "pp", "kind": "proofpoint", "options": {"stack": "us1", "domain": "bad.example",
                                                      "account_secret": ACCOUNT_SECRET}}
HTTP = {"name": "portal", "kind": "http", "options": {"url": "https://portal.example/api/o365",
                                                      "auth_secret": "vircom-portal-auth"}}


def pp(**options: str) -> dict[str, Any]:
    return {**PP, "options": {**PP["options"], **options}}


def http(**options: str) -> dict[str, Any]:
    return {**HTTP, "options": {**HTTP["options"], **options}}


@dataclass
class Case:
    id: str
    function: str
    method: str
    status: int
    code: str
    body: Any = None
    raw: bytes | None = None
    route: dict[str, str] = field(default_factory=lambda: {"tenantId": T, "appId": A})
    headers: dict[str, str] | None = None
    params: dict[str, str] | None = None


TEXT = {"Content-Type": "text/plain"}
CASES = [
    # Malformed or unacceptable bodies
    Case("put-malformed-json", "target", "PUT", 400, "MalformedJson", raw=b'{"customer": '),
    Case("put-trailing-garbage", "target", "PUT", 400, "MalformedJson", raw=b'{"customer": "x"} x'),
    Case("put-not-utf8", "target", "PUT", 400, "MalformedJson", raw=b'{"customer": "\xff\xfe"}'),
    Case("put-lone-surrogate", "target", "PUT", 400, "MalformedJson", raw=b'{"customer": "\\ud800"}'),
    Case("put-text-plain", "target", "PUT", 415, "UnsupportedMediaType", body={"customer": "x"}, headers=TEXT),
    Case("put-no-content-type", "target", "PUT", 415, "UnsupportedMediaType", body={"customer": "x"}, headers={}),
    Case("put-oversized", "target", "PUT", 413, "PayloadTooLarge", body={"customer": "x" * 70_000}),
    Case("rotate-deeply-nested", "rotations", "POST", 400, "MalformedJson", raw=b"[" * 20_000 + b"]" * 20_000),
    Case("rotate-huge-number", "rotations", "POST", 400, "MalformedJson", raw=b'{"force": ' + b"9" * 5000 + b"}"),
    Case("rotate-xml", "rotations", "POST", 415, "UnsupportedMediaType", raw=b"<rotate/>",
         headers={"Content-Type": "application/xml"}),
    # Wrong shapes and types in the registry
    Case("put-list-body", "target", "PUT", 422, "InvalidTarget", body=[{"customer": "x"}]),
    Case("put-string-body", "target", "PUT", 422, "InvalidTarget", body="customer"),
    Case("put-unknown-field", "target", "PUT", 422, "InvalidTarget", body={"customer": "x", "clientSecret": "s"}),
    Case("put-customer-number", "target", "PUT", 422, "InvalidTarget", body={"customer": 42}),
    Case("put-customer-too-long", "target", "PUT", 422, "InvalidTarget", body={"customer": "x" * 201}),
    Case("put-enabled-string", "target", "PUT", 422, "InvalidTarget", body={"enabled": "yes"}),
    Case("put-tenant-mismatch", "target", "PUT", 422, "InvalidTarget", body={"tenantId": OTHER}),
    Case("put-policy-zero", "target", "PUT", 422, "InvalidTarget", body={"policy": {"renewBeforeDays": 0}}),
    Case("put-policy-too-long", "target", "PUT", 422, "InvalidTarget", body={"policy": {"lifetimeDays": 731}}),
    Case("put-policy-string", "target", "PUT", 422, "InvalidTarget", body={"policy": {"renewBeforeDays": "30"}}),
    Case("put-policy-bool", "target", "PUT", 422, "InvalidTarget", body={"policy": {"lifetimeDays": True}}),
    Case("put-policy-unknown", "target", "PUT", 422, "InvalidTarget", body={"policy": {"graceHours": 3}}),
    Case("put-destinations-object", "target", "PUT", 422, "InvalidTarget", body={"destinations": PP}),
    Case("put-eleven-destinations", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [{**PP, "name": f"pp{i}"} for i in range(11)]}),
    Case("put-duplicate-names", "target", "PUT", 422, "InvalidTarget", body={"destinations": [PP, PP]}),
    Case("put-unknown-kind", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [{"name": "x", "kind": "ftp", "options": {}}]}),
    Case("put-bad-stack", "target", "PUT", 422, "InvalidTarget", body={"destinations": [pp(stack="us9")]}),
    Case("put-bad-domain", "target", "PUT", 422, "InvalidTarget", body={"destinations": [pp(domain="not a domain")]}),
    Case("put-option-number", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [{**PP, "options": {**PP["options"], "stack": 1}}]}),
    Case("put-secret-as-account-name", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [pp(account_secret=random_secret())]}),
    Case("put-password-option", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [pp(password=random_secret())]}),
    Case("put-bearer-as-auth-name", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [http(auth_secret="Bearer abcdef0123456789")]}),
    Case("put-credentials-in-url", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [http(url="https://user:pa55word@portal.example/api")]}),
    Case("put-key-in-url-query", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [http(url="https://portal.example/api?api_key=abc")]}),
    Case("put-plain-http-url", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [http(url="http://portal.example/api")]}),
    Case("put-secret-in-instructions", "target", "PUT", 422, "InvalidTarget",
         body={"destinations": [{"name": "h", "kind": "notify-only",
                                 "options": {"instructions": "paste " + random_secret()}}]}),
    # Paths
    Case("put-tenant-not-guid", "target", "PUT", 400, "InvalidPath", body={}, route={"tenantId": "contoso",
                                                                                    "appId": A}),
    Case("get-app-braced-guid", "target", "GET", 400, "InvalidPath", route={"tenantId": T, "appId": "{" + OTHER + "}"}),
    Case("delete-app-short-guid", "target", "DELETE", 400, "InvalidPath", route={"tenantId": T, "appId": OTHER[:-1]}),
    Case("discover-not-guid", "discover", "GET", 400, "InvalidPath", route={"tenantId": "../targets"}),
    Case("get-unregistered", "target", "GET", 404, "TargetNotFound", route={"tenantId": T, "appId": OTHER}),
    Case("delete-unregistered", "target", "DELETE", 404, "TargetNotFound", route={"tenantId": OTHER, "appId": A}),
    # Methods
    Case("patch-target", "target", "PATCH", 405, "MethodNotAllowed", body={"customer": "x"}),
    Case("post-target", "target", "POST", 405, "MethodNotAllowed", body={"customer": "x"}),
    Case("post-targets", "targets", "POST", 405, "MethodNotAllowed", body={"customer": "x"}, route={}),
    Case("delete-status", "status", "DELETE", 405, "MethodNotAllowed", route={}),
    Case("get-rotations", "rotations", "GET", 405, "MethodNotAllowed", route={}),
    Case("put-acknowledgements", "acknowledgements", "PUT", 405, "MethodNotAllowed", route={}),
    Case("post-discover", "discover", "POST", 405, "MethodNotAllowed", route={"tenantId": T}),
    Case("delete-openapi", "openapi", "DELETE", 405, "MethodNotAllowed", route={}),
    # Query
    Case("status-unknown-filter", "status", "GET", 400, "InvalidQuery", route={}, params={"status": "due,late"}),
    Case("status-empty-filter", "status", "GET", 400, "InvalidQuery", route={}, params={"status": ""}),
    # Rotations and acknowledgements
    Case("rotate-null", "rotations", "POST", 422, "InvalidRequest", body=None, raw=b"null", route={}),
    Case("rotate-missing-app", "rotations", "POST", 422, "InvalidRequest", body={"tenantId": T}, route={}),
    Case("rotate-force-string", "rotations", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "force": "true"}, route={}),
    Case("rotate-dryrun-number", "rotations", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "dryRun": 1}, route={}),
    Case("rotate-unknown-field", "rotations", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "secret": random_secret()}, route={}),
    # Routes whose ids (32 hex digits) the body's secret check would take for secrets check field by field: a
    # secret put where a field's name goes is refused without being echoed (offboarding's partnerRun, approvals)
    Case("offboard-secret-as-name", "offboard_target", "POST", 422, "InvalidRequest",
         body={"removeApp": True, random_secret(): True}),
    Case("approval-secret-as-name", "approval", "POST", 422, "InvalidRequest",
         body={"requestId": "0" * 32, "action": "approve", random_secret(): "x"}),
    Case("rotate-bad-guid", "rotations", "POST", 422, "InvalidRequest", body={"tenantId": "x", "appId": A}, route={}),
    Case("rotate-guid-number", "rotations", "POST", 422, "InvalidRequest", body={"tenantId": 7, "appId": A}, route={}),
    Case("rotate-unregistered", "rotations", "POST", 404, "TargetNotFound", body={"tenantId": OTHER, "appId": A},
         route={}),
    Case("ack-missing-key", "acknowledgements", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "destination": "pp"}, route={}),
    Case("ack-destination-number", "acknowledgements", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "destination": 3, "keyId": OTHER}, route={}),
    Case("ack-unknown-destination", "acknowledgements", "POST", 404, "DestinationNotFound",
         body={"tenantId": T, "appId": A, "destination": "nope", "keyId": OTHER}, route={}),
    Case("ack-not-notify-only", "acknowledgements", "POST", 409, "NotNotifyOnly",
         body={"tenantId": T, "appId": A, "destination": "pp", "keyId": OTHER}, route={}),
    Case("ack-unregistered", "acknowledgements", "POST", 404, "TargetNotFound",
         body={"tenantId": OTHER, "appId": A, "destination": "pp", "keyId": OTHER}, route={}),
]


def fill(value: Any, tenant: str, app: str) -> Any:
    """The case's body or route with the registered target's ids in place of the placeholders."""
    return json.loads(json.dumps(value).replace(T, tenant).replace(A, app))


async def snapshot(api: Api, svc) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in await svc.state.all_rows())
    world = api.world.sb.control.state()
    return rows, world["tenants"], world["keyvault"], world.get("proofpoint"), world.get("portal")


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_request(case: Case, api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Registered", 10)
    registered = await api.put(c, {"customer": "Registered", "destinations": [PP]})
    assert registered.status == 201
    before = await snapshot(api, svc)

    raw = case.raw
    if raw is None and case.body is not None:
        raw = json.dumps(fill(case.body, c.tenant_id, c.app_id)).encode()
    reply = await api.call(case.function, case.method, fill(case.route, c.tenant_id, c.app_id), raw=raw or b"",
                           headers=case.headers, params=case.params)

    assert (reply.status, reply.code) == (case.status, case.code), reply.text
    assert set(reply.body) == {"error"} and set(reply.body["error"]) == {"code", "message"}
    assert reply.body["error"]["message"]
    if case.status == 405:
        assert reply.headers.get("Allow")
    assert await snapshot(api, svc) == before, "a refused request must change nothing"
    for value in (c.secret, *[v for v in _strings(case.body) if looks_like_secret(v)]):
        assert value not in reply.text, "an error must not echo a (possible) secret"
    assert (await api.call("target", "GET", ids(c))).body == registered.body


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *[s for v in value.values() for s in _strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
