"""Customer consent end to end: the link (GET /api/consent-url/{tenantId}), Entra's admin-consent endpoint (the
sandbox's, which refuses what Entra refuses), and the consent page Entra returns the admin to (GET /api/consent).

The page is anonymous: it must trust only a state the rotator signed, for that tenant, unexpired, once, and change
nothing otherwise."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest
import requests

from shared import bootstrap, consent
from shared.clock import SystemClock
from shared.entrypoints.access import Role
from tests.api.conftest import Api, Reply
from tests.rotation.conftest import ROTATOR_ROLE, World

OPERATOR = ("olga@msp.example", (Role.OPERATE.value,))
READER = ("rita@msp.example", (Role.READ.value,))
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml"}


async def link_for(api: Api, tenant_id: str) -> dict[str, Any]:
    reply = await api.call("consent_url", route={"tenantId": tenant_id}, caller=OPERATOR)
    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.body
    return body


def open_in_browser(api: Api, url: str) -> requests.Response:
    """What the admin's browser does with the link: Entra (the sandbox) answers with a redirect or an error page."""
    return requests.get(url, allow_redirects=False, verify=api.world.sb.ca_file, timeout=10)


def answer_of(response: requests.Response) -> dict[str, str]:
    """The query Entra's redirect carries back to the consent page."""
    assert response.status_code == 302, response.text
    return dict(parse_qsl(urlparse(response.headers["Location"]).query))


async def consent_page(api: Api, params: dict[str, str], accept: dict[str, str] = JSON) -> Reply:
    return await api.call("consent", params=params, headers=accept)


async def consent_record(svc: bootstrap.Services, tenant_id: str) -> Any:
    return await svc.consents.consent(tenant_id)


def msp_roles_in(world: World, tenant_id: str) -> list[str] | None:
    tenant = next(t for t in world.sb.control.state()["tenants"] if t["id"] == tenant_id)
    msp = world.sb.control.msp()["appId"]
    sp = next((s for s in tenant["servicePrincipals"] if s["appId"] == msp), None)
    return None if sp is None else list(sp["roles"])


async def test_the_link_carries_the_registered_redirect_uri_and_a_signed_state(api: Api, world: World) -> None:
    c = world.seed_customer("Linkco", 40, consent=False, owned=False)
    link = await link_for(api, c.tenant_id.upper())
    url = urlparse(link["url"])
    query = dict(parse_qsl(url.query))
    assert url.path == f"/{c.tenant_id}/v2.0/adminconsent"
    assert query["client_id"] == world.env["MSP_APP_CLIENT_ID"]
    assert query["scope"] == "https://graph.microsoft.com/.default"
    assert query["redirect_uri"] == world.env["CONSENT_REDIRECT_URI"] == link["redirectUri"]
    assert query["state"].startswith("v1.")
    assert link["consentedAt"] is None
    assert link["tenantId"] == c.tenant_id


async def test_consent_is_recorded_and_the_page_shows_the_proofpoint_app_and_its_next_step(
    api: Api, world: World, svc: bootstrap.Services
) -> None:
    c = world.seed_customer("Consentco", 12, consent=False, owned=False)
    link = await link_for(api, c.tenant_id)
    assert msp_roles_in(world, c.tenant_id) is None  # no consent yet: no service principal of the MSP app

    answer = answer_of(open_in_browser(api, link["url"]))
    assert answer["admin_consent"] == "True" and answer["tenant"] == c.tenant_id
    # Entra granted what the MSP app requires: its own role and the sign-in log's two (the evidence of retirement).
    assert msp_roles_in(world, c.tenant_id) == [ROTATOR_ROLE, "AuditLog.Read.All", "Directory.Read.All"]

    page = await consent_page(api, answer, HTML)
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "Consent recorded" in page.text and c.tenant_id in page.text
    assert "Proofpoint Essentials" in page.text and c.app_id in page.text
    assert "12 days left" in page.text or "11 days left" in page.text
    assert "assign --tenant" in page.text  # next step: the rotator does not own the app yet
    assert c.secret not in page.text

    record = await consent_record(svc, c.tenant_id)
    assert record is not None and record.tenant_id == c.tenant_id
    again = await link_for(api, c.tenant_id)
    assert again["consentedAt"] == record.consented_at.isoformat()


