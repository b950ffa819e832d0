"""Bulk onboarding over HTTP: a run the dashboard's partner sign-in made, its customers, its start, its progress and
its session, against the sandbox (Graph for discovery and the dry run, Proofpoint's org list, Key Vault) and
Azurite; the partner admin's delegated session is a fake (tests/fakes.py) until the delegated adapter lands. Every
answer is checked against the OpenAPI document (tests/api/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import bootstrap, partner_roles
from shared.bulk_onboarding import KEPT_SESSION_LIFETIME, session_secret_name, signed_in
from shared.entrypoints.access import Role
from tests.api.conftest import OPERATOR, Api
from tests.fakes import FakePartnerSession, FakePartnerSessions, Faults
from tests.rotation.conftest import Customer, customer_seed

pytestmark = pytest.mark.sandbox
CHANNEL = "msp-onboarding.example"
READER = ("reader@msp.example", (Role.READ.value,))


class Onboarding:
    def __init__(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        self.api = api
        self.sessions = FakePartnerSessions()
        self.session = FakePartnerSession(Faults())
        monkeypatch.setitem(bootstrap.DEFAULTS, "partner_sessions", self.sessions)
        monkeypatch.setenv("PROOFPOINT_CHANNEL_DOMAIN", CHANNEL)
        monkeypatch.setenv("PROOFPOINT_CHANNEL_STACK", "us1")
        api.world.seed_accounts()
        api.world.sb.control.seed({"proofpoint": {"channels": [{"domain": CHANNEL, "stack": "us1"}]}})

    def customer(self, name: str, roles: frozenset[str] | None = None) -> Customer:
        """A customer tenant in the sandbox (its Proofpoint app; the MSP app consented and owner, as after the
        partner session's install and owner steps), its Proofpoint org under the channel, and its GDAP entry."""
        customer, seed = customer_seed(name, days_left=200)
        seed["proofpoint"]["orgs"][0].update({"parent": CHANNEL, "name": name})
        self.api.world.sb.control.seed(seed)
        kwargs = {"roles": roles} if roles is not None else {}
        self.session.add_customer(name, domains=[customer.domain], tenant_id=customer.tenant_id, **kwargs)
        return customer

    async def sign_in(self) -> str:
        async with bootstrap.services() as svc:
            assert svc.onboarding_runs is not None
            run = await signed_in(svc.onboarding_runs, self.sessions, self.session, svc.engine.clock)
        return run.run_id


@pytest.fixture
def onboarding(api: Api, monkeypatch: pytest.MonkeyPatch) -> Onboarding:
    return Onboarding(api, monkeypatch)


async def test_a_signed_in_run_lists_customers_starts_and_reports_each_tenant(onboarding: Onboarding) -> None:
    api = onboarding.api
    contoso = onboarding.customer("Contoso")
    fabrikam = onboarding.customer("Fabrikam", roles=frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))
    run_id = await onboarding.sign_in()
    route = {"runId": run_id}
    signed = await api.call("onboarding_run", route=route)
    assert signed.status == 200 and signed.body["state"] == "signed-in" and signed.body["tenants"] == []

    listed = await api.call("onboarding_customers", route=route)
    assert listed.status == 200 and listed.body["admin"] == "partner-admin@msp.example"
    by_tenant = {c["tenantId"]: c for c in listed.body["customers"]}
    assert by_tenant[contoso.tenant_id]["missingRoles"] == [] and not by_tenant[contoso.tenant_id]["registered"]
    assert by_tenant[fabrikam.tenant_id]["missingRoles"] == ["Privileged Role Administrator"]

    started = await api.call("onboarding_start", "POST", route, {"tenants": "all", "method": "graph"})
    assert started.status == 200, started.body
    doc = started.body
    assert doc["state"] == "finished" and doc["counts"]["done"] == 1 and doc["counts"]["failed"] == 1
    tenants = {t["tenantId"]: t for t in doc["tenants"]}
    done = tenants[contoso.tenant_id]
    assert done["appId"] == contoso.app_id and done["proofpointDomain"] == contoso.domain
    assert [s["state"] for s in done["steps"]] == ["done"] * 5
    assert done["steps"][4]["detail"].startswith("would-rotate")  # the dry run, through Graph, of the new target
    failed = tenants[fabrikam.tenant_id]
    assert failed["error"]["code"] == "GdapRoleMissing" and "Privileged Role Administrator" in failed["error"]["fix"]

    target = await api.call("target", route={"tenantId": contoso.tenant_id, "appId": contoso.app_id})
    assert target.status == 200
    assert target.body["destinations"] == [{"name": "proofpoint", "kind": "proofpoint", "options": {
        "stack": "us1", "domain": contoso.domain, "account_secret": "proofpoint-api-account"}}]
    again = await api.call("onboarding_run", route=route, caller=READER)
    assert again.status == 200 and again.body == doc
    runs = await api.call("onboarding_runs", caller=READER)
    assert [r["runId"] for r in runs.body["runs"]] == [run_id] and "tenants" not in runs.body["runs"][0]
    # the session was forgotten with the run's end: a resume needs a new sign-in
    assert not onboarding.sessions.vault
    resumed = await api.call("onboarding_resume", "POST", route)
    assert (resumed.status, resumed.code) == (404, "PartnerSessionNotFound")
    token = onboarding.session.refresh_token.reveal()
    for reply in (signed, listed, started, again, runs, resumed):
        assert token not in reply.text


