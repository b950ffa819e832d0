"""The partner admin's web sign-in for bulk onboarding: GET /api/onboarding/signin sends the browser to Entra (the
sandbox's, which refuses an unregistered redirect URI and checks PKCE as Entra does), Entra returns it to GET
/api/onboarding/callback, which trusts only a state this rotator signed for this operator, unexpired, once, and
redeems the code with the verifier whose challenge it sent. Nothing is redeemed on any refusal.

The redemption and the hand-over to bulk onboarding (`partner_signin.handoff`: shared/adapters/delegated.py and the
bulk engine) are replaced here by a recorder, which proves what the callback hands on."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlparse

import pytest

from sandbox.client import SignInAnswer, sign_in_as
from shared import bootstrap
from shared import onboarding_signin as signin
from shared.clock import SystemClock
from shared.entrypoints import partner_signin
from shared.entrypoints.access import Role
from shared.errors import PartnerRefused
from tests.api.conftest import Api, Reply
from tests.rotation.conftest import World

OPERATOR = ("olga@msp.example", (Role.OPERATE.value,))
OTHER_OPERATOR = ("otto@msp.example", (Role.OPERATE.value,))
READER = ("rita@msp.example", (Role.READ.value,))
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml"}
CALLBACK = "http://localhost/api/onboarding/callback"  # the origin the test's requests come to
PARTNER_ADMIN = "operator@msp.example"  # a user of the MSP (partner) tenant in the sandbox's seed
PARTNER = "partner-admin@msp.example"  # the partner admin, in the GDAP groups (sandbox/README.md)


class Recorder:
    """Stands in for the code's redemption and the hand-over to bulk onboarding."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, signin.Redemption]] = []
        self.refuse: PartnerRefused | None = None

    async def __call__(self, svc: bootstrap.Services, operator: str, redemption: signin.Redemption) -> str:
        self.calls.append((operator, redemption))
        if self.refuse is not None:
            raise self.refuse
        return f"{partner_signin.DASHBOARD_VIEW}/signed-in"