async def test_the_json_answer_names_each_candidate_its_ownership_and_next_step(api: Api, world: World) -> None:
    c = world.seed_customer("Ownedco", 90, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    # The customer's admin made the MSP app's service principal owner between consent and the page (assign).
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [
        {"appId": c.app_id, "owners": ["msp-app"]}]}]})
    page = await consent_page(api, answer)
    assert page.status == 200, page.text
    [app] = page.body["applications"]
    assert app["appId"] == c.app_id and app["ownedByRotator"] is True and app["registered"] is False
    assert app["nextStep"].startswith("Register it")
    assert [cred["daysLeft"] for cred in app["credentials"]] in ([90], [89])
    assert "secretText" not in json.dumps(page.body) and c.secret not in page.text


async def test_a_used_link_is_refused_and_changes_nothing(api: Api, world: World, svc: bootstrap.Services) -> None:
    c = world.seed_customer("Replayco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    assert (await consent_page(api, answer)).status == 200
    first = await consent_record(svc, c.tenant_id)

    replay = await consent_page(api, answer)
    assert (replay.status, replay.code) == (409, "StateReplayed")
    assert await consent_record(svc, c.tenant_id) == first


def _tampered(state: str, **changes: Any) -> str:
    version, payload, signature = state.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("forge", "answer_as_other"),
    [
        # The attacker names the victim tenant in both the state and Entra's `tenant` parameter.
        pytest.param(lambda s, other: _tampered(s, t=other), True, id="tenant swapped in the payload"),
        pytest.param(lambda s, other: _tampered(s, e=4102444800), False, id="expiry pushed out"),
        pytest.param(lambda s, other: s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"), False,
                     id="signature changed"),
        pytest.param(lambda s, other: _tampered(s, k="0" * 32), False, id="unknown key version"),
        pytest.param(lambda s, other: "v1.bm90LWpzb24.c2ln", False, id="garbage"),
        pytest.param(lambda s, other: "", False, id="missing"),
        pytest.param(lambda s, other: "x" * 5000, False, id="huge"),
    ],
)
async def test_a_forged_state_is_refused_and_changes_nothing(
    api: Api, world: World, svc: bootstrap.Services, forge: Any, answer_as_other: bool
) -> None:
    c = world.seed_customer("Forgeco", 40, consent=False, owned=False)
    other = world.seed_customer("Victimco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    forged_state = forge(answer["state"], other.tenant_id)
    forged = {**answer, "state": forged_state}
    if answer_as_other:
        forged["tenant"] = other.tenant_id
    reply = await consent_page(api, forged)
    assert reply.status == 400 and reply.code in ("InvalidState", "MissingState"), reply.text
    for tenant in (c.tenant_id, other.tenant_id):
        assert await consent_record(svc, tenant) is None
    assert forged_state == "" or forged_state not in reply.text
    # The genuine answer still works: a refusal consumed nothing.
    assert (await consent_page(api, answer)).status == 200


async def test_a_state_signed_with_another_key_is_refused(api: Api, world: World, svc: bootstrap.Services) -> None:
    c = world.seed_customer("Keyco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    version = consent.unverified(answer["state"]).key_version
    now = SystemClock().now()
    forged, _ = consent.sign(b"k" * 32, version, c.tenant_id, now, timedelta(hours=1))
    reply = await consent_page(api, {**answer, "state": forged})
    assert (reply.status, reply.code) == (400, "InvalidState")
    assert await consent_record(svc, c.tenant_id) is None


async def test_an_expired_link_is_refused(
    api: Api, world: World, svc: bootstrap.Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = world.seed_customer("Lateco", 40, consent=False, owned=False)
    link = await link_for(api, c.tenant_id)
    answer = answer_of(open_in_browser(api, link["url"]))
    hours = int(world.settings().consent_link_hours)
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(hours=hours, minutes=1)))
    reply = await consent_page(api, answer, HTML)
    assert reply.status == 400 and "StateExpired" in reply.text and "Nothing was changed" in reply.text
    assert await consent_record(svc, c.tenant_id) is None


async def test_an_answer_from_another_tenant_is_refused(api: Api, world: World, svc: bootstrap.Services) -> None:
    c = world.seed_customer("Boundco", 40, consent=False, owned=False)
    other = world.seed_customer("Elsewhereco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    reply = await consent_page(api, {**answer, "tenant": other.tenant_id})
    assert (reply.status, reply.code) == (400, "TenantMismatch")
    assert await consent_record(svc, other.tenant_id) is None and await consent_record(svc, c.tenant_id) is None


async def test_a_declined_consent_gets_a_clear_page_and_the_link_can_be_used_again(
    api: Api, world: World, svc: bootstrap.Services
) -> None:
    c = world.seed_customer("Shyco", 40, consent=False, owned=False)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "consentDecision": "decline"}]})
    link = await link_for(api, c.tenant_id)
    answer = answer_of(open_in_browser(api, link["url"]))
    assert answer["error"] == "access_denied" and "admin_consent" not in answer
    assert msp_roles_in(world, c.tenant_id) is None  # declined: nothing granted

    page = await consent_page(api, answer, HTML)
    assert page.status == 400 and "ConsentDenied" in page.text and "AADSTS65004" in page.text
    assert c.tenant_id in page.text  # the state was genuine, so the page names the tenant
    assert await consent_record(svc, c.tenant_id) is None

    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "consentDecision": "accept"}]})
    retry = answer_of(open_in_browser(api, link["url"]))
    assert (await consent_page(api, retry)).status == 200


