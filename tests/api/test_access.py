"""Who may call: the principal App Service Authentication injects, app roles per route, the audit actor."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest

from shared.entrypoints.access import PRINCIPAL_HEADER, Caller, Role, authorize, platform_headers, principal
from shared.entrypoints.web import HttpError
from tests.api.conftest import OPERATOR, WAIT, Api, app_functions, ids
from tests.rotation.conftest import World

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


@pytest.mark.parametrize("role_typ", ["groups", "name", "preferred_username", "wids", "scp",
                                      "http://schemas.microsoft.com/ws/2008/06/identity/claims/groupsid"])
def test_a_role_type_naming_another_claim_makes_no_role(role_typ: str) -> None:
    """A group, a user name or a scope that happens to read "Rotator.Operate" is not the app role."""
    doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": role_typ,
           "claims": [{"typ": "preferred_username", "val": "Rotator.Operate"},
                      {"typ": "name", "val": "Rotator.Operate"}, {"typ": role_typ, "val": "Rotator.Operate"},
                      {"typ": role_typ, "val": "Rotator.Read"}]}
    found = principal(request({PRINCIPAL_HEADER: encoded(doc)}))
    assert found is not None and found.roles == frozenset() and not found.has(Role.READ)


def test_an_app_only_caller_is_named_by_its_client_id() -> None:
    doc = {"auth_typ": "aad", "claims": [{"typ": "idtyp", "val": "app"}, {"typ": "name", "val": "looks-like-a-user"},
                                         {"typ": "appid", "val": "5a1d0000-0000-4000-8000-000000000009"},
                                         {"typ": "roles", "val": "Rotator.Operate"}]}
    found = principal(request({PRINCIPAL_HEADER: encoded(doc)}))
    assert found == Caller("app:5a1d0000-0000-4000-8000-000000000009", frozenset({"Rotator.Operate"}), "app")


@pytest.mark.parametrize("name_header", [None, "5a1d0000-0000-4000-8000-000000000030"])
def test_an_app_only_caller_without_idtyp_is_still_an_app(name_header: str | None) -> None:
    """Entra adds idtyp only as an optional claim: an app-only token is the one with no scope and no sign-in name,
    whatever name the platform puts in X-MS-CLIENT-PRINCIPAL-NAME."""
    doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
           "claims": [{"typ": "azp", "val": "5a1d0000-0000-4000-8000-000000000030"},
                      {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
                       "val": "5a1d0000-0000-4000-8000-000000000031"},
                      {"typ": "roles", "val": "Rotator.Operate"}]}
    headers = {PRINCIPAL_HEADER: encoded(doc), **({"X-MS-CLIENT-PRINCIPAL-NAME": name_header} if name_header else {})}
    found = principal(request(headers))
    assert found == Caller("app:5a1d0000-0000-4000-8000-000000000030", frozenset({"Rotator.Operate"}), "app")


@pytest.mark.parametrize("scope_type", ["scp", "http://schemas.microsoft.com/identity/claims/scope"])
def test_a_delegated_token_without_a_sign_in_name_is_a_person(scope_type: str) -> None:
    doc = {"auth_typ": "aad", "claims": [{"typ": "azp", "val": "04b07795-8ddb-461a-bbee-02f9e1bf7b46"},
                                         {"typ": scope_type, "val": "user_impersonation"},
                                         {"typ": "oid", "val": "5a1d0000-0000-4000-8000-000000000020"}]}
    found = principal(request({PRINCIPAL_HEADER: encoded(doc)}))
    assert found is not None and found.kind == "user"


def principal_doc(roles: list[str], **extra: object) -> dict[str, object]:
    """A principal as App Service Authentication writes it for an Entra ID sign-in, with these role values."""
    doc: dict[str, object] = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
                              "claims": [{"typ": "preferred_username", "val": "mallory@msp.example"},
                                         *({"typ": "roles", "val": r} for r in roles)]}
    doc.update(extra)
    return doc


# Each is another string than the role: around it, inside it, other Unicode forms and cases.
NOT_THE_ROLE = [
    " {}", "{} ", "{}\n", "\n{}", "{}\r\n", "\t{}", "{}\t", "{}\x00", "{}\u00a0", "\u00a0{}", "\u200b{}", "{}\u200b",
    "\ufeff{}", "{}\u2028", "{}\u3000", "{}\u200d", "{}\u2060",
]
INSIDE = [
    ("Rotator.\tOperate", "Rotator.\tRead"), ("Rotator.\u00a0Operate", "Rotator.\u00a0Read"),
    ("Rotator.\u200bOperate", "Rotator.\u200bRead"), ("Rotator .Operate", "Rotator .Read"),
    # a soft hyphen inside; a fullwidth letter (NFKC makes it the ASCII one)
    ("Rotator.Ope\u00adrate", "Rotator.Re\u00adad"), ("Rotator.\uff2fperate", "Rotator.\uff32ead"),
    ("rotator.operate", "rotator.read"), ("ROTATOR.OPERATE", "ROTATOR.READ"), ("Rotator.Operate.", "Rotator.Read."),
    ("Rotator\u2024Operate", "Rotator\u2024Read"),  # one dot leader, NFKC of which is "."
]


@pytest.mark.parametrize("role", [Role.OPERATE, Role.READ])
@pytest.mark.parametrize("shape", NOT_THE_ROLE + [f"inside:{i}" for i in range(len(INSIDE))])
def test_a_role_is_compared_exactly_never_cleaned(role: Role, shape: str) -> None:
    if shape.startswith("inside:"):
        pair = INSIDE[int(shape.split(":")[1])]
        value = pair[0] if role is Role.OPERATE else pair[1]
    else:
        value = shape.format(role.value)
    assert value != role.value
    found = principal(request({PRINCIPAL_HEADER: encoded(principal_doc([value]))}))
    assert found is not None and not found.has(Role.READ) and not found.has(Role.OPERATE)
    with pytest.raises(HttpError) as refused:
        authorize(request({PRINCIPAL_HEADER: encoded(principal_doc([value]))}), role)
    assert (refused.value.status, refused.value.code) == (403, "Forbidden")
    # The exact value beside it still counts.
    exact = principal(request({PRINCIPAL_HEADER: encoded(principal_doc([value, role.value]))}))
    assert exact is not None and exact.has(role)


@pytest.mark.parametrize("provider", [
    "github", "google", "facebook", "twitter", "apple", "microsoftaccount", "my-oidc", "oidc", "custom", "", "AAD",
    " aad", "aad ", "aad\n", "aad\u200b", "a\u00adad", "\uff41ad", None, 1, ["aad"], {"aad": True}, "missing",
])
def test_only_the_identity_provider_the_deployment_configures_signs_in(provider: object) -> None:
    """App Service writes `auth_typ: aad` for Entra ID, the only provider infra configures; another provider, or none,
    gets no roles however many it lists."""
    doc = principal_doc([Role.OPERATE.value, Role.READ.value])
    if provider == "missing":
        del doc["auth_typ"]
    else:
        doc["auth_typ"] = provider
    with pytest.raises(HttpError) as refused:
        authorize(request({PRINCIPAL_HEADER: encoded(doc)}), Role.READ)
    assert (refused.value.status, refused.value.code) == (401, "Unauthenticated")


@pytest.mark.parametrize("idp", ["github", "", "AAD", "aad "])
def test_a_provider_header_that_contradicts_the_principal_is_unauthenticated(idp: str) -> None:
    headers = {PRINCIPAL_HEADER: encoded(principal_doc([Role.OPERATE.value])), "X-MS-CLIENT-PRINCIPAL-IDP": idp}
    with pytest.raises(HttpError) as refused:
        authorize(request(headers), Role.READ)
    assert (refused.value.status, refused.value.code) == (401, "Unauthenticated")
    del headers["X-MS-CLIENT-PRINCIPAL-IDP"]
    assert authorize(request(headers), Role.OPERATE).name == "mallory@msp.example"


@pytest.mark.parametrize("header", [
    "not base64!", encoded([1, 2]), encoded({"claims": "x"}), encoded({"claims": [{"typ": 1, "val": "x"}]}),
    encoded({"claims": [{"typ": "roles", "val": "Rotator.Operate"}]}),  # nobody named
    base64.b64encode(b"\xff\xfe").decode(), "A" * 20_000,
])
def test_a_principal_that_is_not_the_platforms_is_unauthenticated(header: str) -> None:
    with pytest.raises(HttpError) as caught:
        authorize(request({PRINCIPAL_HEADER: header}), Role.READ)
    assert (caught.value.status, caught.value.code) == (401, "Unauthenticated")


def test_a_missing_role_is_forbidden_and_no_principal_is_unauthenticated() -> None:
    with pytest.raises(HttpError) as forbidden:
        authorize(request(platform_headers(*READER)), Role.OPERATE)
    assert (forbidden.value.status, forbidden.value.code) == (403, "Forbidden")
    with pytest.raises(HttpError) as anonymous:
        authorize(request({}), Role.READ)
    assert (anonymous.value.status, anonymous.value.code) == (401, "Unauthenticated")


@pytest.mark.parametrize("setting", ["ALLOW_FUNCTION_KEY_CALLERS", "ALLOW_ANONYMOUS"])
def test_no_setting_lets_a_caller_without_a_principal_in(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    """The function-key operator mode is gone: whatever the environment says, no principal is 401."""
    monkeypatch.setenv(setting, "true")
    with pytest.raises(HttpError) as anonymous:
        authorize(request({"x-functions-key": "a-key", "code": "a-key"}), Role.READ)
    assert (anonymous.value.status, anonymous.value.code) == (401, "Unauthenticated")


def test_every_http_function_is_anonymous_at_the_host() -> None:
    """A FUNCTION- or ADMIN-level trigger needs a key that an App Service Authentication caller never carries
    (azure-functions-host FunctionAuthorizationHandler.cs): each route is anonymous and checks roles in code."""
    levels = {
        function.get_function_name(): str(getattr(binding.auth_level, "value", binding.auth_level)).upper()
        for function in app_functions() for binding in function.get_bindings() if binding.type == "httpTrigger"
    }
    assert len(levels) >= 10 and set(levels.values()) == {"ANONYMOUS"}, levels


# ----------------------------------------------------------------------------------------- through the functions


async def test_me_answers_who_is_calling(api: Api) -> None:
    reply = await api.call("me", caller=OPERATOR_ONLY)
    assert reply.status == 200 and reply.body == {"name": "alice@msp.example", "kind": "user",
                                                  "roles": ["Rotator.Operate", "Rotator.Read"]}
    guest = await api.call("me", caller=NOBODY)
    assert guest.status == 200 and guest.body["roles"] == [] and guest.body["name"] == "guest@msp.example"
    anonymous = await api.call("me", caller=None)
    assert (anonymous.status, anonymous.code) == (401, "Unauthenticated")


async def test_a_reader_can_look_but_cannot_register_rotate_push_or_acknowledge(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Readable", 10)
    assert (await api.put(c)).status == 201
    rows_before = await svc.state.all_rows()
    for function, route in (("targets", {}), ("target", ids(c)), ("status", {}), ("openapi", {}),
                            ("discover", {"tenantId": c.tenant_id})):
        reply = await api.call(function, "GET", route, caller=READER)
        assert reply.status == 200, (function, reply.text)
    body = {**ids(c)}
    tenants_before = world.sb.control.state()["tenants"]
    refused = [
        await api.call("target", "PUT", ids(c), {"customer": "Renamed"}, caller=READER),
        await api.call("target", "DELETE", ids(c), caller=READER),
        await api.call("rotations", "POST", {}, {**body, "force": True}, caller=READER),
        await api.call("push", "POST", {}, body, caller=READER),
        await api.call("acknowledgements", "POST", {}, {**body, "destination": "x", "keyId": c.app_id}, caller=READER),
    ]
    assert [(r.status, r.code) for r in refused] == [(403, "Forbidden")] * len(refused)
    assert await svc.state.all_rows() == rows_before
    assert world.sb.control.state()["tenants"] == tenants_before


async def test_nobody_without_a_role_reads(api: Api, world: World) -> None:
    for function in ("targets", "status", "openapi"):
        reply = await api.call(function, caller=NOBODY)
        assert (reply.status, reply.code) == (403, "Forbidden")
        anonymous = await api.call(function, caller=None)
        assert (anonymous.status, anonymous.code) == (401, "Unauthenticated")


async def test_an_operator_registers_and_rotates_and_is_the_audit_actor(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Operated", 10)
    created = await api.put(c, {"customer": "Operated"})
    assert created.status == 201
    rotated = await api.call("rotations", "POST", {}, {**ids(c), "force": True}, caller=OPERATOR_ONLY, params=WAIT)
    assert rotated.status == 200 and rotated.body["result"] in ("rotated", "push-incomplete"), rotated.text
    events = await svc.state.events(c.tenant_id, c.app_id, limit=100)
    registry = [e for e in events if e.step == "registry"]
    assert [e.actor for e in registry] == [f"manual:{OPERATOR}"]
    steps = [e for e in events if e.step != "registry"]
    assert steps and {e.actor for e in steps} == {"manual:alice@msp.example"}


async def test_a_near_role_or_another_provider_changes_nothing_through_the_functions(api: Api, world: World,
                                                                                      svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Guarded", 10)
    assert (await api.put(c)).status == 201
    rows_before = await svc.state.all_rows()
    for doc, status in ((principal_doc([" Rotator.Operate", "Rotator.Read\n"]), 403),
                        (principal_doc(["Rotator.Operate"], auth_typ="github"), 401),
                        (principal_doc(["Rotator.Operate"], auth_typ=""), 401)):
        headers = {"Content-Type": "application/json", PRINCIPAL_HEADER: encoded(doc)}
        for function, method, route, body in (("status", "GET", {}, None), ("target", "GET", ids(c), None),
                                              ("rotations", "POST", {}, {**ids(c), "force": True}),
                                              ("target", "DELETE", ids(c), None)):
            reply = await api.call(function, method, route, body, headers=headers, caller=None)
            assert reply.status == status, (doc, function, reply.text)
    assert await svc.state.all_rows() == rows_before