@pytest.fixture
def handed(api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(partner_signin, "handoff", recorder)
    return recorder


@pytest.fixture
def clock(api: Api, monkeypatch: pytest.MonkeyPatch) -> SystemClock:
    shifted = SystemClock()
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", shifted)
    return shifted


async def start(api: Api, caller: tuple[str, tuple[str, ...]] = OPERATOR, **params: str) -> dict[str, str]:
    reply = await api.call("onboarding_signin", caller=caller, headers=JSON, params=params)
    assert reply.status == 302, reply.text
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Referrer-Policy"] == "no-referrer"
    location = urlparse(reply.headers["Location"])
    query = dict(parse_qsl(location.query))
    query["_path"] = location.path
    query["_url"] = reply.headers["Location"]
    return query


def entra(world: World, url: str, upn: str = PARTNER_ADMIN) -> SignInAnswer:
    world.sb.control.add_redirect_uri("msp-app", CALLBACK)
    return sign_in_as(url, upn, world.sb.ca_file)


async def callback(api: Api, params: dict[str, str], caller: tuple[str, tuple[str, ...]] = OPERATOR,
                   accept: dict[str, str] = JSON) -> Reply:
    return await api.call("onboarding_callback", caller=caller, headers=accept, params=params)


async def test_the_sign_in_goes_to_the_partner_tenant_with_s256_and_comes_back_with_a_code(
        api: Api, world: World, handed: Recorder) -> None:
    sent = await start(api)
    assert sent["_path"] == f"/{world.env['MSP_TENANT_ID']}/oauth2/v2.0/authorize"
    assert sent["client_id"] == world.env["MSP_APP_CLIENT_ID"] and sent["redirect_uri"] == CALLBACK
    assert sent["response_type"] == "code" and sent["code_challenge_method"] == "S256"
    assert "offline_access" in sent["scope"].split() and "code_verifier" not in sent["_url"]
    answer = entra(world, sent["_url"])
    assert answer.redirect_uri == CALLBACK and answer.params["state"] == sent["state"]
    reply = await callback(api, answer.params)
    assert reply.status == 303, reply.text
    assert reply.headers["Location"] == "/api/dashboard#/onboarding/signed-in"
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Referrer-Policy"] == "no-referrer"
    [(operator, redemption)] = handed.calls
    assert operator == OPERATOR[0] and redemption.code == answer.params["code"]
    assert redemption.redirect_uri == CALLBACK and redemption.run_id == ""
    # the verifier handed on is the one whose challenge went to Entra, and never travelled
    assert signin.challenge(redemption.code_verifier) == sent["code_challenge"]
    assert redemption.code_verifier not in sent["_url"] and redemption.code_verifier not in str(answer.params)
    assert redemption.code not in repr(redemption) and redemption.code_verifier not in repr(redemption)


def redeem_at_entra(world: World, code: str, code_verifier: str) -> Any:
    """Entra's token request for the code as the rotator makes it: the MSP app, with a client assertion from the
    managed identity (the sandbox's identity endpoint, as App Service's)."""
    import requests

    identity = {"X-IDENTITY-HEADER": world.env["IDENTITY_HEADER"]}
    assertion = requests.get(world.env["IDENTITY_ENDPOINT"], headers=identity,
                             params={"resource": "api://AzureADTokenExchange", "api-version": "2019-08-01",
                                     "client_id": world.env.get("AZURE_CLIENT_ID", "")}, timeout=30)
    assert assertion.status_code == 200, assertion.text
    return requests.post(
        f"{world.env['AZURE_AUTHORITY_HOST']}/{world.env['MSP_TENANT_ID']}/oauth2/v2.0/token",
        data={"grant_type": "authorization_code", "client_id": world.env["MSP_APP_CLIENT_ID"], "code": code,
              "redirect_uri": CALLBACK, "code_verifier": code_verifier,
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "client_assertion": assertion.json()["access_token"]},
        verify=world.sb.ca_file, timeout=30)


@pytest.mark.parametrize("right", [True, False])
async def test_entra_redeems_the_code_only_with_the_verifier_handed_on(
        api: Api, world: World, handed: Recorder, right: bool) -> None:
    """Entra's token endpoint (the sandbox's, RFC 7636 section 4.6) checks the verifier against the challenge the
    sign-in sent: the one the callback hands on works; any other is refused (AADSTS501481)."""
    sent = await start(api)
    answer = entra(world, sent["_url"])
    await callback(api, answer.params)
    [(_, redemption)] = handed.calls
    other = signin.verifier(bytes(32), "0" * 32)
    token = redeem_at_entra(world, redemption.code, redemption.code_verifier if right else other)
    if right:
        assert token.status_code == 200, token.text
        assert token.json()["access_token"]
    else:
        assert token.status_code == 400 and "AADSTS501481" in token.text


async def test_a_callback_on_another_host_is_refused_by_entra(api: Api, world: World) -> None:
    """The callback is on the origin the request came to (as App Service Authentication's own); a request that
    reached the app under a forged Host makes a redirect URI the MSP app does not have, which Entra refuses."""
    import azure.functions as func

    forged = func.HttpRequest("GET", "https://evil.example/api/onboarding/signin", headers={}, body=b"")
    assert partner_signin.redirect_uri(forged) == "https://evil.example/api/onboarding/callback"
    sent = await start(api)
    url = sent["_url"].replace(quote(CALLBACK, safe=""), quote(partner_signin.redirect_uri(forged), safe=""))
    assert url != sent["_url"]
    world.sb.control.add_redirect_uri("msp-app", CALLBACK)
    with pytest.raises(PermissionError, match="AADSTS50011"):
        sign_in_as(url, PARTNER_ADMIN, world.sb.ca_file)


async def test_a_replayed_answer_is_refused_before_anything_is_redeemed(
        api: Api, world: World, handed: Recorder) -> None:
    answer = entra(world, (await start(api))["_url"])
    assert (await callback(api, answer.params)).status == 303
    again = await callback(api, answer.params)
    assert again.status == 409 and again.code == "StateReplayed"
    assert len(handed.calls) == 1


async def test_an_expired_sign_in_is_refused(api: Api, world: World, handed: Recorder, clock: SystemClock) -> None:
    answer = entra(world, (await start(api))["_url"])
    clock.offset = signin.LIFETIME
    reply = await callback(api, answer.params)
    assert reply.status == 400 and reply.code == "StateExpired"
    clock.offset = timedelta(0)
    assert handed.calls == []


async def test_another_operator_cannot_finish_it_and_does_not_spend_it(
        api: Api, world: World, handed: Recorder) -> None:
    answer = entra(world, (await start(api))["_url"])
    reply = await callback(api, answer.params, caller=OTHER_OPERATOR)
    assert reply.status == 403 and reply.code == "OtherOperator"
    assert handed.calls == []
    assert (await callback(api, answer.params)).status == 303  # its own operator still can, once
    assert [operator for operator, _ in handed.calls] == [OPERATOR[0]]


@pytest.mark.parametrize("caller,status,code", [(None, 401, "Unauthenticated"), (READER, 403, "Forbidden")])
async def test_both_routes_need_an_operator(api: Api, handed: Recorder, caller: Any, status: int, code: str) -> None:
    for route in ("onboarding_signin", "onboarding_callback"):
        reply = await api.call(route, caller=caller, headers=JSON, params={"code": "x", "state": "s1.a.b"})
        assert (reply.status, reply.code) == (status, code)
    assert handed.calls == []


async def test_a_browser_whose_dashboard_session_ended_gets_a_page(api: Api, world: World, handed: Recorder) -> None:
    answer = entra(world, (await start(api))["_url"])
    reply = await callback(api, answer.params, caller=None, accept=HTML)
    assert reply.status == 401 and "Unauthenticated" in reply.text and "session ended" in reply.text
    assert reply.headers["Cache-Control"] == "no-store" and handed.calls == []
    assert (await callback(api, answer.params)).status == 303  # not spent: signed in again, it goes on


async def test_an_app_cannot_sign_a_partner_admin_in(api: Api, handed: Recorder) -> None:
    from shared.entrypoints.access import PRINCIPAL_HEADER, PRINCIPAL_NAME_HEADER, platform_headers

    headers = platform_headers("x", [Role.OPERATE.value])
    import base64
    import json

    doc = json.loads(base64.b64decode(headers[PRINCIPAL_HEADER]))
    doc["claims"] = [{"typ": "appid", "val": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"},
                     {"typ": "roles", "val": Role.OPERATE.value}]
    headers[PRINCIPAL_HEADER] = base64.b64encode(json.dumps(doc).encode()).decode()
    del headers[PRINCIPAL_NAME_HEADER]
    reply = await api.call("onboarding_signin", caller=None, headers={**JSON, **headers})
    assert reply.status == 403 and reply.code == "PersonRequired"


async def test_entra_s_refusal_is_told_by_its_codes_only(api: Api, world: World, handed: Recorder) -> None:
    sent = await start(api)
    lure = "AADSTS65004: User declined. Sign in again at https://evil.example/login"
    reply = await callback(api, {"error": "access_denied", "error_description": lure, "state": sent["state"]},
                           accept=HTML)
    assert reply.status == 400 and "SignInDenied" in reply.text
    assert "access_denied (AADSTS65004)" in reply.text and "evil.example" not in reply.text
    assert reply.headers["Cache-Control"] == "no-store" and "script-src" not in reply.headers["Content-Security-Policy"]
    # without a state of ours, not even the codes
    forged = await callback(api, {"error": "access_denied", "error_description": lure, "state": "s1.e30.x"})
    assert forged.status == 400 and forged.code == "InvalidState" and "AADSTS" not in forged.text
    assert handed.calls == []


@pytest.mark.parametrize("params,code", [
    ({}, "MissingState"),
    ({"code": "abc"}, "MissingState"),
    ({"code": "abc", "state": "v1.e30.x"}, "InvalidState"),
    ({"code": "abc", "state": "s1." + "A" * 2000 + ".x"}, "InvalidState"),
])
async def test_answers_without_a_state_of_ours_are_refused(
        api: Api, handed: Recorder, params: dict[str, str], code: str) -> None:
    reply = await callback(api, params)
    assert reply.status == 400 and reply.code == code
    assert handed.calls == []


async def test_an_answer_without_a_code_is_refused_and_stays_usable(api: Api, world: World, handed: Recorder) -> None:
    answer = entra(world, (await start(api))["_url"])
    reply = await callback(api, {"state": answer.params["state"]})
    assert reply.status == 400 and reply.code == "MissingParameter"
    assert (await callback(api, answer.params)).status == 303


async def test_a_resumed_run_is_carried_through_the_state(api: Api, world: World, handed: Recorder) -> None:
    sent = await start(api, run="0123456789abcdef0123456789abcdef")
    answer = entra(world, sent["_url"])
    assert (await callback(api, answer.params)).status == 303
    assert handed.calls[0][1].run_id == "0123456789abcdef0123456789abcdef"
    bad = await api.call("onboarding_signin", caller=OPERATOR, headers=JSON, params={"run": "../etc"})
    assert bad.status == 400 and bad.code == "InvalidRunId"


async def test_a_refused_redemption_names_the_cause_and_the_fix(api: Api, world: World, handed: Recorder) -> None:
    handed.refuse = PartnerRefused("Entra ID refused the code (AADSTS70008)", code="CodeExpired",
                                   fix="sign in again")
    answer = entra(world, (await start(api))["_url"])
    reply = await callback(api, answer.params, accept=HTML)
    assert reply.status == 400 and "CodeExpired" in reply.text and "sign in again" in reply.text


async def test_the_partner_admin_signs_in_and_a_run_holds_the_session(api: Api, world: World,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The real hand-over, over HTTPS to the sandbox: the code redeemed with the verifier and the rotator's client
    assertion, a run signed in with no customer picked yet, the partner session in Key Vault under the run's name
    (never in the answer or the run's document), the GDAP customers read through it; a second sign-in for that run
    renews its session."""
    caplog.set_level(logging.DEBUG)
    tenants = world.sb.control.seed_gdap_customers(2, start=9101, missing_role_every=2)
    answer = entra(world, (await start(api))["_url"], PARTNER)
    reply = await callback(api, answer.params)
    assert reply.status == 303, reply.text
    location = reply.headers["Location"]
    assert location.startswith("/api/dashboard#/onboarding/run/")
    run_id = location.rsplit("/", 1)[1]
    run = await api.call("onboarding_run", route={"runId": run_id}, headers=JSON)
    assert run.status == 200 and run.body["state"] == "signed-in" and run.body["startedBy"] == PARTNER
    kept = world.sb.control.state()["keyvault"]["secrets"][f"onboarding-session-{run_id}"]
    refresh = json.loads(kept[-1]["value"])["refreshToken"]
    assert refresh and refresh not in reply.text and refresh not in run.text
    customers = await api.call("onboarding_customers", route={"runId": run_id}, headers=JSON)
    assert customers.status == 200, customers.text
    found = {c["tenantId"]: c for c in customers.body["customers"]}
    assert set(tenants) <= set(found)
    assert [found[t]["missingRoles"] for t in tenants] == [[], ["Privileged Role Administrator"]]
    # neither the code nor the refresh token is in any record of the product or its SDKs (urllib3's are the test's
    # own browser at the sandbox)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if not r.name.startswith("urllib3"))
    assert "partner session handed to bulk onboarding" in logged
    assert answer.params["code"] not in logged and refresh not in logged
    # signing in again for this run renews its kept session (a new version), the same run
    again = entra(world, (await start(api, run=run_id))["_url"], PARTNER)
    renewed = await callback(api, again.params)
    assert renewed.status == 303 and renewed.headers["Location"] == location
    assert len(world.sb.control.state()["keyvault"]["secrets"][f"onboarding-session-{run_id}"]) == len(kept) + 1


async def test_another_partner_admin_cannot_take_a_run_over(api: Api, world: World) -> None:
    """A run's changes are audited with its admin's name: signing in as another account of the partner tenant for
    that run is refused (409 RunOwnedByOther, a page) and the run's kept session stays the first admin's."""
    first = await callback(api, entra(world, (await start(api))["_url"], PARTNER).params)
    run_id = first.headers["Location"].rsplit("/", 1)[1]
    kept = world.sb.control.state()["keyvault"]["secrets"][f"onboarding-session-{run_id}"]
    other = entra(world, (await start(api, run=run_id))["_url"], PARTNER_ADMIN)  # operator@: another account
    reply = await callback(api, other.params, accept=HTML)
    assert reply.status == 409 and "RunOwnedByOther" in reply.text and PARTNER in reply.text
    assert world.sb.control.state()["keyvault"]["secrets"][f"onboarding-session-{run_id}"] == kept


async def test_resuming_a_run_that_is_not_there_is_refused(api: Api, world: World) -> None:
    answer = entra(world, (await start(api, run="0" * 32))["_url"], PARTNER)
    reply = await callback(api, answer.params)
    assert reply.status == 404 and reply.code == "RunNotFound"


async def test_single_tenant_mode_has_no_partner_sign_in(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_MODE", "managed-identity")
    reply = await api.call("onboarding_signin", caller=OPERATOR, headers=JSON)
    assert reply.status == 409 and reply.code == "OnboardingNotApplicable"


async def test_no_code_or_verifier_is_logged(api: Api, world: World, handed: Recorder,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sent = await start(api)
    answer = entra(world, sent["_url"])
    await callback(api, answer.params)
    await callback(api, answer.params)  # the replay's refusal too
    [(_, redemption)] = handed.calls
    # the product's records and its SDKs' (urllib3's are the test's own browser at the sandbox)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if not r.name.startswith("urllib3"))
    assert "partner sign-in" in logged
    for secret in (redemption.code, redemption.code_verifier, sent["state"]):
        assert secret not in logged


async def test_an_abandoned_sign_in_expires_and_the_daily_sweep_deletes_its_session(
        api: Api, world: World, clock: SystemClock) -> None:
    """A run signed in for and never started (the tab closed): its session's Key Vault secret carries an expiry
    (`exp`, SESSION_LIFETIME after the sign-in); past it the run's session is refused (Key Vault itself would still
    answer it) and the rotation timer's daily sweep deletes it, and only it."""
    from shared.bulk_onboarding import SESSION_LIFETIME, sweep_sessions

    reply = await callback(api, entra(world, (await start(api))["_url"], PARTNER).params)
    run_id = reply.headers["Location"].rsplit("/", 1)[1]
    name = f"onboarding-session-{run_id}"
    signed_at = clock.now()
    exp = world.sb.control.state()["keyvault"]["secrets"][name][-1]["exp"]
    assert exp is not None and abs(exp - (signed_at + SESSION_LIFETIME).timestamp()) < 120
    async with bootstrap.services() as svc:
        assert svc.partner_sessions is not None
        assert await sweep_sessions(svc.partner_sessions, clock.now() + SESSION_LIFETIME / 2) == 0
    assert name in world.sb.control.state()["keyvault"]["secrets"]
    assert (await api.call("onboarding_customers", route={"runId": run_id}, headers=JSON)).status == 200
    clock.offset = SESSION_LIFETIME + timedelta(minutes=5)
    refused = await api.call("onboarding_customers", route={"runId": run_id}, headers=JSON)
    assert refused.status == 404 and refused.code == "PartnerSessionNotFound"
    assert name in world.sb.control.state()["keyvault"]["secrets"]  # refused, not yet deleted
    async with bootstrap.services() as svc:
        assert svc.partner_sessions is not None
        assert await sweep_sessions(svc.partner_sessions, svc.engine.clock.now()) == 1
    state = world.sb.control.state()["keyvault"]
    assert name not in state["secrets"] and name in state["deleted"]
    assert state["secrets"], "other secrets of the vault are not swept"


async def test_a_partner_tenant_without_the_sign_in_consent_gets_the_fix_and_nothing_is_made(
        api: Api, world: World) -> None:
    """Entra answers consent_required (AADSTS65001) when the partner tenant's admin never consented to
    DelegatedAdminRelationship.Read.All: the callback names the consent and the script that grants it; no run, no
    session is made."""
    msp = world.sb.settings["MSP_TENANT_ID"]
    world.sb.control.seed({"tenants": [{"id": msp, "delegatedGrants": {world.sb.settings["MSP_APP_CLIENT_ID"]: []}}]})
    answer = entra(world, (await start(api))["_url"], PARTNER)
    assert answer.params["error"] == "consent_required" and "code" not in answer.params
    reply = await callback(api, answer.params)
    assert (reply.status, reply.code) == (400, "PartnerSignInNotConsented"), reply.text
    message = reply.body["error"]["message"]
    assert "DelegatedAdminRelationship.Read.All" in message and "create-msp-app.sh" in message
    assert "has not consented" in message and answer.params["error_description"] not in message  # codes, not text
    runs = await api.call("onboarding_runs", headers=JSON)
    assert runs.body["runs"] == []
    assert not [n for n in world.sb.control.state()["keyvault"]["secrets"] if n.startswith("onboarding-session-")]