async def test_an_app_name_cannot_inject_markup_into_the_page(api: Api, world: World) -> None:
    c = world.seed_customer("Markupco", 40, consent=False, owned=False)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [
        {"appId": c.app_id, "displayName": "Proofpoint <script>alert(1)</script>"}]}]})
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    page = await consent_page(api, answer, HTML)
    assert page.status == 200
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_tenant_without_a_proofpoint_app_says_what_to_do(api: Api, world: World) -> None:
    c = world.seed_customer("Emptyco", 40, consent=False, owned=False)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [
        {"appId": c.app_id, "displayName": "Payroll"}]}]})
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    page = await consent_page(api, answer, HTML)
    assert page.status == 200 and "No app registration named like Proofpoint" in page.text


async def test_nothing_secret_is_stored_by_the_consent_flow(api: Api, world: World, svc: bootstrap.Services) -> None:
    c = world.seed_customer("Quietco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    assert (await consent_page(api, answer)).status == 200
    key_versions = world.sb.control.state()["keyvault"]["secrets"]["consent-state-key"]
    keys = [v["value"] for v in key_versions]
    rows = json.dumps(await svc.consents.all_rows(), default=str)
    assert answer["state"] not in rows and answer["state"].split(".")[2] not in rows
    assert not any(k in rows for k in keys)
    assert c.tenant_id in rows


async def test_consent_links_need_the_operate_role(api: Api, world: World) -> None:
    c = world.seed_customer("Roleco", 40, consent=False, owned=False)
    anonymous = await api.call("consent_url", route={"tenantId": c.tenant_id}, caller=None)
    reader = await api.call("consent_url", route={"tenantId": c.tenant_id}, caller=READER)
    assert (anonymous.status, anonymous.code) == (401, "Unauthenticated")
    assert (reader.status, reader.code) == (403, "Forbidden")
    bad = await api.call("consent_url", route={"tenantId": "not-a-guid"}, caller=OPERATOR)
    assert (bad.status, bad.code) == (400, "InvalidPath")
    post = await api.call("consent", "POST", body={})
    assert post.status == 405


async def test_a_single_tenant_deployment_has_no_consent_link(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_MODE", "managed-identity")
    reply = await api.call("consent_url", route={"tenantId": world.env["MSP_TENANT_ID"]}, caller=OPERATOR)
    assert (reply.status, reply.code) == (409, "ConsentNotApplicable")


async def test_the_command_line_makes_the_same_kind_of_link(api: Api, world: World) -> None:
    c = world.seed_customer("Cliconsent", 40, consent=False, owned=False)
    run = world.cli("consent-url", c.tenant_id, "--json")
    assert run.wait(timeout=120) == 0, run.output()
    link = json.loads(run.output())
    answer = answer_of(open_in_browser(api, link["url"]))
    assert (await consent_page(api, answer)).status == 200
    bad = world.cli("consent-url", "not-a-tenant")
    assert bad.wait(timeout=120) == 2 and "not a tenant id" in bad.output()


# What anyone can put in the anonymous callback's query: a sentence to phish with, markup, other scripts, a lot.
HOSTILE_DESCRIPTIONS = [
    "Your session expired: sign in again at https://evil.example/login to keep your mail flowing",
    "AADSTS50020: sign in again at https://evil.example",
    "<b>Call +1 555 0100 now</b> to restore access",
    "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in "Sign in at evil.example"),  # fullwidth forms
    "Please\u200b visit\u00a0evil.example\r\nTrace ID: 1",
    "z" * 100_000,
]
HOSTILE_ERRORS = ["access_denied", "sign_in_again_at_evil_example", "<script>alert(1)</script>", "e" * 10_000]


@pytest.mark.parametrize("state", ["missing", "garbage", "forged", "huge"])
@pytest.mark.parametrize("error", HOSTILE_ERRORS)
async def test_without_a_valid_state_no_text_of_the_query_is_shown(
    api: Api, world: World, svc: bootstrap.Services, state: str, error: str
) -> None:
    c = world.seed_customer("Phishco", 40, consent=False, owned=False)
    genuine = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))["state"]
    states = {"garbage": "v1.bm90LWpzb24.c2ln", "forged": genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA")
                                                                          else "BBBB"), "huge": "x" * 5000}
    for description in HOSTILE_DESCRIPTIONS:
        params = {"error": error, "error_description": description}
        if state != "missing":
            params["state"] = states[state]
        for accept in (JSON, HTML):
            reply = await consent_page(api, params, accept)
            assert reply.status == 400 and "ConsentDenied" in reply.text, reply.text[:300]
            shown = reply.text.lower()
            for word in ("evil", "555", "\uff45\uff56\uff49\uff4c", "zzzzzzzz", "trace id", "sign_in", "script",
                         "eeeeeeee", "aadsts", "access_denied", c.tenant_id):
                assert word not in shown, (word, reply.text[:500])
            assert len(reply.text) < 4000
    assert await consent_record(svc, c.tenant_id) is None


