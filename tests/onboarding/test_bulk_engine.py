"""Bulk onboarding on the fakes (tests/fakes.py): each step, each refusal with its cause and fix, idempotent re-runs,
a crash before and after every port call of a run (resumed by a new process), throttling, the concurrency bound, and
no secret in the run state, the audit log, the logs or the progress document."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from shared import partner_roles
from shared.bulk_onboarding import (
    GRAPH_APP_PERMISSIONS,
    TENANT_CLAIM,
    BulkOnboarding,
    InvalidTemplate,
    OnboardingConfig,
    TenantPick,
    check_template,
    engine_dry_run,
    parse_picks,
    render_destinations,
)
from shared.errors import Conflict, NotFound, Throttled
from shared.ports import InstallMethod, PartnerAdmin, ProofpointOrg, Work, WorkReason
from tests.fakes import (
    ROTATOR,
    WRITES,
    Crash,
    FakePartnerSession,
    FakeProofpointOrgs,
    FakeRuns,
    FakeWorld,
)

MSP_APP = ROTATOR.app_id
ADMIN = "partner-admin@msp.example"


class FakeWorkQueue:
    """The work queue (ports.WorkQueue): what was sent, each send a call the faults can strike."""

    def __init__(self, faults: Any) -> None:
        self.faults = faults
        self.sent: list[Work] = []

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        await self.faults.before("queue.enqueue")
        self.sent.append(work)
        await self.faults.after("queue.enqueue")


class BulkWorld:
    """The fakes of one MSP: customers under GDAP, their Proofpoint apps and orgs; a run is worked by `process()`."""

    def __init__(self, **config: Any) -> None:
        self.world = FakeWorld()
        self.faults = self.world.faults
        self.session = FakePartnerSession(self.faults, self.world.directory)
        self.orgs = FakeProofpointOrgs(self.faults)
        self.runs = FakeRuns(self.faults)
        self.queue = FakeWorkQueue(self.faults)
        self.sleeps: list[float] = []
        self.config = OnboardingConfig(msp_app_id=MSP_APP, **config)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def process(self) -> BulkOnboarding:
        """A process working runs (a new one after a crash)."""
        return BulkOnboarding(runs=self.runs, state=self.world.state, directory=self.world.directory, orgs=self.orgs,
                              dry_run=engine_dry_run(self.world.engine()), clock=self.world.clock,
                              config=self.config, sleep=self._sleep, queue=self.queue)

    def customer(self, name: str, *, roles: frozenset[str] | None = None, apps: int = 1, org: bool = True,
                 stack: str = "us2") -> str:
        """A GDAP customer with `apps` Proofpoint apps (not owned by the MSP app yet) and, with `org`, its org."""
        kwargs = {"roles": roles} if roles is not None else {}
        tenant = self.session.add_customer(name, **kwargs).customer.tenant_id
        for _ in range(apps):
            app_id = str(uuid.uuid4())
            self.world.directory.add_app(tenant, app_id, days_left=200)
            self.world.directory.unowned.add((tenant, app_id))
        if org:
            domain = self.session.tenants[tenant].domains[0]
            self.orgs.orgs.append(ProofpointOrg(name, domain, (domain,), stack))
        return tenant

    def apps(self, tenant: str) -> list[str]:
        return [a for (t, a) in self.world.directory.apps if t == tenant]

    async def run(self, picks: Sequence[TenantPick] | None = None, method: InstallMethod = InstallMethod.GRAPH,
                  **options: Any) -> dict[str, Any]:
        engine = self.process()
        run = await engine.start(self.session, picks, method, **options)
        return await engine.work(self.session, run.run_id)

    def events(self, step: str) -> list[Any]:
        return [e for e in self.world.state.events_ if e.step == step]


def tenant_doc(doc: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    return next(t for t in doc["tenants"] if t["tenantId"] == tenant_id)


def steps(t: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["state"] for s in t["steps"]}


async def test_every_step_for_every_customer() -> None:
    w = BulkWorld()
    tenants = [w.customer(n) for n in ("Contoso", "Fabrikam", "Northwind")]
    doc = await w.run()
    assert doc["state"] == "finished"
    assert doc["counts"] == {"total": 3, "pending": 0, "running": 0, "done": 3, "failed": 0, "skipped": 0}
    assert doc["startedBy"] == ADMIN
    for tenant in tenants:
        t = tenant_doc(doc, tenant)
        assert steps(t) == dict.fromkeys(("roles", "install", "owner", "register", "dry-run"), "done")
        fake = w.session.tenants[tenant]
        assert fake.service_principal == ROTATOR.object_id
        assert fake.granted == set(GRAPH_APP_PERMISSIONS) == {"Application.ReadWrite.OwnedBy", "AuditLog.Read.All",
                                                              "Directory.Read.All"}
        (app_id,) = w.apps(tenant)
        app = w.world.directory.app(tenant, app_id)
        assert fake.owners[app.object_id] == {ROTATOR.object_id}
        target = w.world.state.target(tenant, app_id)
        assert t["appId"] == app_id and t["proofpointDomain"] == fake.domains[0]
        (dest,) = target.destinations
        assert (dest.kind, dest.options["domain"], dest.options["stack"]) == ("proofpoint", fake.domains[0], "us2")
        assert target.customer == fake.customer.display_name
        # the dry run of a manual rotation of the registered target, owned now (else it would say not-owner)
        assert t["steps"][4]["detail"].startswith("would-rotate: would add a secret"), t["steps"][4]
        assert "push it to 1 destination(s)" in t["steps"][4]["detail"]
    # audit: each change in a customer tenant, with the admin's name, started then done
    actor = f"onboarding:{ADMIN}"
    for step, outcome in (("onboarding-service-principal", "created; granted Application.ReadWrite.OwnedBy, "
                           "AuditLog.Read.All, Directory.Read.All"), ("onboarding-owner", "added"),
                          ("onboarding-registry", "created")):
        events = w.events(step)
        assert Counter(e.outcome for e in events) == {"started": 3, outcome: 3}, step
        assert {e.actor for e in events} == {actor}
    assert {e.app_id for e in w.events("onboarding-service-principal")} == {MSP_APP}


async def test_a_missing_gdap_role_stops_that_tenant_before_anything_is_tried() -> None:
    w = BulkWorld()
    ok = w.customer("Contoso")
    no_grant = w.customer("Fabrikam", roles=frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))
    no_app_admin = w.customer("Tailspin", roles=frozenset({partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR}))
    readers = w.customer("Adatum", roles=frozenset({partner_roles.DIRECTORY_READERS}))
    doc = await w.run()
    assert tenant_doc(doc, ok)["state"] == "done"
    expected = {no_grant: ["Privileged Role Administrator"], no_app_admin: ["Cloud Application Administrator"],
                readers: ["Cloud Application Administrator", "Privileged Role Administrator"]}
    for tenant, roles in expected.items():
        t = tenant_doc(doc, tenant)
        assert t["state"] == "failed" and t["error"]["code"] == "GdapRoleMissing"
        for role in roles:
            assert role in t["error"]["message"] and role in t["error"]["fix"]
        assert "GDAP relationship" in t["error"]["fix"]
        assert steps(t)["roles"] == "failed" and steps(t)["install"] == "pending"
        fake = w.session.tenants[tenant]
        assert not fake.service_principal and not fake.granted and not fake.owners
        assert not [e for e in w.world.state.events_ if e.tenant_id == tenant]
    assert w.faults.counts["partner.install_app"] == 1  # only Contoso's: nothing tried where a role is missing
    assert "Directory Readers" in tenant_doc(doc, readers)["error"]["message"]  # what the admin has there


async def test_global_administrator_is_enough_and_partner_center_has_the_same_checks() -> None:
    w = BulkWorld()
    ga = w.customer("Contoso", roles=frozenset({partner_roles.GLOBAL_ADMINISTRATOR}))
    missing = w.customer("Fabrikam", roles=frozenset({partner_roles.APPLICATION_ADMINISTRATOR}))
    doc = await w.run(method=InstallMethod.PARTNER_CENTER)
    assert doc["method"] == "partner-center"
    assert tenant_doc(doc, ga)["state"] == "done"
    assert tenant_doc(doc, missing)["error"]["code"] == "GdapRoleMissing"


async def test_the_service_refusing_a_change_names_its_code_and_stops_only_that_tenant() -> None:
    """The roles looked enough, but the service refused (a relationship changed since the list was read)."""
    w = BulkWorld()
    a, b = w.customer("Contoso"), w.customer("Fabrikam")
    w.session.tenants[b].customer = w.session.tenants[b].customer.__class__(
        b, "Fabrikam", ("r",), frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    # the session the run works with reports the roles; the service itself refuses the grant
    real = w.session.customers

    async def claims_all_roles() -> list[Any]:
        return [c.__class__(c.tenant_id, c.display_name, c.relationship_ids,
                            frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR,
                                       partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR})) for c in await real()]

    w.session.customers = claims_all_roles  # type: ignore[method-assign]
    doc = await w.process().work(w.session, run.run_id)  # a later invocation: the customers read again
    t = tenant_doc(doc, b)
    assert t["state"] == "failed" and t["error"]["code"] == "Authorization_RequestDenied"
    assert steps(t)["install"] == "failed"
    assert tenant_doc(doc, a)["state"] == "done"
    refused = [e for e in w.events("onboarding-service-principal") if e.tenant_id == b]
    assert [e.outcome for e in refused] == ["started", "refused"]
    assert refused[1].error_code == "Authorization_RequestDenied"


async def test_no_proofpoint_app_and_several_candidates_stop_with_the_fix_then_an_explicit_app_id_decides() -> None:
    w = BulkWorld()
    none = w.customer("Contoso", apps=0)
    several = w.customer("Fabrikam", apps=2)
    doc = await w.run()
    t = tenant_doc(doc, none)
    assert (t["state"], t["error"]["code"]) == ("failed", "ProofpointAppNotFound")
    assert "PPE, Proofpoint, ModusCloud" in t["error"]["message"]
    t = tenant_doc(doc, several)
    assert (t["state"], t["error"]["code"]) == ("failed", "SeveralProofpointApps")
    assert all(app in t["error"]["message"] for app in w.apps(several)) and "appId" in t["error"]["fix"]
    assert steps(t)["install"] == "done" and steps(t)["owner"] == "failed"
    assert not w.world.state.rows  # nothing registered
    chosen = w.apps(several)[1]
    again = await w.run([TenantPick(several, app_id=chosen)])
    assert tenant_doc(again, several)["state"] == "done"
    assert [a for (t_, a) in w.world.state.rows if t_ == several] == [chosen]
    wrong = str(uuid.uuid4())
    doc = await w.run([TenantPick(none, app_id=wrong)])
    assert tenant_doc(doc, none)["error"]["code"] == "AppNotFound"


async def test_proofpoint_org_matched_on_verified_domains_none_several_or_picked() -> None:
    w = BulkWorld()
    alias = w.customer("Contoso", org=False)
    w.session.tenants[alias].domains = ["contoso.onmicrosoft.com", "contoso.com"]
    w.orgs.orgs.append(ProofpointOrg("Contoso Ltd", "contoso.com", ("contoso.com",), "eu1"))
    missing = w.customer("Fabrikam", org=False)
    twice = w.customer("Tailspin", org=False)
    w.session.tenants[twice].domains = ["tailspin.example", "tailspin-mail.example"]
    w.orgs.orgs += [ProofpointOrg("Tailspin", "tailspin.example", (), "us1"),
                    ProofpointOrg("Tailspin Mail", "tailspin-mail.example", (), "us1")]
    doc = await w.run()
    t = tenant_doc(doc, alias)
    assert t["state"] == "done" and t["proofpointDomain"] == "contoso.com"
    (dest,) = w.world.state.target(alias, t["appId"]).destinations
    assert (dest.options["domain"], dest.options["stack"]) == ("contoso.com", "eu1")
    t = tenant_doc(doc, missing)
    assert t["error"]["code"] == "ProofpointOrgNotFound" and "fabrikam.example" in t["error"]["message"]
    t = tenant_doc(doc, twice)
    assert t["error"]["code"] == "SeveralProofpointOrgs" and "proofpointDomain" in t["error"]["fix"]
    assert w.faults.counts["proofpoint.child_orgs"] == 1  # the org list is read once per process
    again = await w.run([TenantPick(twice, proofpoint_domain="tailspin-mail.example")])
    assert tenant_doc(again, twice)["proofpointDomain"] == "tailspin-mail.example"


async def test_a_second_run_skips_what_is_done_and_changes_nothing() -> None:
    w = BulkWorld()
    tenants = [w.customer(n) for n in ("Contoso", "Fabrikam")]
    await w.run()
    calls, events, rows = Counter(w.faults.counts), len(w.world.state.events_), dict(w.world.state.rows)
    doc = await w.run()
    assert doc["counts"]["skipped"] == 2 and doc["state"] == "finished"
    assert all(set(steps(tenant_doc(doc, t)).values()) == {"skipped"} for t in tenants)
    for call in ("partner.install_app", "partner.add_owner", "state.create_target", "state.record"):
        assert w.faults.counts[call] == calls[call], call
    assert len(w.world.state.events_) == events and w.world.state.rows == rows


async def test_re_running_the_steps_never_duplicates_owners_targets_or_grants() -> None:
    """A tenant onboarded by hand halfway (service principal there, owner added) and one registered by hand under
    another app: the run completes what is missing and says what was there."""
    w = BulkWorld()
    half = w.customer("Contoso")
    fake = w.session.tenants[half]
    (app_id,) = w.apps(half)
    await w.session.install_app(half, GRAPH_APP_PERMISSIONS[:1], InstallMethod.GRAPH)
    await w.session.add_owner(half, w.world.directory.app(half, app_id).object_id, ROTATOR.object_id)
    doc = await w.run()
    t = tenant_doc(doc, half)
    assert t["state"] == "done"
    install = next(s for s in t["steps"] if s["step"] == "install")["detail"]
    assert install == "service principal there already, granted AuditLog.Read.All, Directory.Read.All"
    assert "owner already" in next(s for s in t["steps"] if s["step"] == "owner")["detail"]
    assert fake.granted == set(GRAPH_APP_PERMISSIONS)
    assert list(fake.owners.values()) == [{ROTATOR.object_id}]


async def test_plan_only_changes_nothing() -> None:
    w = BulkWorld()
    ok = w.customer("Contoso")
    missing = w.customer("Fabrikam", roles=frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))
    doc = await w.run(plan_only=True)
    assert doc["planOnly"] is True
    t = tenant_doc(doc, ok)
    assert t["state"] == "done" and steps(t) == {"roles": "done", "install": "skipped", "owner": "skipped",
                                                 "register": "skipped", "dry-run": "skipped"}
    assert t["proofpointDomain"] == "contoso.example"
    assert tenant_doc(doc, missing)["error"]["code"] == "GdapRoleMissing"
    for call in ("partner.install_app", "partner.add_owner", "state.create_target", "state.record"):
        assert w.faults.counts[call] == 0, call


async def test_throttled_calls_are_retried_after_the_wait_asked_for() -> None:
    w = BulkWorld()
    a = w.customer("Contoso")
    w.faults.add("partner.install_app", lambda: Throttled("slow down", code="TooManyRequests", retry_after=7),
                 times=2)
    w.faults.add("partner.domains", lambda: Throttled("slow down", code="TooManyRequests", retry_after=3))
    doc = await w.run()
    assert tenant_doc(doc, a)["state"] == "done"
    assert sorted(w.sleeps) == [3, 7, 7]
    assert w.faults.counts["partner.install_app"] == 3


async def test_throttling_that_does_not_end_fails_the_tenant_with_a_fix_and_a_resume_finishes_it() -> None:
    w = BulkWorld(throttle_attempts=3)
    a, b = w.customer("Contoso"), w.customer("Fabrikam")
    w.faults.add("partner.add_owner", lambda: Throttled("slow down", code="TooManyRequests", retry_after=1), times=3)
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    doc = await engine.work(w.session, run.run_id)
    failed = [t for t in doc["tenants"] if t["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "TooManyRequests"
    assert "resume" in failed[0]["error"]["fix"]
    assert doc["counts"]["done"] == 1 and doc["state"] == "finished"
    resumed = await w.process().work(w.session, run.run_id)
    assert {tenant_doc(resumed, t)["state"] for t in (a, b)} == {"done"}
    assert tenant_doc(resumed, failed[0]["tenantId"])["error"] is None


async def test_concurrency_is_bounded_by_the_setting() -> None:
    w = BulkWorld(concurrency=3)
    for i in range(10):
        w.customer(f"Customer {i}")
    busy, peak = 0, 0
    real = w.session.install_app

    async def counted(*args: Any) -> Any:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0.001)
        try:
            return await real(*args)
        finally:
            busy -= 1

    w.session.install_app = counted  # type: ignore[method-assign]
    doc = await w.run()
    assert doc["counts"]["done"] == 10
    assert peak == 3


async def test_a_run_is_resumed_only_by_the_admin_who_started_it() -> None:
    w = BulkWorld()
    w.customer("Contoso")
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    other = FakePartnerSession(w.faults, w.world.directory)
    other.tenants = w.session.tenants
    other.admin = PartnerAdmin(other.admin.tenant_id, str(uuid.uuid4()), "someone@msp.example", "Someone")
    with pytest.raises(Conflict) as error:
        await engine.work(other, run.run_id)
    assert error.value.code == "RunOwnedByOther"
    assert not w.faults.counts["partner.install_app"]


async def test_picking_a_tenant_without_gdap_is_refused_before_anything_is_written() -> None:
    w = BulkWorld()
    w.customer("Contoso")
    with pytest.raises(NotFound) as error:
        await w.process().start(w.session, [TenantPick(str(uuid.uuid4()))], InstallMethod.GRAPH)
    assert error.value.code == "CustomerNotFound"
    assert not w.runs.rows and not w.runs.runs_
    # the refusal names the causes it may be and each one's fix (it named none before)
    assert all(word in error.value.message for word in ("Fix:", "tenant id", "expired", "renewed", "approval"))


async def test_the_budget_leaves_the_rest_for_a_resume() -> None:
    w = BulkWorld(concurrency=1)
    for i in range(3):
        w.customer(f"Customer {i}")
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    doc = await engine.work(w.session, run.run_id, budget_seconds=0)
    assert doc["state"] == "running" and doc["counts"]["pending"] + doc["counts"]["done"] == 3
    assert doc["counts"]["pending"] >= 2
    doc = await w.process().work(w.session, run.run_id)
    assert doc["state"] == "finished" and doc["counts"]["done"] == 3


# ------------------------------------------------------------------------------------------------ crash at every call


async def _reference_calls() -> list[tuple[str, int]]:
    w = BulkWorld()
    _setup(w)
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    w.faults.counts.clear()
    await engine.work(w.session, run.run_id)
    return [(call, n) for call, count in sorted(w.faults.counts.items()) for n in range(1, count + 1)]


def _setup(w: BulkWorld) -> list[str]:
    return [w.customer("Contoso"), w.customer("Fabrikam"),
            w.customer("Tailspin", roles=frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))]


CRASH_POINTS = asyncio.run(_reference_calls())


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("call", "nth"), CRASH_POINTS, ids=[f"{c}#{n}" for c, n in CRASH_POINTS])
async def test_a_crash_at_any_call_is_resumed_without_duplicates(call: str, nth: int, when: str) -> None:
    if when == "after" and not (call.startswith(WRITES) or call.startswith(("partner.install_app",
                                                                           "partner.add_owner", "runs.replace"))):
        pytest.skip("no work is done by this call: a crash after it is a crash before the next")
    w = BulkWorld(concurrency=2)
    a, b, c = _setup(w)
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    w.faults.counts.clear()
    w.faults.crash(call, when=when, nth=nth)
    with pytest.raises(Crash):
        await engine.work(w.session, run.run_id)
    w.faults.revive()
    # The dead worker's claim holds its tenants until it runs out: a resume at once leaves them running.
    claimed = [t["tenantId"] for t in (await w.process().progress(run.run_id))["tenants"] if t["state"] == "running"]
    early = await w.process().work(w.session, run.run_id)
    assert sorted(t["tenantId"] for t in early["tenants"] if t["state"] == "running") == sorted(claimed)
    w.world.clock.advance(TENANT_CLAIM)
    doc = await w.process().work(w.session, run.run_id)
    assert doc["state"] == "finished"
    assert [tenant_doc(doc, t)["state"] for t in (a, b, c)] == ["done", "done", "failed"]
    assert tenant_doc(doc, c)["error"]["code"] == "GdapRoleMissing"
    for tenant in (a, b):
        fake = w.session.tenants[tenant]
        assert fake.granted == set(GRAPH_APP_PERMISSIONS)
        assert list(fake.owners.values()) == [{ROTATOR.object_id}]
        assert [k for k in w.world.state.rows if k[0] == tenant] == [(tenant, w.apps(tenant)[0])]
        t = tenant_doc(doc, tenant)
        assert set(steps(t).values()) == {"done"}
        # the trail has every change, each started and ended once (a crash between them shows as a second start)
        for step in ("onboarding-service-principal", "onboarding-owner", "onboarding-registry"):
            outcomes = [e.outcome for e in w.events(step) if e.tenant_id == tenant]
            assert outcomes.count("started") in (1, 2), (step, outcomes)
            ended = [o for o in outcomes if o != "started"]
            assert ended and ended[-1] in ("created; granted Application.ReadWrite.OwnedBy, AuditLog.Read.All, "
                                           "Directory.Read.All",
                                           "present; permissions present", "added", "present", "created"), outcomes
        created = [e for e in w.events("onboarding-registry") if e.tenant_id == tenant and e.outcome == "created"]
        assert len(created) <= 1
        # its first inventory was sent (twice at most: a crash between the send and the step's record)
        assert 1 <= w.queue.sent.count(Work(tenant, w.apps(tenant)[0], f"manual:{ADMIN}", WorkReason.INVENTORY)) <= 2
    assert not [m for m in w.queue.sent if m.tenant_id == c]


# ------------------------------------------------------------------------------------------------ no secrets


async def test_no_token_or_secret_value_in_rows_events_logs_or_the_document(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    w = BulkWorld()
    for name in ("Contoso", "Fabrikam"):
        w.customer(name)
    w.customer("Tailspin", apps=2)
    doc = await w.run()
    secrets = [w.session.refresh_token.reveal(), *(v.secret for v in w.world.directory.values.values())]
    assert len(secrets) == 5
    stored = json.dumps(doc) + repr(w.runs.rows) + repr(w.runs.runs_) + repr(w.world.state.events_) \
        + repr(w.world.state.rows) + caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    for value in secrets:
        assert value not in stored
    assert "onboarding tenant finished" in caplog.text  # the logs were captured


# ------------------------------------------------------------------------------------------------ pure parts


def test_the_template_fills_placeholders_and_is_validated() -> None:
    template = [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": "{stack}", "domain": "{domain}", "account_secret": "proofpoint-api-account"}},
        {"name": "portal", "kind": "notify-only", "options": {"instructions": "Paste it for {customer} ({tenantId})"}},
    ]
    check_template(template)
    dests = render_destinations(template, {"tenantId": "t1", "customer": "Contoso", "domain": "contoso.com",
                                           "stack": "eu1"})
    assert dests[0].options == {"stack": "eu1", "domain": "contoso.com", "account_secret": "proofpoint-api-account"}
    assert dests[1].options["instructions"] == "Paste it for Contoso (t1)"
    for bad, why in (([], "non-empty"), ([{"name": "p", "kind": "proofpoint", "options": {"domain": "{nope}"}}],
                                         "unknown placeholder {nope}"),
                     ([{"name": "p", "kind": "proofpoint", "options": {"stack": "{stack}"}}], "domain"),
                     ([template[0], template[0]], "unique"),
                     ([{"name": "x", "kind": "carrier-pigeon"}], "kind")):
        with pytest.raises(InvalidTemplate, match=why):
            check_template(bad)


def test_run_requests_name_all_or_valid_tenants() -> None:
    t = str(uuid.uuid4()).upper()
    assert parse_picks("all") is None
    assert parse_picks([t]) == [TenantPick(t.lower())]
    app = str(uuid.uuid4())
    assert parse_picks([{"tenantId": t, "appId": app, "proofpointDomain": "Contoso.com"}]) == [
        TenantPick(t.lower(), app, "contoso.com")]
    for bad, field in (("some", "tenants"), ([], "tenants"), (["x"], "tenants[0].tenantId"),
                       ([{"tenantId": t, "secret": "x"}], "tenants[0]"), ([{"tenantId": t, "appId": "x"}], "appId"),
                       ([{"tenantId": t, "proofpointDomain": "not a domain"}], "proofpointDomain"), ([t, t], "once")):
        with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse_picks(bad)


# ------------------------------------------------------------------------------------------------ the web flow


async def test_a_web_run_keeps_its_session_under_its_name_until_it_finishes() -> None:
    from shared.bulk_onboarding import RunState, release_session, session_secret_name, signed_in
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    a = w.customer("Contoso")
    w.customer("Fabrikam")
    sessions = FakePartnerSessions()
    run = await signed_in(w.runs, sessions, w.session, w.world.clock)
    name = session_secret_name(run.run_id)
    assert run.state is RunState.SIGNED_IN and list(sessions.vault) == [name]
    engine = w.process()
    with pytest.raises(Conflict) as error:
        await engine.work(w.session, run.run_id)
    assert error.value.code == "RunNotStarted"
    await engine.start(await sessions.open(name), [TenantPick(a)], InstallMethod.GRAPH, run_id=run.run_id)
    with pytest.raises(Conflict) as error:  # started once only
        await engine.start(w.session, [TenantPick(a)], InstallMethod.GRAPH, run_id=run.run_id)
    assert error.value.code == "RunStarted"
    assert not await release_session(w.runs, sessions, run.run_id)  # still running: the session is needed
    doc = await engine.work(await sessions.open(name), run.run_id)
    assert doc["state"] == "finished" and doc["counts"]["total"] == 1
    assert await release_session(w.runs, sessions, run.run_id)
    assert not sessions.vault
    # resuming later needs a new sign-in, which renews the run's session
    again = await signed_in(w.runs, sessions, w.session, w.world.clock, run.run_id)
    assert again.run_id == run.run_id and list(sessions.vault) == [name]


async def test_a_kept_session_stays_after_the_run_until_forgotten() -> None:
    from shared.bulk_onboarding import release_session, session_secret_name, signed_in
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    w.customer("Contoso")
    sessions = FakePartnerSessions()
    run = await signed_in(w.runs, sessions, w.session, w.world.clock)
    engine = w.process()
    await engine.start(w.session, None, InstallMethod.GRAPH, run_id=run.run_id, keep_session=True)
    doc = await engine.work(w.session, run.run_id)
    assert doc["state"] == "finished" and doc["keepSession"] is True
    assert not await release_session(w.runs, sessions, run.run_id)
    assert list(sessions.vault) == [session_secret_name(run.run_id)]
    assert await release_session(w.runs, sessions, run.run_id, force=True)
    assert not sessions.vault


async def test_another_admin_cannot_take_over_a_signed_in_run() -> None:
    from shared.bulk_onboarding import signed_in
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    w.customer("Contoso")
    sessions = FakePartnerSessions()
    run = await signed_in(w.runs, sessions, w.session, w.world.clock)
    other = FakePartnerSession(w.faults, w.world.directory)
    other.tenants = w.session.tenants
    other.admin = PartnerAdmin(other.admin.tenant_id, str(uuid.uuid4()), "someone@msp.example", "Someone")
    for attempt in (w.process().start(other, None, InstallMethod.GRAPH, run_id=run.run_id),
                    signed_in(w.runs, sessions, other, w.world.clock, run.run_id)):
        with pytest.raises(Conflict) as error:
            await attempt
        assert error.value.code == "RunOwnedByOther"
    assert sessions.sessions[f"onboarding-session-{run.run_id}"] is w.session


async def test_a_service_principal_not_yet_known_to_the_token_service_is_waited_for() -> None:
    """Entra answers AADSTS700016 for a service principal made moments ago: discovery waits and tries again, and a
    tenant where it never arrives stops with the code and "resume later"."""
    from shared.errors import Unreachable

    w = BulkWorld(propagation_attempts=3, propagation_wait=10.0)
    a = w.customer("Contoso")
    w.faults.add("directory.find_applications", lambda: Unreachable("AADSTS700016: not found", code="AADSTS700016"),
                 times=2)
    doc = await w.run()
    assert tenant_doc(doc, a)["state"] == "done" and w.sleeps == [10.0, 10.0]
    b = w.customer("Fabrikam")
    w.faults.add("directory.find_applications", lambda: Unreachable("AADSTS700016: not found", code="AADSTS700016"),
                 nth=w.faults.counts["directory.find_applications"] + 1, times=3)
    doc = await w.run([TenantPick(b)])
    t = tenant_doc(doc, b)
    assert t["error"]["code"] == "AADSTS700016" and "resume the run in a few minutes" in t["error"]["fix"]


async def test_the_registry_is_read_once_per_run_not_once_per_tenant() -> None:
    """Discovery's `registered` flag and the skip of onboarded tenants come from one read of the registry per run: a
    run over many customers does not read the whole registry for each."""
    w = BulkWorld()
    for i in range(6):
        w.customer(f"Customer {i}")
    await w.run()
    assert w.faults.counts["state.list_targets"] == 1
    assert w.faults.counts["directory.find_applications"] == 6


async def test_a_start_interrupted_before_the_run_row_leaves_nothing_a_later_start_works() -> None:
    """A start of a signed-in run that crashed after writing some tenants' rows (another pick, another appId): the
    next start works exactly its own pick, with its own choices."""
    from shared.bulk_onboarding import signed_in
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    a, b, c = w.customer("Contoso"), w.customer("Fabrikam"), w.customer("Northwind")
    run = await signed_in(w.runs, FakePartnerSessions(), w.session, w.world.clock)
    w.faults.crash("runs.replace_run")
    with pytest.raises(Crash):
        await w.process().start(w.session, [TenantPick(a, str(uuid.uuid4())), TenantPick(c)], InstallMethod.GRAPH,
                                run_id=run.run_id)
    w.faults.revive()
    engine = w.process()
    await engine.start(w.session, [TenantPick(a), TenantPick(b)], InstallMethod.GRAPH, run_id=run.run_id)
    assert {t["tenantId"] for t in (await engine.progress(run.run_id))["tenants"]} == {a, b}
    doc = await engine.work(w.session, run.run_id)
    assert doc["state"] == "finished" and doc["counts"]["total"] == 2 and doc["counts"]["done"] == 2
    assert tenant_doc(doc, a)["appId"] == w.apps(a)[0]  # the later start's choice (discovery), not the lost one's
    assert not w.session.tenants[c].service_principal


async def test_two_starts_at_once_the_run_works_exactly_the_winners_pick() -> None:
    """Two starts of one signed-in run at once (two tabs): one wins, the other gets RunStarted, and the run works
    exactly the winner's tenants, not the loser's rows."""
    from shared.bulk_onboarding import signed_in
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    a, b = w.customer("Contoso"), w.customer("Fabrikam")
    run = await signed_in(w.runs, FakePartnerSessions(), w.session, w.world.clock)
    hold = w.faults.hold("runs.replace_run")  # the first start waits just before its run row
    loser = asyncio.create_task(w.process().start(w.session, [TenantPick(a)], InstallMethod.GRAPH,
                                                  run_id=run.run_id))
    await hold.reached.wait()
    engine = w.process()
    await engine.start(w.session, [TenantPick(b)], InstallMethod.GRAPH, run_id=run.run_id)
    hold.released.set()
    with pytest.raises(Conflict) as error:
        await loser
    assert error.value.code == "RunStarted"
    doc = await engine.work(w.session, run.run_id)
    assert [t["tenantId"] for t in doc["tenants"]] == [b] and doc["counts"]["done"] == 1
    assert not w.session.tenants[a].service_principal


async def test_the_sweep_forgets_exactly_the_sessions_past_their_expiry() -> None:
    """A run signed in and abandoned, a run abandoned mid-way, a run whose admin kept the session: the sweep deletes
    the first two once SESSION_LIFETIME has passed since their sign-in, the kept one only after its own lifetime."""
    from datetime import timedelta

    from shared.bulk_onboarding import (
        KEPT_SESSION_LIFETIME,
        SESSION_LIFETIME,
        session_expiry,
        session_secret_name,
        signed_in,
        sweep_sessions,
    )
    from tests.fakes import FakePartnerSessions

    w = BulkWorld()
    w.customer("Contoso")
    sessions = FakePartnerSessions()
    now = w.world.clock.now()
    abandoned = await signed_in(w.runs, sessions, w.session, w.world.clock)
    mid = await signed_in(w.runs, sessions, w.session, w.world.clock)
    await w.process().start(w.session, None, InstallMethod.GRAPH, run_id=mid.run_id)
    kept_run = await signed_in(w.runs, sessions, w.session, w.world.clock)
    started = await w.process().start(w.session, None, InstallMethod.GRAPH, run_id=kept_run.run_id,
                                      keep_session=True)
    await sessions.keep(session_secret_name(kept_run.run_id), w.session, session_expiry(started, now))
    assert await sweep_sessions(sessions, now + SESSION_LIFETIME - timedelta(minutes=1)) == 0
    assert await sweep_sessions(sessions, now + SESSION_LIFETIME) == 2
    assert list(sessions.vault) == [session_secret_name(kept_run.run_id)]
    assert abandoned.run_id != mid.run_id
    assert await sweep_sessions(sessions, now + KEPT_SESSION_LIFETIME) == 1 and not sessions.vault


async def test_a_tenant_whose_domains_cannot_be_read_fails_with_the_cause_not_stuck_running() -> None:
    """Reading the customer's verified domains (to match its Proofpoint org) refused or failing is the tenant's
    failure with its cause and fix, in a plan-only run too; the run finishes (it was left `running` before)."""
    from shared.errors import PartnerRefused, Unreachable

    for plan_only, error in ((True, PartnerRefused("403: denied", code="MissingGdapRole", fix="a role")),
                             (False, Unreachable("Graph answered 503", code="ServiceUnavailable"))):
        w = BulkWorld()
        a = w.customer("Contoso")
        w.faults.add("partner.domains", lambda e=error: e, times=10)  # type: ignore[misc]
        doc = await w.run(plan_only=plan_only)
        t = tenant_doc(doc, a)
        assert doc["state"] == "finished" and t["state"] == "failed", doc
        assert t["error"]["code"] == error.code and "verified domains could not be read" in t["error"]["message"]
        assert "proofpointDomain" in t["error"]["fix"]


async def test_a_plan_of_a_customer_the_msp_app_is_not_in_yet_is_a_plan_not_a_failure() -> None:
    """Before the install Entra gives the admin no token in a new customer's tenant (AADSTS65001, the adapter's
    AppNotConsented), so its verified domains cannot be read: a plan-only run says so for that tenant and finishes
    it done (roles checked, nothing changed), instead of failing every new customer with "resume later". A picked
    Proofpoint org is still checked; any other refusal to read the domains still fails the tenant."""
    from shared.errors import PartnerRefused

    w = BulkWorld()
    fresh = w.customer("Contoso")
    picked = w.customer("Fabrikam")
    w.faults.add("partner.domains", lambda: PartnerRefused("AADSTS65001: not consented", code="AppNotConsented",
                                                           fix="install it"), times=10)
    doc = await w.run([TenantPick(fresh), TenantPick(picked, proofpoint_domain="fabrikam.example")], plan_only=True)
    assert doc["state"] == "finished" and doc["counts"]["failed"] == 0, doc
    t = tenant_doc(doc, fresh)
    assert t["state"] == "done" and t["error"] is None and t["proofpointDomain"] is None
    assert steps(t) == {"roles": "done", "install": "skipped", "owner": "skipped", "register": "skipped",
                        "dry-run": "skipped"}
    register = next(s for s in t["steps"] if s["step"] == "register")["detail"]
    assert "not in this tenant yet" in register and "proofpointDomain" in register
    assert tenant_doc(doc, picked)["proofpointDomain"] == "fabrikam.example"
    for call in ("partner.install_app", "partner.add_owner", "state.create_target", "state.record"):
        assert w.faults.counts[call] == 0, call
    # a real run of the same customer is not excused: the install came first, so the refusal is the tenant's
    w2 = BulkWorld()
    again = w2.customer("Contoso")
    w2.faults.add("partner.domains", lambda: PartnerRefused("AADSTS65001: not consented", code="AppNotConsented",
                                                            fix="install it"), times=10)
    t2 = tenant_doc(await w2.run(), again)
    assert t2["state"] == "failed" and t2["error"]["code"] == "AppNotConsented"


@pytest.mark.parametrize("retry_after, waits", [(-5.0, [2, 4]), (float("nan"), [2, 4]), (0.0, [2, 4]),
                                                (None, [2, 4]), (float("inf"), [120, 120]), (1e9, [120, 120]),
                                                (3.5, [3.5, 3.5])])
async def test_a_throttled_call_waits_even_when_retry_after_is_no_wait(retry_after: float | None,
                                                                      waits: list[float]) -> None:
    """Retry-After as the adapters parse it (float(): "-5", "nan", "inf" pass): a value that is no wait backs off
    instead of asking the throttling service again at once (it slept 0 s before); a huge one is capped."""
    w = BulkWorld()
    a = w.customer("Contoso")
    w.faults.add("partner.install_app", lambda: Throttled("slow down", code="TooManyRequests",
                                                          retry_after=retry_after), times=2)
    doc = await w.run()
    assert tenant_doc(doc, a)["state"] == "done"
    assert w.sleeps == waits


PORTAL = {"name": "portal", "kind": "http", "options": {"url": "https://portal.example/customers/{customer}/secret",
                                                         "method": "POST", "auth_secret": "portal-key"}}
NOTE = {"name": "note", "kind": "notify-only", "options": {"instructions": "Paste it for {customer}"}}


@pytest.mark.parametrize("name, path", [("Contoso Ltd", "Contoso%20Ltd"), ("A/B?x=1#y", "A%2FB%3Fx%3D1%23y"),
                                        ("Ünïcode", "%C3%9Cn%C3%AFcode"), ("Plain", "Plain")])
def test_a_placeholder_in_a_url_is_one_percent_encoded_path_segment(name: str, path: str) -> None:
    """A customer's name as Partner Center has it, placed in the template's URL: encoded (RFC 3986), so a space no
    longer voids the URL and '/', '?', '#' make no path, query or fragment of their own; elsewhere as it is."""
    dest, note = render_destinations([PORTAL, NOTE], {"tenantId": "t1", "customer": name, "domain": "c.com",
                                                      "stack": "us1"}, frozenset({"portal.example"}))
    assert dest.options["url"] == f"https://portal.example/customers/{path}/secret"
    assert note.options["instructions"] == f"Paste it for {name}"


async def test_a_customer_the_template_does_not_fit_stops_alone_with_the_cause() -> None:
    """The template passed its check with a sample customer ("Contoso"); one whose name makes it too long (an option
    holds 2,048 characters; the name is here ten times, 200 characters long) stops that tenant at register with the
    cause and the fix, and the run goes on. Before, InvalidTemplate escaped the engine: the run died (a 500 on the
    dashboard), the tenant left running."""
    long_note = {"name": "note", "kind": "notify-only", "options": {"instructions": " ".join(["{customer}"] * 11)}}
    w = BulkWorld(template=(PORTAL, long_note), allowed_hosts=frozenset({"portal.example"}))
    check_template([PORTAL, long_note], frozenset({"portal.example"}))
    odd = w.customer("N" * 200)
    fine = w.customer("Contoso Ltd")
    doc = await w.run()
    assert doc["state"] == "finished", doc
    t = tenant_doc(doc, odd)
    assert t["state"] == "failed" and t["error"]["code"] == "InvalidTemplate"
    assert "ONBOARDING_DESTINATIONS" in t["error"]["fix"] and steps(t)["register"] == "failed"
    assert tenant_doc(doc, fine)["state"] == "done"


async def test_a_customer_name_from_partner_center_is_registered_as_the_registry_takes_one() -> None:
    """Partner Center's display name of a customer is another service's text: registered as the registry takes a
    name from a person (one line, NFC, no control, format or separator characters, 200 at most), so no alert,
    ticket or export gets a second line from it. It was stored as it came before."""
    w = BulkWorld(template=(PORTAL, NOTE), allowed_hosts=frozenset({"portal.example"}))
    odd = w.customer("  Odd\nName\u200b Ltd\u2028\tCafe\u0301  ")
    doc = await w.run()
    assert tenant_doc(doc, odd)["state"] == "done", doc
    [app] = w.apps(odd)
    target, _ = await w.world.state.get_target(odd, app)
    assert target.customer == "Odd Name Ltd Caf\u00e9"
    assert target.destinations[1].options["instructions"] == "Paste it for Odd Name Ltd Caf\u00e9"


async def test_a_half_offboarded_or_paused_target_is_reported_with_both_ways_on_not_skipped_as_onboarded() -> None:
    """Issue 23 re-check: a customer whose offboarding stopped halfway (its target registered and disabled) and one
    paused by hand showed as "onboarded already" in a new run. Each stops at register naming what it is and both
    fixes; nothing is changed in the tenant; once re-enabled a resume skips it as onboarded, once the offboarding is
    finished a resume onboards it anew."""
    from dataclasses import replace

    from shared.offboarding import OffboardOptions, OffboardPorts, offboard
    from tests.fakes import Crash, FakeRetention

    w = BulkWorld()
    leaving, paused, onboarded = (w.customer(n) for n in ("Contoso", "Fabrikam", "Northwind"))
    await w.run()
    ports = OffboardPorts(w.world.state, w.world.directory, w.world.secrets,
                          FakeRetention(w.faults, w.world.secrets), w.world.clock.now,
                          "c11e0000-0000-4000-8000-000000000001", None)
    (leaving_app,) = w.apps(leaving)
    w.faults.crash("state.delete_target")  # the offboarding dies before its last step
    with pytest.raises(Crash):
        await offboard(ports, leaving, leaving_app, OffboardOptions(), retention_days=90, actor="alice@msp.example")
    w.faults.revive()
    (target, etag), = [(t, e) for t, e in await w.world.state.list_targets() if t.tenant_id == paused]
    await w.world.state.replace_target(replace(target, enabled=False), etag)
    calls = Counter(w.faults.counts)

    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    doc = await engine.work(w.session, run.run_id)
    for call in ("partner.install_app", "partner.add_owner", "state.create_target"):
        assert w.faults.counts[call] == calls[call], call
    assert tenant_doc(doc, onboarded)["state"] == "skipped"
    off = tenant_doc(doc, leaving)
    assert off["state"] == "failed" and off["error"]["code"] == "TargetOffboarding"
    assert steps(off)["register"] == "failed" and steps(off)["install"] == "pending"
    assert "being offboarded" in off["error"]["message"] and leaving_app in off["error"]["message"]
    assert f"/api/targets/{leaving}/{leaving_app}/offboard" in off["error"]["fix"]
    assert '"enabled": true' in off["error"]["fix"]
    stopped = tenant_doc(doc, paused)
    assert stopped["state"] == "failed" and stopped["error"]["code"] == "TargetDisabled"
    assert "paused" in stopped["error"]["message"] and '"enabled": true' in stopped["error"]["fix"]
    assert "offboard" in stopped["error"]["fix"]

    # The fixes: the paused one re-enabled, the offboarding finished (once its lease has run out).
    (target, etag), = [(t, e) for t, e in await w.world.state.list_targets() if t.tenant_id == paused]
    await w.world.state.replace_target(replace(target, enabled=True), etag)
    w.world.clock.advance(timedelta(minutes=6))
    await offboard(ports, leaving, leaving_app, OffboardOptions(), retention_days=90, actor="alice@msp.example")
    doc = await w.process().work(w.session, run.run_id)
    assert tenant_doc(doc, paused)["state"] == "skipped"
    assert set(steps(tenant_doc(doc, paused)).values()) == {"skipped"}
    again = tenant_doc(doc, leaving)
    assert again["state"] == "done" and again["error"] is None
    assert w.faults.counts["state.create_target"] == calls["state.create_target"] + 1


async def test_a_registered_customer_s_first_inventory_is_queued_once_not_left_for_the_daily_pass() -> None:
    """Issue 25 via the issue 23 re-check: a tenant onboarded waited for the next daily inventory pass. Register sends
    one `inventory` message per customer registered (the worker reads it); none for a tenant skipped, failed before
    register or only planned; a queue that cannot be written costs nothing but the wait, and the step says so."""
    from shared.errors import Unreachable

    w = BulkWorld()
    first, second = w.customer("Contoso"), w.customer("Fabrikam")
    lacking = w.customer("Tailspin", roles=frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}))
    await w.run(plan_only=True)
    assert w.queue.sent == []
    doc = await w.run()
    assert sorted(w.queue.sent, key=lambda m: m.tenant_id) == sorted(
        (Work(t, w.apps(t)[0], f"manual:{ADMIN}", WorkReason.INVENTORY) for t in (first, second)),
        key=lambda m: m.tenant_id)
    for t in (first, second):
        register = next(s for s in tenant_doc(doc, t)["steps"] if s["step"] == "register")
        assert register["detail"].endswith("; its first credential inventory is queued")
    assert tenant_doc(doc, lacking)["state"] == "failed"
    await w.run()  # a second run skips them: nothing sent again
    assert len(w.queue.sent) == 2

    down = w.customer("Northwind")
    w.faults.add("queue.enqueue", lambda: Unreachable("queue down", code="QueueUnavailable"),
                 nth=w.faults.counts["queue.enqueue"] + 1)
    doc = await w.run([TenantPick(down)])
    t = tenant_doc(doc, down)
    assert t["state"] == "done" and len(w.queue.sent) == 2
    register = next(s for s in t["steps"] if s["step"] == "register")["detail"]
    assert "comes with the next daily inventory pass (the work queue answered QueueUnavailable)" in register

    alone = w.customer("Adatum")
    engine = w.process()
    engine.queue = None  # a process without a work queue (the command line without WORK_QUEUE)
    run = await engine.start(w.session, [TenantPick(alone)], InstallMethod.GRAPH)
    doc = await engine.work(w.session, run.run_id)
    assert next(s for s in tenant_doc(doc, alone)["steps"] if s["step"] == "register")["detail"].endswith(
        "its first credential inventory comes with the next daily inventory pass")


async def test_two_resumes_at_once_work_each_tenant_once_each_change_and_audit_event_once() -> None:
    """Issue 23 re-check: a second resume (another tab, the CLI beside the dashboard) took over a tenant another
    worker was in the middle of, so its calls and audit events repeated. The worker's claim keeps the second resumer
    off it; the second works what nobody holds, and both runs end with every tenant done once."""
    w = BulkWorld(concurrency=1)
    first, second = w.customer("Contoso"), w.customer("Fabrikam")
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    hold = w.faults.hold("partner.add_owner", nth=1)  # the first worker is in its first tenant's owner call
    working = asyncio.create_task(engine.work(w.session, run.run_id))
    await asyncio.wait_for(hold.reached.wait(), 5)
    other = await w.process().work(w.session, run.run_id)  # the second resume, meanwhile
    held = [t for t in other["tenants"] if t["state"] == "running"]
    assert len(held) == 1 and steps(held[0])["install"] == "done" and steps(held[0])["owner"] == "pending"
    assert other["counts"]["done"] == 1 and other["state"] == "running"
    from shared.onboard_cli import summary
    assert "1 running: another resume works on them" in summary(other) and "(3 minutes)" in summary(other)
    hold.released.set()
    doc = await working
    assert doc["state"] == "finished" and doc["counts"]["done"] == 2
    assert w.faults.counts["partner.install_app"] == 2 and w.faults.counts["partner.add_owner"] == 2
    assert w.faults.counts["state.create_target"] == 2
    for tenant in (first, second):
        for step in ("onboarding-service-principal", "onboarding-owner", "onboarding-registry"):
            outcomes = [e.outcome for e in w.events(step) if e.tenant_id == tenant]
            assert len(outcomes) == 2 and outcomes[0] == "started", (step, outcomes)
        assert [m.tenant_id for m in w.queue.sent].count(tenant) == 1


async def test_a_claim_is_kept_through_a_long_throttling_wait_and_given_up_when_the_tenant_ends() -> None:
    """A throttled call may wait minutes (Retry-After up to max_wait_seconds, five tries): the claim is renewed
    before each wait so it covers it, and cleared once the tenant finished."""
    w = BulkWorld(max_wait_seconds=600)
    tenant = w.customer("Contoso")
    engine = w.process()
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    claims: list[Any] = []

    async def sleep(seconds: float) -> None:
        row, _ = await w.runs.get_tenant(run.run_id, tenant)
        claims.append(row.claimed_until - w.world.clock.now())
        w.world.clock.advance(timedelta(seconds=seconds))

    engine.sleep = sleep
    w.faults.add("partner.install_app", lambda: Throttled("slow down", code="TooManyRequests", retry_after=500))
    doc = await engine.work(w.session, run.run_id)
    assert doc["counts"]["done"] == 1
    assert claims == [timedelta(seconds=500) + TENANT_CLAIM]
    row, _ = await w.runs.get_tenant(run.run_id, tenant)
    assert row.claimed_until is None