async def test_a_kept_session_is_forgotten_on_request(onboarding: Onboarding) -> None:
    api = onboarding.api
    onboarding.customer("Contoso")
    run_id = await onboarding.sign_in()
    route = {"runId": run_id}
    reply = await api.call("onboarding_start", "POST", route, {"tenants": "all", "keepSession": True,
                                                                "planOnly": True})
    assert reply.status == 200 and reply.body["planOnly"] and reply.body["keepSession"]
    assert list(onboarding.sessions.vault) == [session_secret_name(run_id)]
    # kept at the start for the refresh token's own lifetime, not the hours of a run's session
    left = onboarding.sessions.expires[session_secret_name(run_id)] - datetime.now(UTC)
    assert KEPT_SESSION_LIFETIME - timedelta(hours=1) < left <= KEPT_SESSION_LIFETIME
    assert (await api.call("onboarding_session", "DELETE", route, caller=READER)).status == 403
    gone = await api.call("onboarding_session", "DELETE", route)
    assert gone.status == 204 and not onboarding.sessions.vault
    assert (await api.call("onboarding_session", "DELETE", route)).status == 204  # gone already: still 204


async def test_refusals_are_json_with_a_code_and_change_nothing(onboarding: Onboarding, api: Api,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    onboarding.customer("Contoso")
    run_id = await onboarding.sign_in()
    route = {"runId": run_id}
    unknown = {"runId": uuid.uuid4().hex}
    cases: list[tuple[str, str, dict[str, str], Any, tuple[str, Any], int, str]] = [
        ("onboarding_run", "GET", {"runId": "nope"}, None, (OPERATOR, (Role.OPERATE.value,)), 400, "InvalidRunId"),
        ("onboarding_run", "GET", unknown, None, READER, 404, "RunNotFound"),
        ("onboarding_start", "POST", route, {"tenants": "all"}, READER, 403, "Forbidden"),
        ("onboarding_start", "POST", route, {}, (OPERATOR, (Role.OPERATE.value,)), 422, "InvalidRequest"),
        ("onboarding_start", "POST", route, {"tenants": ["x"]}, (OPERATOR, (Role.OPERATE.value,)), 422,
         "InvalidRequest"),
        ("onboarding_start", "POST", route, {"tenants": "all", "method": "fax"}, (OPERATOR, (Role.OPERATE.value,)),
         422, "InvalidRequest"),
        ("onboarding_start", "POST", route, {"tenants": [str(uuid.uuid4())]}, (OPERATOR, (Role.OPERATE.value,)),
         404, "CustomerNotFound"),
        ("onboarding_resume", "POST", route, None, (OPERATOR, (Role.OPERATE.value,)), 409, "RunNotStarted"),
        ("onboarding_customers", "GET", route, None, READER, 403, "Forbidden"),
        ("onboarding_start", "POST", unknown, {"tenants": "all"}, (OPERATOR, (Role.OPERATE.value,)), 404,
         "PartnerSessionNotFound"),
    ]
    for function, method, where, body, caller, status, code in cases:
        reply = await api.call(function, method, where, body, caller=caller)
        assert (reply.status, reply.code) == (status, code), (function, where, body, reply.text)
    doc = (await api.call("onboarding_run", route=route)).body
    assert doc["state"] == "signed-in" and doc["tenants"] == []
    monkeypatch.setitem(bootstrap.DEFAULTS, "partner_sessions", None)
    reply = await api.call("onboarding_start", "POST", route, {"tenants": "all"})
    assert (reply.status, reply.code) == (503, "PartnerSessionUnavailable")
    assert json.loads(reply.text)["error"]["message"]


async def test_a_run_longer_than_a_request_answers_202_and_resume_goes_on(onboarding: Onboarding,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.entrypoints import onboarding as routes

    api = onboarding.api
    first, second = onboarding.customer("Contoso"), onboarding.customer("Fabrikam")
    run_id = await onboarding.sign_in()
    route = {"runId": run_id}
    monkeypatch.setattr(routes, "BUDGET_SECONDS", 0.0)  # the request's time is up after the first tenant
    monkeypatch.setenv("ONBOARDING_CONCURRENCY", "1")
    started = await api.call("onboarding_start", "POST", route, {"tenants": "all"})
    assert started.status == 202, started.body
    assert started.headers["Retry-After"] == "2" and started.headers["Location"] == f"/api/onboarding/runs/{run_id}"
    assert started.body["state"] == "running" and started.body["counts"]["done"] == 1
    assert started.body["counts"]["pending"] == 1
    assert onboarding.sessions.vault  # still needed
    monkeypatch.setattr(routes, "BUDGET_SECONDS", 150.0)
    resumed = await api.call("onboarding_resume", "POST", route)
    assert resumed.status == 200 and resumed.body["state"] == "finished"
    assert {t["tenantId"] for t in resumed.body["tenants"] if t["state"] == "done"} == {first.tenant_id,
                                                                                        second.tenant_id}
    assert not onboarding.sessions.vault


async def test_a_partner_refusal_answers_its_fix_too(onboarding: Onboarding) -> None:
    """A PartnerRefused reaching a route (here the GDAP reads behind the customers list) answers its code, its
    cause AND its fix, the one thing the admin acts on (the answer carried code and message only before)."""
    from shared.errors import PartnerRefused

    onboarding.customer("Contoso")
    run_id = await onboarding.sign_in()
    onboarding.session.faults.add("partner.customers", lambda: PartnerRefused(
        "reading the GDAP relationships: Insufficient privileges", code="GdapReadDenied",
        fix="grant DelegatedAdminRelationship.Read.All in the partner tenant"))
    reply = await onboarding.api.call("onboarding_customers", route={"runId": run_id})
    assert (reply.status, reply.code) == (502, "GdapReadDenied")
    message = json.loads(reply.text)["error"]["message"]
    assert "Insufficient privileges" in message and "grant DelegatedAdminRelationship.Read.All" in message


async def test_the_budget_counts_the_starts_own_time(onboarding: Onboarding, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start reads every GDAP customer and writes their rows before it works (minutes for thousands of customers):
    the request's budget counts that time too, so a start that used it up works one tenant per worker and answers
    202 (the budget counted from the work's start before, so the request ran past the platform's 230 s cut)."""
    import asyncio

    from shared.entrypoints import onboarding as routes
    from tests.fakes import FakePartnerSession

    for name in ("Contoso", "Fabrikam", "Northwind"):
        onboarding.customer(name)
    run_id = await onboarding.sign_in()
    read = FakePartnerSession.customers

    async def slow_customers(self: FakePartnerSession) -> Any:
        await asyncio.sleep(3.5)  # the GDAP reads of a large partner
        return await read(self)

    monkeypatch.setattr(FakePartnerSession, "customers", slow_customers)
    monkeypatch.setattr(routes, "BUDGET_SECONDS", 3.0)
    monkeypatch.setenv("ONBOARDING_CONCURRENCY", "1")
    started = await onboarding.api.call("onboarding_start", "POST", {"runId": run_id}, {"tenants": "all"})
    assert started.status == 202, started.body
    assert started.body["counts"]["done"] == 1 and started.body["counts"]["pending"] == 2


async def test_the_run_list_is_paged_newest_first_and_refuses_a_bad_page(onboarding: Onboarding) -> None:
    """GET /api/onboarding/runs: pages of `limit`, each with the cursor of the next (and a Link header), newest
    first; a limit or cursor not one of ours is 400 InvalidQuery."""
    api = onboarding.api
    made = []
    for _ in range(5):
        made.append(await onboarding.sign_in())
        await asyncio.sleep(0.005)  # the list orders by the millisecond each run was made
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        page = await api.call("onboarding_runs", params=params, caller=READER)
        assert page.status == 200, page.body
        seen += [r["runId"] for r in page.body["runs"]]
        if page.body["next"] is None:
            assert "Link" not in page.headers
            break
        assert len(page.body["runs"]) == 2 and page.headers["Link"].endswith('>; rel="next"')
        params = {"limit": "2", "cursor": page.body["next"]}
    assert seen == made[::-1]
    default = await api.call("onboarding_runs", caller=READER)
    assert [r["runId"] for r in default.body["runs"]] == made[::-1] and default.body["next"] is None
    # An edited cursor of the right form is harmless: the page starts after its place (what Rotator.Read lists
    # anyway), never an error nor another partition's rows.
    first = await api.call("onboarding_runs", params={"limit": "2"}, caller=READER)
    place, _ = first.body["next"].split(".")
    edited = await api.call("onboarding_runs", params={"cursor": f"{place}.{'f' * 32}"}, caller=READER)
    assert edited.status == 200 and [r["runId"] for r in edited.body["runs"]] == made[::-1][2:]
    past = await api.call("onboarding_runs", params={"cursor": "9" * 15 + "." + "0" * 32}, caller=READER)
    assert (past.status, past.body) == (200, {"runs": [], "next": None})
    for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": " 7"}, {"limit": "٣"}, {"cursor": "x"},
                {"cursor": "1" * 15 + "." + "G" * 32}, {"page": "2"}):
        refused = await api.call("onboarding_runs", params=bad, caller=READER)
        assert (refused.status, refused.code) == (400, "InvalidQuery"), bad


async def test_the_daily_timer_prunes_a_finished_run_past_its_retention(onboarding: Onboarding,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation timer's daily sweep: a finished run is listed until ONBOARDING_RETENTION_DAYS after it finished,
    then gone from the list and its progress; the target it registered and its audit stay."""
    import azure.functions.timer as timer

    from shared.clock import SystemClock
    from tests.api.conftest import functions

    api = onboarding.api
    contoso = onboarding.customer("Contoso")
    run_id = await onboarding.sign_in()
    started = await api.call("onboarding_start", "POST", {"runId": run_id}, {"tenants": "all", "method": "graph"})
    assert started.status == 200 and started.body["state"] == "finished"
    ids = {"tenantId": contoso.tenant_id, "appId": contoso.app_id}
    async def trail() -> list[object]:
        async with bootstrap.services() as svc:
            return list(await svc.state.events(contoso.tenant_id, contoso.app_id))

    audit = await trail()
    assert any(e.step == "onboarding-owner" for e in audit)  # type: ignore[attr-defined]
    monkeypatch.setenv("ONBOARDING_RETENTION_DAYS", "30")
    for days, listed in ((29, [run_id]), (31, [])):
        monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(days=days)))
        await functions()["rotation_timer"](timer.TimerRequest(past_due=False))
        runs = await api.call("onboarding_runs", caller=READER)
        assert [r["runId"] for r in runs.body["runs"]] == listed
    gone = await api.call("onboarding_run", route={"runId": run_id}, caller=READER)
    assert (gone.status, gone.code) == (404, "RunNotFound")
    assert (await api.call("target", route=ids)).status == 200
    assert await trail() == audit


async def test_a_paused_customer_is_listed_as_disabled_pickable_and_its_run_says_what_to_do(
        onboarding: Onboarding) -> None:
    """A customer registered but disabled (paused, or its offboarding not finished) is no "onboarded" customer: the
    pick list says `disabled` (the dashboard offers it again), and a run stops it with the fixes, changing nothing."""
    api = onboarding.api
    paused, fresh = onboarding.customer("Contoso"), onboarding.customer("Fabrikam")
    put = await api.put(paused, {"customer": "Contoso", "enabled": False})
    assert put.status == 201, put.body
    run_id = await onboarding.sign_in()
    route = {"runId": run_id}
    listed = await api.call("onboarding_customers", route=route)
    assert listed.status == 200
    by_tenant = {c["tenantId"]: c for c in listed.body["customers"]}
    assert (by_tenant[paused.tenant_id]["registered"], by_tenant[paused.tenant_id]["disabled"]) == (True, True)
    assert (by_tenant[fresh.tenant_id]["registered"], by_tenant[fresh.tenant_id]["disabled"]) == (False, False)
    started = await api.call("onboarding_start", "POST", route, {"tenants": [paused.tenant_id], "method": "graph"})
    assert started.status == 200, started.body
    (tenant,) = started.body["tenants"]
    assert tenant["state"] == "failed" and tenant["error"]["code"] == "TargetDisabled"
    assert f"/api/targets/{paused.tenant_id}/{paused.app_id}" in tenant["error"]["fix"]
    target = await api.call("target", route={"tenantId": paused.tenant_id, "appId": paused.app_id})
    assert target.status == 200 and target.body["enabled"] is False and target.body["destinations"] == []