async def test_with_a_valid_state_only_entras_codes_are_shown(api: Api, world: World, svc: bootstrap.Services) -> None:
    c = world.seed_customer("Declineco", 40, consent=False, owned=False)
    genuine = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))["state"]
    cases = [
        ("access_denied", "AADSTS65004: User declined to consent to access the app.", "access_denied (AADSTS65004)"),
        ("consent_required", "AADSTS50020: sign in again at https://evil.example", "consent_required (AADSTS50020)"),
        ("sign_in_again_at_evil_example", "Sign in again at https://evil.example", None),
        ("access_denied", "sign in at https://evil.example, AADSTS90000", "access_denied"),
        ("<b>x</b>", "AADSTS65004: " + "z" * 100_000, "AADSTS65004"),
        ("access_denied", "AADSTS65004zzz", "access_denied"),
    ]
    for error, description, shown in cases:
        for accept in (JSON, HTML):
            reply = await consent_page(api, {"error": error, "error_description": description, "state": genuine},
                                       accept)
            assert reply.status == 400 and "ConsentDenied" in reply.text and c.tenant_id in reply.text
            text = reply.text.lower()
            assert not any(w in text for w in ("evil", "declined", "zzzz", "sign_in", "&lt;b&gt;", "<b>x")), text
            if shown is None:
                assert "aadsts" not in text and "access_denied" not in text
            else:
                assert shown.lower() in text
    assert await consent_record(svc, c.tenant_id) is None


@pytest.mark.parametrize("tenant", [
    "t" * 100_000, "<script>alert(1)</script>", "sign in again at https://evil.example", "{tenant}\n", " {tenant}x",
    "{tenant}" * 3, "{other}%0a", "\u0000{other}",
])
async def test_a_tenant_that_is_not_a_tenant_id_is_never_echoed(
    api: Api, world: World, svc: bootstrap.Services, tenant: str
) -> None:
    c = world.seed_customer("Echoco", 40, consent=False, owned=False)
    other = world.seed_customer("Otherco", 40, consent=False, owned=False)
    answer = answer_of(open_in_browser(api, (await link_for(api, c.tenant_id))["url"]))
    sent = tenant.format(tenant=c.tenant_id, other=other.tenant_id)
    for accept in (JSON, HTML):
        reply = await consent_page(api, {**answer, "tenant": sent}, accept)
        assert reply.status == 400 and "TenantMismatch" in reply.text, reply.text[:300]
        assert len(reply.text) < 4000 and "ttttttttt" not in reply.text and "evil" not in reply.text
        assert "script" not in reply.text and other.tenant_id not in reply.text
    assert await consent_record(svc, c.tenant_id) is None
    assert (await consent_page(api, answer)).status == 200  # the link was not used up
