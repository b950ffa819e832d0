"""Hostile requests, table-driven: each is refused with a clean 4xx and {"error": {code, message}}, changes nothing
(Tables rows and the sandbox's state compared before and after) and echoes no secret. Run with
DESTINATION_ALLOWED_HOSTS unset, as in Azure: the sandbox's loopback address is as refused as any other."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.entrypoints.access import PRINCIPAL_HEADER
from tests.api.conftest import JSON, Api, ids
from tests.api.test_bad_requests import PP, fill, http, snapshot
from tests.material import client_secret
from tests.rotation.conftest import World

T, A = "{T}", "{A}"
READER = ("reader@msp.example", ("Rotator.Read",))
SECRET = client_secret("Hst")  # an Entra-shaped client secret
HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
ZW = "\u200b"
FULLWIDTH_LOCALHOST = "".join(chr(ord(c) + 0xFEE0) for c in "localhost")


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
    caller: tuple[str, tuple[str, ...]] | str | None = "operator"
    secrets: tuple[str, ...] = ()  # values that must not appear in the answer


def put(case_id: str, body: Any, code: str = "InvalidTarget", status: int = 422, **kw: Any) -> Case:
    return Case(case_id, "target", "PUT", status, code, body=body, **kw)


def dest_url(case_id: str, url: str) -> Case:
    return put(f"ssrf-{case_id}", {"destinations": [http(url=url)]})


def notify(text: str) -> dict[str, Any]:
    return {"name": "helpdesk", "kind": "notify-only", "options": {"instructions": text}}


ROUTE_FUNCTIONS = {
    "targets": {}, "target": {"tenantId": T, "appId": A}, "status": {}, "rotations": {}, "acknowledgements": {},
    "discover": {"tenantId": T}, "push": {}, "openapi": {}, "me": {},
}
VALIDATION = {"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
              "eventTime": "2026-11-27T10:00:00Z", "dataVersion": "1", "metadataVersion": "1", "topic": "t"}
KV_EVENT = {**VALIDATION, "eventType": "Microsoft.KeyVault.SecretNewVersionCreated"}

CASES: list[Case] = [
    # -- Event Grid bodies sent to the push route (were 500): not events any more, refused as requests
    Case("push-validation-data-string", "push", "POST", 422, "InvalidRequest", body=[{**VALIDATION, "data": "x"}],
         route={}),
    Case("push-validation-data-array", "push", "POST", 422, "InvalidRequest", body=[{**VALIDATION, "data": [1]}],
         route={}),
    Case("push-kv-data-string", "push", "POST", 422, "InvalidRequest", body=[{**KV_EVENT, "data": "ppsync-x"}],
         route={}),
    Case("push-event-object", "push", "POST", 422, "InvalidRequest", body={**KV_EVENT, "data": None}, route={}),
    Case("push-extra-field", "push", "POST", 422, "InvalidRequest", body={"tenantId": T, "appId": A, "x": 1},
         route={}),
    Case("push-guid-newline", "push", "POST", 422, "InvalidTarget", body={"tenantId": T + "\n", "appId": A},
         route={}),
    Case("push-nan", "push", "POST", 400, "MalformedJson", raw=b'{"tenantId": NaN, "appId": 1}', route={}),
    # -- Trailing newlines and other not-quite GUIDs (were 502 from Tables)
    Case("path-tenant-newline", "target", "PUT", 400, "InvalidPath", body={}, route={"tenantId": T + "\n",
                                                                                    "appId": A}),
    Case("path-app-newline", "target", "GET", 400, "InvalidPath", route={"tenantId": T, "appId": A + "\n"}),
    Case("path-app-percent-0a", "target", "GET", 400, "InvalidPath", route={"tenantId": T, "appId": A + "%0A"}),
    Case("path-app-crlf", "target", "DELETE", 400, "InvalidPath", route={"tenantId": T, "appId": A + "\r\n"}),
    Case("path-tenant-leading-space", "target", "GET", 400, "InvalidPath", route={"tenantId": " " + T, "appId": A}),
    Case("path-fullwidth-guid", "target", "GET", 400, "InvalidPath",
         route={"tenantId": T, "appId": "1111111\uff11-2222-4333-8444-555555555555"}),
    Case("path-discover-newline", "discover", "GET", 400, "InvalidPath", route={"tenantId": T + "\n"}),
    Case("path-nul", "target", "GET", 400, "InvalidPath", route={"tenantId": T + "\x00", "appId": A}),
    Case("rotate-guid-newline", "rotations", "POST", 422, "InvalidRequest", body={"tenantId": T + "\n", "appId": A},
         route={}),
    Case("ack-key-newline", "acknowledgements", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "destination": "pp", "keyId": A + "\n"}, route={}),
    Case("ack-destination-newline", "acknowledgements", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "destination": "pp\n", "keyId": A}, route={}),
    put("body-tenant-newline", {"tenantId": T + "\n"}),
    put("dest-name-newline", {"destinations": [{**PP, "name": "pp\n"}]}),
    put("dest-name-trailing-space", {"destinations": [{**PP, "name": "pp "}]}),
    put("dest-name-zero-width", {"destinations": [{**PP, "name": "p" + ZW + "p"}]}),
    put("auth-header-newline", {"destinations": [http(auth_header="X-Api-Key\n")]}),
    put("auth-header-crlf-injection", {"destinations": [http(auth_header="X-A\r\nX-Injected: 1")]}),
    put("auth-secret-newline", {"destinations": [http(auth_secret="vircom-portal-auth\n")]}),
    put("pp-account-secret-newline", {"destinations": [{**PP, "options": {**PP["options"],
                                                                          "account_secret": "pp-account\n"}}]}),
    put("pp-domain-newline", {"destinations": [{**PP, "options": {**PP["options"], "domain": "contoso.com\n"}}]}),
    put("pp-domain-space", {"destinations": [{**PP, "options": {**PP["options"], "domain": " contoso.com"}}]}),
    put("url-crlf", {"destinations": [http(url="https://portal.example/api\r\nX-Injected: 1")]}),
    put("url-newline-end", {"destinations": [http(url="https://portal.example/api\n")]}),
    put("url-tab", {"destinations": [http(url="https://portal.ex\tample/api")]}),
    put("url-backslash", {"destinations": [http(url="https://portal.example\\@127.0.0.1/api")]}),
    put("url-at-sign", {"destinations": [http(url="https://portal.example@127.0.0.1/api")]}),
    put("customer-newline", {"customer": "Contoso\nAdmin"}),
    put("customer-bidi", {"customer": "Contoso\u202eevil"}),
    put("field-rename-newline", {"destinations": [http(field_clientSecret="secret\n")]}),
    # -- Sizes (were 502): under the 64 KiB body limit, over Tables' 64 KiB (UTF-16) property limit
    put("destinations-over-table-limit", {"destinations": [
        {**notify("é" * 1000), "name": f"h{i}"} for i in range(10)]}),
    put("destinations-ascii-over-table-limit", {"destinations": [
        {"name": f"p{i}", "kind": "http", "options": {
            **http()["options"], "url": "https://portal.example/" + "a" * 2000, "success_field": "s" * 2000,
            "success_value": "v" * 2000}}
        for i in range(10)]}),
    # -- SSRF at registration (DESTINATION_ALLOWED_HOSTS unset)
    dest_url("metadata-ip", "https://169.254.169.254/metadata/identity/oauth2/token"),
    dest_url("localhost", "https://localhost:8443/internal/admin"),
    dest_url("localhost-upper-dot", "https://LOCALHOST./internal/admin"),
    dest_url("localhost-sub", "https://api.localhost/x"),
    dest_url("loopback", "https://127.0.0.1/x"),
    dest_url("loopback-other", "https://127.8.9.10/x"),
    dest_url("ipv6-loopback", "https://[::1]/x"),
    dest_url("ipv6-mapped-loopback", "https://[::ffff:127.0.0.1]/x"),
    dest_url("ipv6-mapped-private", "https://[::ffff:10.0.0.4]/x"),
    dest_url("ipv6-unique-local", "https://[fd00::1]/x"),
    dest_url("ipv6-link-local", "https://[fe80::1]/x"),
    dest_url("nat64-private", "https://[64:ff9b::a00:4]/x"),
    dest_url("private-10", "https://10.0.0.4/x"),
    dest_url("private-172", "https://172.16.5.4/x"),
    dest_url("private-192", "https://192.168.1.1/x"),
    dest_url("cgnat", "https://100.64.0.1/x"),
    dest_url("unspecified", "https://0.0.0.0/x"),
    dest_url("multicast", "https://224.0.0.1/x"),
    dest_url("decimal", "https://2130706433/x"),
    dest_url("hex", "https://0x7f000001/x"),
    dest_url("octal", "https://0177.0.0.1/x"),
    dest_url("short", "https://127.1/x"),
    dest_url("gcp-metadata", "https://metadata.google.internal/computeMetadata/v1/"),
    dest_url("internal-suffix", "https://vault.corp.internal/x"),
    dest_url("mdns", "https://printer.local/x"),
    dest_url("single-label", "https://intranet/x"),
    dest_url("fullwidth-localhost", "https://" + FULLWIDTH_LOCALHOST + "/x"),
    dest_url("azure-wireserver", "https://168.63.129.16/x"),
    # -- Secret values anywhere in the body (names, customer, options), also disguised
    put("secret-bearer-in-instructions", {"destinations": [notify("send with Authorization: Bearer eyJ0eXAiOiJKV1Qi")]},
        secrets=("eyJ0eXAiOiJKV1Qi",)),
    put("secret-bearer-plain", {"destinations": [notify("Bearer abcdef0123456789xyz")]}),
    put("secret-account-key", {"destinations": [notify(
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=" + "Zm9vYmFy" * 8 + "==")]}, secrets=("Zm9vYmFy",)),
    put("secret-shared-access-key", {"destinations": [notify("Endpoint=sb://x/;SharedAccessKeyName=a;"
                                                             "SharedAccessKey=abc123def")]}),
    put("secret-zero-width-split", {"destinations": [notify("paste " + SECRET[:10] + ZW + SECRET[10:])]},
        secrets=(SECRET[:10],)),
    put("secret-percent-encoded", {"destinations": [notify("paste " + urllib.parse.quote(SECRET, safe=""))]},
        secrets=(SECRET[:10],)),
    put("secret-double-percent", {"destinations": [notify(urllib.parse.quote(urllib.parse.quote(SECRET, safe=""),
                                                                              safe=""))]}),
    put("secret-hex-token", {"destinations": [notify("key " + HEX)]}, secrets=(HEX,)),
    put("secret-hex-32", {"customer": HEX[:32]}, secrets=(HEX[:32],)),
    put("secret-user-pwd-json", {"destinations": [notify('{"user": "admin", "pwd": "hunter2"}')]},
        secrets=("hunter2",)),
    put("secret-query-passwd", {"destinations": [http(url="https://portal.example/api?passwd=hunter2")]},
        secrets=("hunter2",)),
    put("secret-query-auth", {"destinations": [http(url="https://portal.example/api?auth=hunter2")]}),
    put("secret-query-sig", {"destinations": [http(url="https://portal.example/api?sv=1&sig=abc%2Bdef")]}),
    put("secret-fragment-token", {"destinations": [http(url="https://portal.example/api#access_token=hunter2")]},
        secrets=("hunter2",)),
    put("secret-functions-code", {"destinations": [http(url="https://portal.example/api?code=abc")]}),
    put("secret-entra-in-customer", {"customer": "Contoso " + SECRET}, secrets=(SECRET,)),
    put("secret-entra-as-name", {"destinations": [{**PP, "name": SECRET[:40].replace("~", "a").replace(".", "b")}]}),
    put("secret-hex-as-name", {"destinations": [{**PP, "name": HEX[:40]}]}, secrets=(HEX[:40],)),
    put("secret-jwt-in-success-value", {"destinations": [http(success_field="s", success_value="eyJhbGciOiJIUzI1NiJ9."
                                                                                            "eyJzdWIiOiIxIn0")]}),
    put("secret-pem", {"destinations": [notify("-----BEGIN RSA " + "PRIVATE KEY----- MIIE")]}),
    put("secret-basic", {"destinations": [notify("Basic YWRtaW46aHVudGVyMg==")]}),
    put("secret-random-token", {"customer": "aZ3kQ9pL2mX7vB4nR8tY1wE6uI0o"}),
    Case("secret-in-rotation-body", "rotations", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "dryRun": SECRET}, route={}, secrets=(SECRET,)),
    Case("secret-as-ack-destination", "acknowledgements", "POST", 422, "InvalidRequest",
         body={"tenantId": T, "appId": A, "destination": HEX[:40], "keyId": A}, route={}, secrets=(HEX[:40],)),
    # -- Policy
    put("policy-365-1", {"policy": {"renewBeforeDays": 365, "lifetimeDays": 1}}),
    put("policy-over-half", {"policy": {"renewBeforeDays": 91, "lifetimeDays": 180}}),
    put("policy-renew-vs-setting", {"policy": {"renewBeforeDays": 100}}),  # SECRET_LIFETIME_DAYS 180
    put("policy-lifetime-vs-setting", {"policy": {"lifetimeDays": 40}}),  # RENEW_BEFORE_DAYS 30
    # -- JSON that is not JSON
    put("json-nan", None, "MalformedJson", 400, raw=b'{"customer": "x", "policy": {"renewBeforeDays": NaN}}'),
    put("json-infinity", None, "MalformedJson", 400, raw=b'{"policy": {"lifetimeDays": Infinity}}'),
    put("json-minus-infinity", None, "MalformedJson", 400, raw=b'{"policy": {"lifetimeDays": -Infinity}}'),
    Case("json-nan-rotation", "rotations", "POST", 400, "MalformedJson", raw=b'{"tenantId": NaN}', route={}),
    put("json-duplicate-top", None, "MalformedJson", 400, raw=b'{"customer": "a", "customer": "b"}'),
    put("json-duplicate-nested", None, "MalformedJson", 400,
        raw=b'{"policy": {"renewBeforeDays": 10, "renewBeforeDays": 20}}'),
    put("json-duplicate-options", None, "MalformedJson", 400,
        raw=b'{"destinations": [{"name": "h", "kind": "notify-only", "options": {"instructions": "a", '
            b'"instructions": "b"}}]}'),
    Case("json-duplicate-rotation", "rotations", "POST", 400, "MalformedJson",
         raw=b'{"tenantId": "x", "tenantId": "y", "appId": "z"}', route={}),
    # -- Who may call
    put("reader-registers", {"customer": "x"}, "Forbidden", 403, caller=READER),
    Case("reader-deletes", "target", "DELETE", 403, "Forbidden", caller=READER),
    Case("reader-rotates", "rotations", "POST", 403, "Forbidden", body={"tenantId": T, "appId": A, "force": True},
         route={}, caller=READER),
    Case("reader-pushes", "push", "POST", 403, "Forbidden", body={"tenantId": T, "appId": A}, route={},
         caller=READER),
    Case("reader-acknowledges", "acknowledgements", "POST", 403, "Forbidden",
         body={"tenantId": T, "appId": A, "destination": "pp", "keyId": A}, route={}, caller=READER),
    put("anonymous-registers", {"customer": "x"}, "Unauthenticated", 401, caller=None),
    Case("anonymous-status", "status", "GET", 401, "Unauthenticated", route={}, caller=None),
    Case("anonymous-push", "push", "POST", 401, "Unauthenticated", body={"tenantId": T, "appId": A}, route={},
         caller=None),
    Case("forged-principal", "rotations", "POST", 401, "Unauthenticated", body={"tenantId": T, "appId": A},
         route={}, caller=None, headers={**JSON, PRINCIPAL_HEADER: "eyJub3QiOiAiYSBwcmluY2lwYWwifQ=="}),
    Case("garbage-principal", "targets", "GET", 401, "Unauthenticated", route={}, caller=None,
         headers={**JSON, PRINCIPAL_HEADER: "%%%"}),
    # -- Wrong methods on every route, TRACE and CONNECT included
    *(Case(f"{m.lower()}-{name}", name, m, 405, "MethodNotAllowed", route=route)
      for name, route in ROUTE_FUNCTIONS.items() for m in ("TRACE", "CONNECT")),
    Case("patch-push", "push", "PATCH", 405, "MethodNotAllowed", route={}),
    Case("get-push", "push", "GET", 405, "MethodNotAllowed", route={}),
    Case("delete-me", "me", "DELETE", 405, "MethodNotAllowed", route={}),
]


def test_the_table_holds_at_least_100_distinct_hostile_requests() -> None:
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def production_like(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """As in Azure: no destination host is exempt from the address guard."""
    monkeypatch.delenv("DESTINATION_ALLOWED_HOSTS", raising=False)
    return api


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_request(case: Case, production_like: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    api = production_like
    c = world.seed_customer("Registered", 10)
    registered = await api.put(c, {"customer": "Registered", "destinations": [PP]})
    assert registered.status == 201, registered.text
    before = await snapshot(api, svc)

    raw = case.raw
    if raw is None and case.body is not None:
        raw = json.dumps(fill(case.body, c.tenant_id, c.app_id), ensure_ascii=False).encode()
    route = {k: v.replace(T, c.tenant_id).replace(A, c.app_id) for k, v in case.route.items()}
    kwargs: dict[str, Any] = {}
    if case.caller != "operator":
        kwargs["caller"] = case.caller
    reply = await api.call(case.function, case.method, route, raw=raw or b"", headers=case.headers, **kwargs)

    assert reply.status < 500
    assert (reply.status, reply.code) == (case.status, case.code), reply.text
    assert set(reply.body) == {"error"} and set(reply.body["error"]) == {"code", "message"}
    assert reply.body["error"]["message"]
    if case.status == 405:
        assert reply.headers.get("Allow")
    assert await snapshot(api, svc) == before, "a refused request must change nothing"
    for secret in (c.secret, *case.secrets):
        assert secret not in reply.text, "an answer must not echo a secret"
    assert (await api.call("target", "GET", ids(c))).body == registered.body
