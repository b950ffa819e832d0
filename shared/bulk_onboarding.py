"""Bulk onboarding through the partner relationship (issue 23): one signed-in partner admin, many customer tenants.

For each customer picked (or all), in the admin's delegated context (a PartnerSession):
1. `roles`: the admin's GDAP roles in that tenant against what the install method needs; a missing role stops the
   tenant before anything is tried, naming the role and the fix;
2. `install`: the MSP app's service principal with its Graph application permissions (GRAPH_APP_PERMISSIONS);
3. `owner`: the Proofpoint app found by discovery (shared.service.discover), the MSP app's service principal added
   as its owner (none found, several found: the tenant stops with the cause and the fix; an explicit appId decides);
4. `register`: the target with its destinations (the Proofpoint org from Proofpoint's org list matched on the
   tenant's verified domains; the destinations from the MSP's template, ONBOARDING_DESTINATIONS);
5. `dry-run`: the rotation engine's dry run of the new target, its outcome recorded.

Run state (ports.OnboardingRuns): a run row and a row per tenant with each step's outcome, ETag-guarded. A step's
side effect is idempotent (the session's calls say "there already"; a target that exists is kept), and the step is
recorded done only after it, so a crash anywhere is resumed by running the tenant again from its first step not
done. A second run skips a tenant whose Proofpoint app is registered already. Every change in a customer tenant is
audited with the admin's name (the audit log of the target's table, as rotations are): `started` before the call,
its outcome after, so an interrupted change is visible in the trail.

The progress document (`run_document`) is what the API, the CLI and the dashboard show; its shape is in
docs/api.md ("Bulk onboarding").
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import quote

from shared import partner_roles
from shared.domain import GUID, Actor, DestinationConfig, Target, actor_of
from shared.errors import Ambiguous, Conflict, NotFound, PartnerRefused, RotationError, Throttled, Unreachable
from shared.ports import (
    Clock,
    Directory,
    Event,
    GdapCustomer,
    InstallMethod,
    OnboardingRuns,
    PartnerSession,
    PartnerSessions,
    ProofpointOrg,
    ProofpointOrgs,
    StateStore,
    Work,
    WorkQueue,
    WorkReason,
)

log = logging.getLogger(__name__)

# The MSP app's Microsoft Graph application permissions, in ONE place: bulk onboarding installs them, the consent
# link asks for the app's configured permissions (which infra/scripts/create-msp-app.sh sets from the same list; a
# test holds them equal). Application.ReadWrite.OwnedBy: rotate secrets of the apps it owns (DESIGN.md, Identity);
# AuditLog.Read.All and Directory.Read.All: the sign-in evidence of issue 24 (Graph's List signIns needs both,
# microsoft-graph-docs-contrib api-reference/beta/api/signin-list.md).
GRAPH_APP_PERMISSIONS: tuple[str, ...] = ("Application.ReadWrite.OwnedBy", "AuditLog.Read.All", "Directory.Read.All")

ONBOARDING_ACTOR = "onboarding"  # the audit actor kind of a change made by a bulk-onboarding run


class Step(str, Enum):
    """The steps of one tenant's onboarding, in order."""

    ROLES = "roles"
    INSTALL = "install"
    OWNER = "owner"
    REGISTER = "register"
    DRY_RUN = "dry-run"


STEPS: tuple[Step, ...] = tuple(Step)


class TenantState(str, Enum):
    """Where one tenant of a run stands."""

    PENDING = "pending"  # not started (or interrupted before its first step was recorded)
    RUNNING = "running"  # a worker has it
    DONE = "done"  # every step done
    FAILED = "failed"  # a step stopped it: `error` names the cause and the fix
    SKIPPED = "skipped"  # onboarded already (its Proofpoint app is registered)


FINISHED = frozenset({TenantState.DONE, TenantState.FAILED, TenantState.SKIPPED})
ONBOARDED = frozenset({TenantState.DONE, TenantState.SKIPPED})


class RunState(str, Enum):
    """Where a run stands: signed in (the web sign-in, no customer picked yet), running until every tenant finished
    (done, failed or skipped), then finished."""

    SIGNED_IN = "signed-in"
    RUNNING = "running"
    FINISHED = "finished"


# ------------------------------------------------------------------------------------------------ required roles
# Which GDAP role (any one of each set) a step needs in the customer tenant, per install method. Sources:
# - creating the service principal and adding an owner to an application: Application Administrator or Cloud
#   Application Administrator (Microsoft Entra "Least privileged roles by task", MicrosoftDocs/entra-docs
#   docs/identity/role-based-access-control/delegate-by-task.md: "Create service principal", "Manage application
#   owners"; Graph `POST /servicePrincipals` and `POST /applications/{id}/owners/$ref` permission sections);
# - granting a Microsoft Graph application permission (an app role assignment to Graph's service principal):
#   Privileged Role Administrator (delegate-by-task.md, "Grant consent to application permissions for Microsoft
#   Graph"; the Graph API page lists more roles for app role assignments in general, not for Graph's own roles);
# - Partner Center's application consent grants the same application permissions in the customer tenant: the
#   strictest plausible reading is that the relationship must carry the same roles as the Graph path (the
#   partner-center requirement is to be narrowed only with a documented source).
# Global Administrator covers every step.
APP_ADMINS = frozenset({partner_roles.APPLICATION_ADMINISTRATOR, partner_roles.CLOUD_APPLICATION_ADMINISTRATOR,
                        partner_roles.GLOBAL_ADMINISTRATOR})
GRANT_ADMINS = frozenset({partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR, partner_roles.GLOBAL_ADMINISTRATOR})


@dataclass(frozen=True)
class Requirement:
    """A step needs one of `any_of` (role template ids); `preferred` is the least-privileged one to add."""

    step: Step
    what: str
    any_of: frozenset[str]
    preferred: str


REQUIREMENTS: Mapping[InstallMethod, tuple[Requirement, ...]] = {
    InstallMethod.GRAPH: (
        Requirement(Step.INSTALL, "create the MSP app's service principal", APP_ADMINS,
                    partner_roles.CLOUD_APPLICATION_ADMINISTRATOR),
        Requirement(Step.INSTALL, "grant the MSP app its Microsoft Graph application permissions", GRANT_ADMINS,
                    partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR),
        Requirement(Step.OWNER, "add the MSP app as owner of the Proofpoint app", APP_ADMINS,
                    partner_roles.CLOUD_APPLICATION_ADMINISTRATOR),
    ),
    InstallMethod.PARTNER_CENTER: (
        Requirement(Step.INSTALL, "consent to the MSP app through Partner Center", APP_ADMINS,
                    partner_roles.CLOUD_APPLICATION_ADMINISTRATOR),
        Requirement(Step.INSTALL, "grant the MSP app its Microsoft Graph application permissions", GRANT_ADMINS,
                    partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR),
        Requirement(Step.OWNER, "add the MSP app as owner of the Proofpoint app", APP_ADMINS,
                    partner_roles.CLOUD_APPLICATION_ADMINISTRATOR),
    ),
}


def missing_roles(customer: GdapCustomer, method: InstallMethod) -> list[Requirement]:
    """The requirements the admin's roles in this tenant do not meet (empty: every step may be tried)."""
    return [r for r in REQUIREMENTS[method] if not r.any_of & customer.roles]


def roles_refusal(customer: GdapCustomer, missing: Sequence[Requirement]) -> PartnerRefused:
    """The refusal naming each missing role and the fix, before anything was tried."""
    roles = sorted({partner_roles.name(r.preferred) for r in missing})
    held = sorted(partner_roles.name(r) for r in customer.roles) or ["none"]
    needs = "; ".join(f"to {r.what}: {' or '.join(sorted(partner_roles.name(x) for x in r.any_of))}" for r in missing)
    return PartnerRefused(
        f"the GDAP relationship with {customer.display_name or customer.tenant_id} does not give you "
        f"{' and '.join(roles)} ({needs}); your roles there: {', '.join(held)}",
        code="GdapRoleMissing",
        fix=f"add {' and '.join(roles)} to the GDAP relationship with this customer (Partner Center > Customers > "
            "Admin relationships) and assign it to a security group you are a member of, then resume the run",
    )


# ------------------------------------------------------------------------------------------------ Proofpoint orgs


def match_orgs(orgs: Sequence[ProofpointOrg], domains: Sequence[str]) -> list[ProofpointOrg]:
    """The Proofpoint orgs whose domains include one of the tenant's verified domains (case-insensitive)."""
    mine = {d.lower() for d in domains}
    return [o for o in orgs if mine & {d.lower() for d in (o.primary_domain, *o.domains)}]


# ------------------------------------------------------------------------------------------------ the template
# ONBOARDING_DESTINATIONS: the MSP's destinations for every onboarded customer, a JSON list of destination
# documents as PUT /api/targets takes them, whose option values may name these placeholders.
PLACEHOLDERS = ("tenantId", "customer", "domain", "stack")
_PLACEHOLDER = re.compile(r"\{([A-Za-z]+)\}")


def default_template(account_secret: str = "proofpoint-api-account") -> tuple[dict[str, Any], ...]:  # noqa: S107
    """One Proofpoint destination: the customer's org, with the MSP's Proofpoint account (a Key Vault secret)."""
    return ({"name": "proofpoint", "kind": "proofpoint",
             "options": {"stack": "{stack}", "domain": "{domain}", "account_secret": account_secret}},)


DEFAULT_TEMPLATE = default_template()


class InvalidTemplate(ValueError):
    """The destinations template breaks a rule; the message says which."""


def render_destinations(template: Sequence[Mapping[str, Any]], values: Mapping[str, str],
                        allowed_hosts: frozenset[str] = frozenset()) -> tuple[DestinationConfig, ...]:
    """The template's destinations for one customer, validated as the registry validates a target's."""
    from shared.registry import InvalidTarget, parse_destination

    def fill(text: str, in_url: bool) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) not in PLACEHOLDERS:
                raise InvalidTemplate(f"unknown placeholder {{{m.group(1)}}}; known: "
                                      + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
            value = values.get(m.group(1), "")
            # In a URL a value is percent-encoded (RFC 3986): a customer named "Contoso Ltd" or "A/B?x" is one path
            # segment of the template's URL, never a space that voids it or a path or query of its own.
            return quote(value, safe="") if in_url else value
        return _PLACEHOLDER.sub(one, text)

    out = []
    for index, doc in enumerate(template):
        if not isinstance(doc, Mapping) or not isinstance(doc.get("options", {}), Mapping):
            raise InvalidTemplate(f"destinations[{index}] must be an object with an options object")
        filled = {**doc, "options": {k: fill(v, k == "url") if isinstance(v, str) else v
                                     for k, v in doc.get("options", {}).items()}}
        try:
            out.append(parse_destination(filled, index, allowed_hosts))
        except InvalidTarget as error:
            raise InvalidTemplate(error.message) from None
    if len({d.name for d in out}) != len(out):
        raise InvalidTemplate("destination names must be unique")
    return tuple(out)


def check_template(template: Sequence[Mapping[str, Any]], allowed_hosts: frozenset[str] = frozenset()) -> None:
    """Raise InvalidTemplate unless the template renders to valid destinations for a sample customer."""
    if not isinstance(template, list | tuple) or not template:
        raise InvalidTemplate("must be a non-empty JSON list of destinations")
    render_destinations(template, {"tenantId": "00000000-0000-4000-8000-000000000000", "customer": "Contoso",
                                   "domain": "contoso.com", "stack": "us1"}, allowed_hosts)


# ------------------------------------------------------------------------------------------------ run state


@dataclass(frozen=True)
class StepRecord:
    """How one step of one tenant ended (never a secret)."""

    state: str  # done | failed | skipped
    at: datetime
    detail: str = ""
    code: str = ""


@dataclass(frozen=True)
class TenantPick:
    """A customer picked for a run, with what the admin decided for it (an app, a Proofpoint org's domain)."""

    tenant_id: str
    app_id: str = ""
    proofpoint_domain: str = ""


@dataclass(frozen=True)
class TenantProgress:
    """One tenant of a run: each step's outcome and what the run learned (the app, the org)."""

    tenant_id: str
    customer: str = ""
    state: TenantState = TenantState.PENDING
    steps: Mapping[str, StepRecord] = field(default_factory=dict)
    app_id: str = ""  # the Proofpoint app: picked by the admin, or found by discovery
    app_object_id: str = ""
    proofpoint_domain: str = ""  # picked by the admin, or matched from Proofpoint's org list
    service_principal_id: str = ""
    error_code: str = ""
    error_message: str = ""
    fix: str = ""
    updated_at: datetime | None = None
    worker: str = ""  # who has it while running (a process's id)
    # The worker's claim: until then no other resumer works this tenant (two tabs, the CLI and the dashboard); renewed
    # with every write and before every wait, cleared when the tenant finishes. A crashed worker's runs out.
    claimed_until: datetime | None = None

    def done(self, step: Step) -> bool:
        record = self.steps.get(step.value)
        return record is not None and record.state in ("done", "skipped")


@dataclass(frozen=True)
class Run:
    """A bulk-onboarding run: who started it, how, and whether it finished."""

    run_id: str
    admin_upn: str
    admin_name: str
    method: InstallMethod
    plan_only: bool  # check roles and Proofpoint orgs only; change nothing
    started_at: datetime
    state: RunState = RunState.RUNNING
    finished_at: datetime | None = None
    keep_session: bool = False
    # The start that won a signed-in run (web sign-in): its tenants' rows are under their own key (tenants_key), so
    # rows a lost or interrupted start wrote are never worked nor shown. Empty for a run started in one go (the CLI).
    start_id: str = ""
    # A finished run's counts (run_document's), written with its finish so the run list reads no tenant row of it;
    # None while it runs (a resume of a finished run clears them).
    counts: Mapping[str, int] | None = None


def tenants_key(run: Run) -> str:
    """Where the run's tenant rows are (ports.OnboardingRuns' run_id for tenants): the run's own id, or for a
    signed-in run started later, the run's id with the winning start's id."""
    return f"{run.run_id}.{run.start_id}" if run.start_id else run.run_id


def new_run_id() -> str:
    return uuid.uuid4().hex


RUN_ID = re.compile(r"\A[0-9a-f]{32}\Z")
# Where a page of the run list resumes (ports.OnboardingRuns.list_runs): the last run's place in the index.
RUN_CURSOR = re.compile(r"\A[0-9]{15}\.[0-9a-f]{32}\Z")


# ------------------------------------------------------------------------------------------------ the document


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def tenant_document(p: TenantProgress) -> dict[str, Any]:
    return {
        "tenantId": p.tenant_id,
        "customer": p.customer,
        "state": p.state.value,
        "appId": p.app_id or None,
        "proofpointDomain": p.proofpoint_domain or None,
        "error": {"code": p.error_code, "message": p.error_message, "fix": p.fix or None} if p.error_code else None,
        "steps": [
            {"step": s.value, "state": r.state if r else "pending", "at": _iso(r.at) if r else None,
             "detail": (r.detail or None) if r else None, "code": (r.code or None) if r else None}
            for s in STEPS for r in (p.steps.get(s.value),)
        ],
        "updatedAt": _iso(p.updated_at),
    }


def tenant_counts(tenants: Sequence[TenantProgress]) -> dict[str, int]:
    """How many tenants are in each state, and in all ("total")."""
    counts = {s.value: 0 for s in TenantState}
    for t in tenants:
        counts[t.state.value] += 1
    return {"total": len(tenants), **counts}


def run_document(run: Run, tenants: Sequence[TenantProgress]) -> dict[str, Any]:
    """The progress of a run as the API, the CLI and the dashboard show it (docs/api.md, "Bulk onboarding")."""
    return {
        "runId": run.run_id,
        "state": run.state.value,
        "startedBy": run.admin_upn,
        "startedAt": run.started_at.isoformat(),
        "finishedAt": _iso(run.finished_at),
        "method": run.method.value,
        "planOnly": run.plan_only,
        "keepSession": run.keep_session,
        "counts": tenant_counts(tenants),
        "tenants": [tenant_document(t) for t in sorted(tenants, key=lambda t: (t.customer.lower(), t.tenant_id))],
    }


def disabled_tenants(targets: Iterable[Target]) -> set[str]:
    """The tenants (lower case) whose every registered target is disabled: paused, or an offboarding not finished.
    Registered, but not onboarded: a run stops them with the two ways on (disabled_stop)."""
    enabled: dict[str, bool] = {}
    for t in targets:
        tenant = t.tenant_id.lower()
        enabled[tenant] = enabled.get(tenant, False) or t.enabled
    return {tenant for tenant, any_enabled in enabled.items() if not any_enabled}


def customers_document(customers: Sequence[GdapCustomer], registered: set[str],
                       method: InstallMethod = InstallMethod.PARTNER_CENTER,
                       disabled: Collection[str] = ()) -> list[dict[str, Any]]:
    """The GDAP customers with the admin's roles in each, what is missing for `method`, whether registered, and
    whether every target registered there is disabled (`disabled`: the pick offers it again)."""
    return [
        {
            "tenantId": c.tenant_id,
            "customer": c.display_name,
            "roles": sorted(partner_roles.name(r) for r in c.roles),
            "missingRoles": sorted({partner_roles.name(r.preferred) for r in missing_roles(c, method)}),
            "registered": c.tenant_id.lower() in registered,
            "disabled": c.tenant_id.lower() in disabled,
        }
        for c in sorted(customers, key=lambda c: (c.display_name.lower(), c.tenant_id))
    ]


# ------------------------------------------------------------------------------------------------ the engine


@dataclass(frozen=True)
class OnboardingConfig:
    """The knobs of bulk onboarding (from Settings; tests set them directly)."""

    concurrency: int = 8  # tenants worked on at once (ONBOARDING_CONCURRENCY)
    template: Sequence[Mapping[str, Any]] = DEFAULT_TEMPLATE
    name_patterns: Sequence[str] = ("PPE", "Proofpoint", "ModusCloud")
    msp_app_id: str = ""  # the MSP app's client id: the audit trail's app id for its install in a customer tenant
    throttle_attempts: int = 5  # tries of one call the service throttles (each after the wait it asked for)
    # A service principal made moments ago is not yet known to the token service (Entra answers AADSTS700016 for a
    # while; the sandbox models it): discovery, the rotator's first call as itself in the tenant, waits this long
    # between this many tries before the tenant stops with "resume later".
    propagation_attempts: int = 6
    propagation_wait: float = 10.0
    max_wait_seconds: float = 120.0
    allowed_hosts: frozenset[str] = frozenset()


# How long a worker's claim on a tenant lasts past its last write (or past the wait it is in): longer than any one
# call takes (a token endpoint or Graph call gives up after 30 s), short enough that a tenant whose worker died is
# resumed minutes later.
TENANT_CLAIM = timedelta(minutes=3)
# The tenant this task works on (each worker of `work` is a task of its own): a wait renews its claim first.
_working: contextvars.ContextVar[_Writer | None] = contextvars.ContextVar("onboarding_tenant", default=None)


class TenantStopped(Exception):
    """A step stopped this tenant: code, message and fix are shown to the admin."""

    def __init__(self, step: Step, code: str, message: str, fix: str = "") -> None:
        super().__init__(message)
        # Bounded: they are stored in the tenant's row (an Azure Tables property holds at most 64 KiB).
        self.step, self.code, self.message, self.fix = step, code[:100], message[:1000], fix[:1000]


ProgressCallback = Callable[[TenantProgress], Awaitable[None] | None]
DryRun = Callable[[str, str, str], Awaitable[dict[str, str]]]  # (tenant, app, actor) -> result, message, code


class BulkOnboarding:
    """Runs the steps for each tenant of a run, recording each in the run state; resumable and idempotent."""

    def __init__(self, *, runs: OnboardingRuns, state: StateStore, directory: Directory, orgs: ProofpointOrgs,
                 dry_run: DryRun, clock: Clock, config: OnboardingConfig,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, queue: WorkQueue | None = None) -> None:
        self.runs, self.state, self.directory, self.orgs = runs, state, directory, orgs
        self.queue = queue  # the work queue: a registered customer's first inventory is sent there
        self.dry_run, self.clock, self.config, self.sleep = dry_run, clock, config, sleep
        self.worker = uuid.uuid4().hex
        self._orgs: list[ProofpointOrg] | None = None
        self._orgs_lock = asyncio.Lock()
        self._customers: tuple[PartnerSession, dict[str, GdapCustomer]] | None = None
        self._registered: set[tuple[str, str]] = set()
        self._disabled: dict[tuple[str, str], Target] = {}  # registered but disabled: paused, or half-offboarded

    async def _customers_of(self, session: PartnerSession) -> dict[str, GdapCustomer]:
        """The session's GDAP customers by tenant id, read once per session (start and work share them)."""
        if self._customers is None or self._customers[0] is not session:
            self._customers = (session, {c.tenant_id.lower(): c for c in await session.customers()})
        return self._customers[1]

    # ---------------------------------------------------------------- entry points

    async def start(self, session: PartnerSession, picks: Sequence[TenantPick] | None, method: InstallMethod, *,
                    plan_only: bool = False, keep_session: bool = False, run_id: str = "") -> Run:
        """Record the run for the picked customers (None: every GDAP customer) and return it; nothing is done in
        any tenant yet (`work` does it). With `run_id`, the run the web sign-in made (signed-in) is started.
        NotFound when a picked tenant is not a GDAP customer of the partner; Conflict when the run was started."""
        signed: tuple[Run, str] | None = None
        if run_id:
            signed = await self.runs.get_run(run_id)
            _same_admin(signed[0], session)
            if signed[0].state is not RunState.SIGNED_IN:
                raise Conflict(f"run {run_id} was started already; watch it, or resume it", code="RunStarted")
        customers = await self._customers_of(session)
        if picks is None:
            picks = [TenantPick(t) for t in sorted(customers)]
        unknown = [p.tenant_id for p in picks if p.tenant_id.lower() not in customers]
        if unknown:
            # Graph lists active relationships only (the filter keeps the read to a page per 100 customers), so
            # which of the causes it is goes unsaid: each is named with its fix.
            raise NotFound(f"not a customer with an active GDAP relationship: {', '.join(unknown)}. Fix: check the "
                           "tenant id; a relationship that expired or was terminated is renewed, and one awaiting "
                           "the customer's approval is approved by the customer (Partner Center > Customers > Admin "
                           "relationships), then start again without it or once it is active",
                           code="CustomerNotFound")
        if not picks:
            raise NotFound("the partner has no customer with an active GDAP relationship", code="NoCustomers")
        admin = session.admin
        # A signed-in run may see several starts (a retry after a crash, two tabs at once): each writes its rows under
        # its own key, and only the one whose run row lands (ETag-guarded) is the run's; the others' rows are left
        # aside, never worked nor shown.
        run = Run(run_id or new_run_id(), admin.user_principal_name, admin.display_name, method, plan_only,
                  self.clock.now(), keep_session=keep_session, start_id=uuid.uuid4().hex if signed else "")
        # The tenants' rows first, the run's row last: a run that is running has all its tenants (a crash before
        # the run's row leaves rows nobody works, and the admin starts again). A new run's place in the run list
        # comes before both, so the prune finds and deletes what such a crash left.
        if signed is None:
            await self.runs.index_run(run.run_id, run.started_at)
        for p in picks:
            c = customers[p.tenant_id.lower()]
            await self.runs.create_tenant(tenants_key(run), TenantProgress(
                c.tenant_id.lower(), c.display_name, app_id=p.app_id.lower(),
                proofpoint_domain=p.proofpoint_domain.lower(), updated_at=self.clock.now()))
        if signed is None:
            await self.runs.create_run(run)
        else:
            try:
                await self.runs.replace_run(run, signed[1])
            except Conflict:
                raise Conflict(f"run {run_id} was started already (by another request); watch it, or resume it",
                               code="RunStarted") from None
        log.info("onboarding run started", extra={"event": "onboarding-run", "run_id": run.run_id,
                                                  "tenants": len(picks), "method": method.value,
                                                  "actor": admin.user_principal_name})
        return run

    async def work(self, session: PartnerSession, run_id: str, *, on_progress: ProgressCallback | None = None,
                   budget_seconds: float | None = None) -> dict[str, Any]:
        """Work every tenant of the run not finished yet (a resume is the same call), `concurrency` at once; the
        progress document at the end. With a budget, no worker starts another tenant after it (an HTTP request is
        cut at 230 s): the run stays `running` and a resume goes on."""
        run, etag = await self.runs.get_run(run_id)
        _same_admin(run, session)
        if run.state is RunState.SIGNED_IN:
            raise Conflict(f"run {run_id} has no customers yet: start it with the customers picked",
                           code="RunNotStarted")
        customers = await self._customers_of(session)
        # What is registered, read once per call (not a scan of the registry per tenant): a tenant is skipped only
        # on its first visit, and only for a target registered before the run came to it.
        targets = [t for t, _ in await self.state.list_targets()]
        self._registered = {(t.tenant_id.lower(), t.app_id.lower()) for t in targets}
        self._disabled = {(t.tenant_id.lower(), t.app_id.lower()): t for t in targets if not t.enabled}
        deadline = time.monotonic() + budget_seconds if budget_seconds is not None else None
        # A resume takes the failed tenants again too: the admin fixed the cause (a role, a pick) or it passed.
        todo = [t for t, _ in await self.runs.tenants(tenants_key(run)) if t.state not in ONBOARDED]
        if todo and run.state is RunState.FINISHED:
            run = replace(run, state=RunState.RUNNING, finished_at=None, counts=None)
            await self.runs.replace_run(run, etag)
        queue = iter(todo)

        async def worker() -> None:
            done = 0
            for progress in queue:
                if done and deadline is not None and time.monotonic() > deadline:
                    return  # each worker finishes one tenant at least, so every request moves the run on
                done += 1
                final = await self._tenant(session, run, customers.get(progress.tenant_id), progress.tenant_id)
                if final is not None and on_progress is not None:
                    result = on_progress(final)
                    if result is not None:
                        await result

        # A task group: when a worker dies (a bug, the process killed) the others are stopped with it, never left
        # writing the run state behind a resume.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.config.concurrency, len(todo)) or 1):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            # The first failure stopped the run (the others are mostly its echo: calls after the process died);
            # it is raised as a caller expects it, the others are logged.
            for other in failed.exceptions[1:]:
                log.error("onboarding worker stopped too: %s", type(other).__name__,
                          extra={"event": "onboarding-run", "run_id": run_id})
            raise failed.exceptions[0] from None
        return await self.finish_if_done(run_id)

    async def finish_if_done(self, run_id: str) -> dict[str, Any]:
        """Mark the run finished when every tenant is; its progress document either way."""
        run, etag = await self.runs.get_run(run_id)
        tenants = [t for t, _ in await self.runs.tenants(tenants_key(run))]
        if run.state is RunState.RUNNING and all(t.state in FINISHED for t in tenants):
            run = replace(run, state=RunState.FINISHED, finished_at=self.clock.now(), counts=tenant_counts(tenants))
            try:
                await self.runs.replace_run(run, etag)
            except Conflict:
                run, _ = await self.runs.get_run(run_id)  # another worker finished it
        return run_document(run, tenants)

    async def progress(self, run_id: str) -> dict[str, Any]:
        run, _ = await self.runs.get_run(run_id)
        return run_document(run, [t for t, _ in await self.runs.tenants(tenants_key(run))])

    async def summary(self, run: Run) -> dict[str, Any]:
        """The run's document without its tenants (the run list): a finished run's from its own row, else counted
        from its tenants' rows."""
        if run.state is RunState.FINISHED and run.counts is not None:
            doc = run_document(run, [])
            doc["counts"] = {**doc["counts"], **run.counts}
        else:
            doc = run_document(run, [t for t, _ in await self.runs.tenants(tenants_key(run))])
        return {k: v for k, v in doc.items() if k != "tenants"}

    # ---------------------------------------------------------------- one tenant

    async def _tenant(self, session: PartnerSession, run: Run, customer: GdapCustomer | None,
                      tenant_id: str) -> TenantProgress | None:
        """Take the tenant's row (ETag), run its steps not done, record each; the final row, or None when another
        worker has it."""
        progress, etag = await self.runs.get_tenant(tenants_key(run), tenant_id)
        if progress.state in ONBOARDED or claimed(progress, self.clock.now()):
            return None  # onboarded, or another resumer works on it now (its claim has not run out)
        now = self.clock.now()
        progress = replace(progress, state=TenantState.RUNNING, worker=self.worker, updated_at=now,
                           claimed_until=now + TENANT_CLAIM)
        try:
            etag = await self.runs.replace_tenant(tenants_key(run), progress, etag)
        except Conflict:
            return None  # another worker took it between our read and our write
        writer = _Writer(self.runs, tenants_key(run), progress, etag, self.clock)
        working = _working.set(writer)
        try:
            await self._tenant_steps(session, run, customer, writer)
        except Conflict:
            return None  # another worker took the row over (after our claim ran out): it goes on from there
        except RotationError as error:
            # The run state or the audit log failed: the tenant stays `running` and a resume takes it further (at
            # once when the claim can still be given up; else once it runs out).
            log.warning("onboarding tenant interrupted", extra={"event": "onboarding-tenant", "run_id": run.run_id,
                                                                 "tenant_id": tenant_id, "error_code": error.code})
            try:
                await writer.save(release=True)
            except RotationError:
                pass
            return None
        finally:
            _working.reset(working)
        log.info("onboarding tenant finished", extra={"event": "onboarding-tenant", "run_id": run.run_id,
                                                      "tenant_id": tenant_id, "state": writer.progress.state.value,
                                                      "error_code": writer.progress.error_code})
        return writer.progress

    async def _tenant_steps(self, session: PartnerSession, run: Run, customer: GdapCustomer | None,
                            writer: _Writer) -> None:
        try:
            if customer is None:
                raise TenantStopped(Step.ROLES, "RelationshipNotActive",
                                    "the partner no longer has an active GDAP relationship with this customer",
                                    "renew the GDAP relationship in Partner Center, then resume the run")
            await self._steps(session, run, customer, writer)
            await writer.save(state=TenantState.SKIPPED if writer.skipped_all else TenantState.DONE,
                              error_code="", error_message="", fix="")
        except TenantStopped as stop:
            await writer.step(stop.step, "failed", stop.message, stop.code)
            await writer.save(state=TenantState.FAILED, error_code=stop.code, error_message=stop.message,
                              fix=stop.fix)

    async def _steps(self, session: PartnerSession, run: Run, customer: GdapCustomer, w: _Writer) -> None:
        actor = actor_of(ONBOARDING_ACTOR, run.admin_upn)
        tenant = customer.tenant_id.lower()
        # A tenant stopped only because its target was disabled is looked at afresh: re-enabled, it is onboarded.
        fresh = not w.progress.steps or w.progress.error_code in DISABLED_CODES
        if fresh and not self._onboarded(tenant, w.progress.app_id):
            disabled = self._disabled_target(tenant, w.progress.app_id)
            if disabled is not None:
                raise disabled_stop(disabled)
        if fresh and self._onboarded(tenant, w.progress.app_id):
            w.skipped_all = True
            for step in STEPS:
                await w.step(step, "skipped", "onboarded already: its Proofpoint app is registered")
            return
        # 1. roles: checked again on a resume (the admin may have fixed the relationship)
        missing = missing_roles(customer, run.method)
        if missing:
            refusal = roles_refusal(customer, missing)
            raise TenantStopped(Step.ROLES, refusal.code, refusal.message, refusal.fix)
        if not w.progress.done(Step.ROLES):
            await w.step(Step.ROLES, "done", "has " + ", ".join(sorted(partner_roles.name(r) for r in customer.roles)))
        if run.plan_only:
            await self._plan(session, tenant, w)
            return
        # 2. install
        if not w.progress.done(Step.INSTALL):
            installed = await self._change(
                Step.INSTALL, tenant, self.config.msp_app_id, "service-principal", actor,
                lambda: session.install_app(tenant, GRAPH_APP_PERMISSIONS, run.method),
                lambda i: ("created" if i.created else "present") + (
                    f"; granted {', '.join(i.roles_granted)}" if i.roles_granted else "; permissions present"))
            w.progress = replace(w.progress, service_principal_id=installed.service_principal_id)
            await w.step(Step.INSTALL, "done", ("service principal created" if installed.created
                                                else "service principal there already")
                         + (f", granted {', '.join(installed.roles_granted)}" if installed.roles_granted
                            else ", permissions there already"))
        # 3. owner
        if not w.progress.done(Step.OWNER):
            app_id, object_id = await self._proofpoint_app(tenant, w.progress.app_id)
            w.progress = replace(w.progress, app_id=app_id, app_object_id=object_id)
            principal = w.progress.service_principal_id
            added = await self._change(
                Step.OWNER, tenant, app_id, "owner", actor,
                lambda: session.add_owner(tenant, object_id, principal),
                lambda a: "added" if a else "present")
            await w.step(Step.OWNER, "done", ("MSP app added as owner" if added else "MSP app is an owner already")
                         + f" of app {app_id}")
        # 4. register
        if not w.progress.done(Step.REGISTER):
            org = await self._org(session, tenant, w.progress.proofpoint_domain)
            w.progress = replace(w.progress, proofpoint_domain=org.primary_domain.lower())
            from shared.registry import customer_name

            name = customer_name(customer.display_name)  # as the registry takes a name from a person
            try:
                destinations = render_destinations(
                    self.config.template, {"tenantId": tenant, "customer": name,
                                           "domain": org.primary_domain.lower(), "stack": org.stack},
                    self.config.allowed_hosts)
            except InvalidTemplate as error:
                # The template passed its check at start with a sample customer; this customer's values do not fit
                # it (a name with a line break in a header, say): this tenant stops, the run goes on.
                raise TenantStopped(Step.REGISTER, "InvalidTemplate", f"the destinations template does not fit "
                                    f"this customer: {error}", "change ONBOARDING_DESTINATIONS so that it fits (or "
                                    "register this customer by hand: PUT /api/targets), then resume the run") from None
            target = Target(tenant, w.progress.app_id, name, destinations=destinations)
            created = await self._change(Step.REGISTER, tenant, target.app_id, "registry", actor,
                                         lambda: self._register(target), lambda c: "created" if c else "present")
            inventory = await self._start_inventory(tenant, target.app_id, run.admin_upn)
            await w.step(Step.REGISTER, "done", ("registered" if created else "registered already")
                         + f" with Proofpoint org {org.primary_domain.lower()}; {inventory}")
        # 5. dry run
        if not w.progress.done(Step.DRY_RUN):
            outcome = await self.dry_run(tenant, w.progress.app_id, actor)
            await w.step(Step.DRY_RUN, "done", f"{outcome.get('result', '')}: {outcome.get('message', '')}".strip(": "),
                         outcome.get("code", ""))

    async def _plan(self, session: PartnerSession, tenant: str, w: _Writer) -> None:
        """Plan only: the Proofpoint org is matched too (nothing is changed anywhere); the rest is skipped."""
        try:
            org: ProofpointOrg | None = await self._org(session, tenant, w.progress.proofpoint_domain)
        except TenantStopped as stop:
            # A customer the MSP app is not in yet (the usual one to plan): Entra gives the admin no token there
            # before the install (AADSTS65001), so its verified domains cannot be read now. That is the plan's
            # limit, not the tenant's failure: the run's install makes the token work, then the org is matched.
            if stop.code != "AppNotConsented":
                raise
            org = None
        if org is not None:
            w.progress = replace(w.progress, proofpoint_domain=org.primary_domain.lower())
        for step in (Step.INSTALL, Step.OWNER, Step.DRY_RUN):
            await w.step(step, "skipped", "plan only")
        await w.step(Step.REGISTER, "skipped", f"plan only: Proofpoint org {org.primary_domain.lower()}" if org else
                     "plan only: the MSP app is not in this tenant yet, so its verified domains cannot be read (Entra "
                     "gives no token there before the install, AADSTS65001); the run matches its Proofpoint org "
                     "after the install, or name it (proofpointDomain) to check it now")

    async def _start_inventory(self, tenant: str, app_id: str, admin_upn: str) -> str:
        """Send the tenant's first credential inventory to the work queue (a worker reads it, not this run: one
        message, milliseconds); what the register step says about it. Sent before the step is recorded, so a crash
        between sends it again on the resume: a repeat costs the worker a delta round. Without a queue, or when it
        cannot be written, the tenant waits for the daily pass (INVENTORY_SCHEDULE) and the step says so."""
        later = "its first credential inventory comes with the next daily inventory pass"
        if self.queue is None:
            return later
        try:
            await self.queue.enqueue(Work(tenant, app_id, actor_of(Actor.MANUAL, admin_upn), WorkReason.INVENTORY))
        except RotationError as error:
            log.warning("first inventory not queued", extra={"event": "onboarding-tenant", "tenant_id": tenant,
                                                             "error_code": error.code})
            return f"{later} (the work queue answered {error.code})"
        return "its first credential inventory is queued"

    def _onboarded(self, tenant: str, app_id: str) -> bool:
        """Registered and enabled (a disabled target is not onboarded: it is paused or being offboarded)."""
        return any(t == tenant and (not app_id or a == app_id) and (t, a) not in self._disabled
                   for t, a in self._registered)

    def _disabled_target(self, tenant: str, app_id: str) -> Target | None:
        return next((target for (t, a), target in sorted(self._disabled.items())
                     if t == tenant and (not app_id or a == app_id)), None)

    async def _register(self, target: Target) -> bool:
        try:
            await self.state.create_target(target)
            return True
        except Conflict:
            return False  # registered already (by this run before a crash, or by hand): kept as it is

    async def _proofpoint_app(self, tenant: str, picked: str) -> tuple[str, str]:
        """The Proofpoint app: the one picked, or the only one discovery finds (shared.service.discover)."""
        from shared.service import discover

        async def look() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = await self._retry(lambda: discover(
                self.directory, self.state, tenant, self.config.name_patterns, self.clock.now(), self._registered))
            return found

        try:
            for attempt in range(1, self.config.propagation_attempts + 1):
                try:
                    found = await look()
                    break
                except Unreachable:
                    if attempt == self.config.propagation_attempts:
                        raise
                    await self._wait(self.config.propagation_wait)
        except RotationError as error:
            raise TenantStopped(Step.OWNER, error.code, f"the Proofpoint app could not be looked for: "
                                f"{error.message}", "resume the run in a few minutes (a new service principal "
                                "can take minutes to reach Graph)") from None
        if picked:
            chosen = [a for a in found if a["appId"].lower() == picked]
            if not chosen:
                raise TenantStopped(Step.OWNER, "AppNotFound", f"no app registration with appId {picked} among the "
                                    f"tenant's Proofpoint-like apps ({', '.join(self.config.name_patterns)})",
                                    "check the appId (GET /api/discover/{tenantId}) and start a run for this tenant "
                                    "with the right one")
            return chosen[0]["appId"].lower(), chosen[0]["objectId"]
        if not found:
            raise TenantStopped(Step.OWNER, "ProofpointAppNotFound", "no app registration named like "
                                f"{', '.join(self.config.name_patterns)} in this tenant",
                                "create the Proofpoint sync app (Proofpoint's Azure AD sync guide), or name the app "
                                "with appId for this tenant in a new run")
        if len(found) > 1:
            names = ", ".join(f"{a['displayName']} ({a['appId']})" for a in found)
            raise TenantStopped(Step.OWNER, "SeveralProofpointApps", f"{len(found)} candidate apps: {names}",
                                "pick one: start a run for this tenant with its appId")
        return found[0]["appId"].lower(), found[0]["objectId"]

    async def _org(self, session: PartnerSession, tenant: str, picked: str) -> ProofpointOrg:
        """The customer's Proofpoint org: the one picked, or the one whose domain is a verified domain of the tenant."""
        orgs = await self._org_list()
        if picked:
            chosen = [o for o in orgs if picked in {d.lower() for d in (o.primary_domain, *o.domains)}]
            if not chosen:
                raise TenantStopped(Step.REGISTER, "ProofpointOrgNotFound", f"no Proofpoint org with domain {picked} "
                                    "among the orgs the MSP's Proofpoint account sees",
                                    "check the domain in Proofpoint (Customers), or give another one")
            return chosen[0]
        try:
            domains = await self._retry(lambda: session.domains(tenant))
        except RotationError as error:
            # The customer's refusal or outage, not the run state's: the tenant stops with it (left `running`, it
            # would look interrupted forever, and a plan-only run in a tenant the MSP app is not in yet meets it).
            raise TenantStopped(Step.REGISTER, error.code, f"the tenant's verified domains could not be read: "
                                f"{error.message}", "resume the run later, or name the customer's Proofpoint org "
                                "(proofpointDomain) for this tenant") from None
        matched = match_orgs(orgs, domains)
        if not matched:
            raise TenantStopped(Step.REGISTER, "ProofpointOrgNotFound", "no Proofpoint org the MSP's Proofpoint "
                                f"account sees has one of the tenant's verified domains ({', '.join(domains[:5])}"
                                f"{', ...' if len(domains) > 5 else ''})",
                                "add the customer in Proofpoint, or name its org's primary domain "
                                "(proofpointDomain) for this tenant in a new run")
        if len(matched) > 1:
            raise TenantStopped(Step.REGISTER, "SeveralProofpointOrgs", f"{len(matched)} Proofpoint orgs match the "
                                f"tenant's domains: {', '.join(o.primary_domain for o in matched)}",
                                "name one (proofpointDomain) for this tenant in a new run")
        return matched[0]

    async def _org_list(self) -> list[ProofpointOrg]:
        async with self._orgs_lock:  # once per run worker, not once per tenant
            if self._orgs is None:
                try:
                    self._orgs = await self._retry(self.orgs.child_orgs)
                except RotationError as error:
                    raise TenantStopped(Step.REGISTER, error.code, f"Proofpoint's org list could not be read: "
                                        f"{error.message}", "check the Proofpoint account (Key Vault secret "
                                        "proofpoint-api-account) and PROOFPOINT_CHANNEL_DOMAIN, then resume") from None
            return self._orgs

    async def _change(self, step: Step, tenant: str, app_id: str, what: str, actor: str,
                      call: Callable[[], Awaitable[Any]], describe: Callable[[Any], str]) -> Any:
        """A change in the customer tenant: audited before (started) and after (its outcome), throttling retried;
        a refusal stops the tenant with its fix."""
        audit_app = app_id or self.config.msp_app_id
        await self.state.record(Event(tenant, audit_app, f"onboarding-{what}", "started", actor, at=self.clock.now()))
        started = time.monotonic()
        try:
            result = await self._retry(call)
        except PartnerRefused as error:
            await self._audit(tenant, audit_app, what, "refused", actor, started, error.code, error.message)
            raise TenantStopped(step, error.code, error.message, error.fix) from None
        except RotationError as error:
            await self._audit(tenant, audit_app, what, "failed", actor, started, error.code, error.message)
            fix = ("resume the run: the call may have taken effect, and every step checks before it changes"
                   if isinstance(error, Ambiguous) else "resume the run later")
            raise TenantStopped(step, error.code, error.message, fix) from None
        await self._audit(tenant, audit_app, what, describe(result), actor, started)
        return result

    async def _audit(self, tenant: str, app_id: str, what: str, outcome: str, actor: str, started: float,
                     code: str = "", detail: str = "") -> None:
        await self.state.record(Event(tenant, app_id, f"onboarding-{what}", outcome, actor,
                                      duration_ms=int((time.monotonic() - started) * 1000), error_code=code,
                                      detail=detail[:500], at=self.clock.now()))

    async def _wait(self, seconds: float) -> None:
        """Sleep, the tenant being worked on kept claimed through the wait (a throttled call may wait minutes)."""
        writer = _working.get()
        if writer is not None:
            await writer.save(hold=seconds)
        await self.sleep(seconds)

    async def _retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """The call, again after the wait the service asked for while it throttles (nothing happened then)."""
        for attempt in range(1, self.config.throttle_attempts + 1):
            try:
                return await call()
            except Throttled as error:
                if attempt == self.config.throttle_attempts:
                    raise
                await self._wait(throttle_wait(error.retry_after, attempt, self.config.max_wait_seconds))
        raise AssertionError("unreachable")


def throttle_wait(retry_after: float | None, attempt: int, longest: float) -> float:
    """Seconds to wait before the next try of a throttled call: the service's Retry-After, at most `longest`; a
    value that is no wait (absent, zero, negative, not a number: a float parse takes "-5" and "nan") backs off
    2, 4, 8... seconds instead, so a throttling service is never asked again at once."""
    if retry_after is None or math.isnan(retry_after) or retry_after <= 0:
        return min(2.0 ** attempt, longest)
    return min(retry_after, longest)


# A tenant whose target is registered but disabled: offboarding began and did not finish (the offboarding's lease
# owner is left on the row: shared.offboarding), or someone paused it (enabled false). Neither is "onboarded".
OFFBOARDING_LEASE_PREFIX = "offboard-"
DISABLED_CODES = frozenset({"TargetOffboarding", "TargetDisabled"})


def disabled_stop(target: Target) -> TenantStopped:
    """The stop for a registered target that is disabled, naming both ways on (finish the offboarding, re-enable)."""
    where = f"{target.tenant_id}/{target.app_id}"
    finish = (f"finish the offboarding (POST /api/targets/{where}/offboard, or `python -m shared offboard "
              f"{target.tenant_id} {target.app_id}`), then resume the run to onboard it anew")
    enable = (f"re-enable it (GET /api/targets/{where}, then PUT it back with \"enabled\": true), then resume the "
              "run")
    if target.state.lease_owner.startswith(OFFBOARDING_LEASE_PREFIX):
        return TenantStopped(Step.REGISTER, "TargetOffboarding", f"app {target.app_id} of this customer is being "
                             "offboarded: its offboarding began and did not finish (the target is registered and "
                             "disabled)", f"{finish}; or, to keep the customer, {enable}")
    return TenantStopped(Step.REGISTER, "TargetDisabled", f"app {target.app_id} of this customer is registered but "
                         "disabled (paused): no pass rotates it", f"{enable}; or, to remove the customer, {finish}")


def claimed(progress: TenantProgress, now: datetime) -> bool:
    """Another worker works on this tenant now: it is running under a claim that has not run out."""
    return (progress.state is TenantState.RUNNING and progress.claimed_until is not None
            and progress.claimed_until > now)


def _same_admin(run: Run, session: PartnerSession) -> None:
    """The audit trail names who made each change: one run, one admin."""
    if session.admin.user_principal_name.lower() != run.admin_upn.lower():
        raise Conflict(f"run {run.run_id} was started by {run.admin_upn}; sign in as that admin to go on with it, "
                       "or start a new run", code="RunOwnedByOther")


# ------------------------------------------------------------------------------------------------ the session
# A run started on the command line holds its session in the process. A run started on the dashboard spans several
# invocations (the sign-in's callback, the pick, each resume): its session's refresh token is kept in Key Vault under
# the run's name (PartnerSessions) and forgotten when the run finishes, unless the admin asked to keep it
# (keepSession), then until they forget it (DELETE /api/onboarding/runs/{runId}/session, `onboard forget`).
SESSION_SECRET_PREFIX = "onboarding-session-"  # noqa: S105 (a Key Vault secret name's prefix)
# How long a kept session may be opened: a run's, from its (latest) sign-in, long enough for a large run driven
# from the dashboard, short enough that an abandoned tab leaves no usable token behind for long; one the admin asked
# to keep (keepSession), the refresh token's own lifetime (90 days, sliding: Microsoft identity platform "Refresh
# tokens", MicrosoftDocs/entra-docs docs/identity-platform/refresh-tokens.md). Past it, `open` refuses it and the
# daily sweep (sweep_sessions) deletes it.
SESSION_LIFETIME = timedelta(hours=8)
KEPT_SESSION_LIFETIME = timedelta(days=90)


def session_secret_name(run_id: str) -> str:
    """The Key Vault secret that holds a run's partner session while it needs one."""
    return f"{SESSION_SECRET_PREFIX}{run_id}"


async def signed_in(runs: OnboardingRuns, sessions: PartnerSessions, session: PartnerSession, clock: Clock,
                    run_id: str = "") -> Run:
    """The web sign-in's hand-over: a new run (signed-in, no customer picked yet) holding the session in Key Vault,
    or, with `run_id`, that run's session renewed (to resume it). Conflict when the run is another admin's."""
    if run_id:
        run, _ = await runs.get_run(run_id)
        _same_admin(run, session)
        await sessions.keep(session_secret_name(run.run_id), session, session_expiry(run, clock.now()))
        return run
    admin = session.admin
    run = Run(new_run_id(), admin.user_principal_name, admin.display_name, InstallMethod.GRAPH, False, clock.now(),
              state=RunState.SIGNED_IN)
    # first: a run never lacks its session
    await sessions.keep(session_secret_name(run.run_id), session, session_expiry(run, clock.now()))
    await runs.create_run(run)
    return run


def session_expiry(run: Run, now: datetime) -> datetime:
    """When the run's kept session expires, kept at `now`: hours, or the token's lifetime with keepSession."""
    return now + (KEPT_SESSION_LIFETIME if run.keep_session else SESSION_LIFETIME)


async def sweep_sessions(sessions: PartnerSessions, now: datetime) -> int:
    """Delete every kept session past its expiry (a run abandoned after sign-in, a tab closed mid-run, a release
    that failed); how many. Once a day from the rotation timer."""
    names = await sessions.expired(now)
    for name in names:
        await sessions.forget(name)
    if names:
        log.info("expired partner sessions forgotten", extra={"event": "onboarding-session", "count": len(names)})
    return len(names)


# How long a finished run's rows are kept (ONBOARDING_RETENTION_DAYS): the run list and `onboard status` show it
# until then. The audit trail of what a run changed in customer tenants is in the targets' audit log, never pruned.
RUN_RETENTION = timedelta(days=90)


def prunable(run: Run, cutoff: datetime) -> bool:
    """Whether the run's rows may go: finished before `cutoff`, or signed in before it and never started (its
    session lasted hours). A run still running is kept whatever its age: an admin may resume it."""
    if run.state is RunState.FINISHED:
        return (run.finished_at or run.started_at) <= cutoff
    return run.state is RunState.SIGNED_IN and run.started_at <= cutoff


async def prune_runs(runs: OnboardingRuns, now: datetime, retention: timedelta = RUN_RETENTION) -> int:
    """Delete the rows of runs past `retention` (prunable), and the rows of losing starts (a retried or concurrent
    start that did not win the run) of every run made before it; how many runs were deleted. Once a day from the
    rotation timer; the audit log is not touched."""
    cutoff = now - retention
    pruned = 0
    for run_id, made_at in await runs.old_runs(cutoff):
        run: Run | None
        try:
            run, etag = await runs.get_run(run_id)
        except NotFound:
            run, etag = None, None  # its index entry was written, its run row never (a crash between): nothing to keep
        if run is None or prunable(run, cutoff):
            try:  # as read: a resume that reopened the run since (a kept session, a new sign-in) keeps it
                await runs.delete_run(run_id, made_at, etag)
            except Conflict:
                log.info("onboarding run reopened while pruned: kept", extra={"event": "onboarding-run",
                                                                               "run_id": run_id})
                continue
            pruned += 1
        else:
            await runs.delete_starts(run_id, keep=tenants_key(run))
    if pruned:
        log.info("old onboarding runs pruned", extra={"event": "onboarding-run", "count": pruned})
    return pruned


async def release_session(runs: OnboardingRuns, sessions: PartnerSessions, run_id: str, *,
                          force: bool = False) -> bool:
    """Forget the run's kept session once the run finished (unless the admin asked to keep it), or now with
    `force`; True when it was forgotten."""
    run, _ = await runs.get_run(run_id)
    if force or (run.state is RunState.FINISHED and not run.keep_session):
        await sessions.forget(session_secret_name(run_id))
        return True
    return False


class _Writer:
    """The tenant's row as this worker holds it: each step recorded with the ETag of the last write."""

    def __init__(self, runs: OnboardingRuns, run_id: str, progress: TenantProgress, etag: str, clock: Clock) -> None:
        self.runs, self.run_id, self.progress, self.etag, self.clock = runs, run_id, progress, etag, clock
        self.skipped_all = False

    async def step(self, step: Step, state: str, detail: str = "", code: str = "") -> None:
        steps = {**self.progress.steps, step.value: StepRecord(state, self.clock.now(), detail[:500], code)}
        await self.save(steps=steps)

    async def save(self, *, hold: float = 0.0, release: bool = False, **changes: Any) -> None:
        """Write the row, renewing the claim (for `hold` seconds more) while the tenant runs; a finished tenant, or
        `release`, gives it up."""
        now = self.clock.now()
        progress = replace(self.progress, updated_at=now, **changes)
        keep = progress.state is TenantState.RUNNING and not release
        self.progress = replace(progress, claimed_until=now + TENANT_CLAIM + timedelta(seconds=hold) if keep else None)
        self.etag = await self.runs.replace_tenant(self.run_id, self.progress, self.etag)


def parse_picks(value: object) -> list[TenantPick] | None:
    """The tenants of a run request: "all" (None), or a list of tenant ids or {tenantId, appId?, proofpointDomain?}.
    ValueError naming the field otherwise."""
    if value == "all":
        return None
    if not isinstance(value, list) or not value or len(value) > 5000:
        raise ValueError('tenants: must be "all" or a list of 1 to 5000 tenants')
    picks: list[TenantPick] = []
    for i, item in enumerate(value):
        doc = {"tenantId": item} if isinstance(item, str) else item
        if not isinstance(doc, dict) or set(doc) - {"tenantId", "appId", "proofpointDomain"}:
            raise ValueError(f"tenants[{i}]: must be a tenant id or an object with tenantId, appId, proofpointDomain")
        tenant, app, domain = doc.get("tenantId"), doc.get("appId", ""), doc.get("proofpointDomain", "")
        if not isinstance(tenant, str) or not GUID.fullmatch(tenant):
            raise ValueError(f"tenants[{i}].tenantId: must be a GUID")
        if not isinstance(app, str) or (app and not GUID.fullmatch(app)):
            raise ValueError(f"tenants[{i}].appId: must be a GUID")
        if not isinstance(domain, str) or (domain and not DOMAIN.fullmatch(domain)):
            raise ValueError(f"tenants[{i}].proofpointDomain: must be a domain name")
        picks.append(TenantPick(tenant.lower(), app.lower(), domain.lower()))
    if len({p.tenant_id for p in picks}) != len(picks):
        raise ValueError("tenants: each tenant at most once")
    return picks


DOMAIN = re.compile(r"\A(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z", re.IGNORECASE)


def engine_dry_run(engine: Any) -> DryRun:
    """The rotation engine's dry run of one target (shared.rotation.Engine.rotate_now with dry_run), as a step."""

    async def dry_run(tenant_id: str, app_id: str, actor: str) -> dict[str, str]:
        try:
            o = await engine.rotate_now(tenant_id, app_id, force=True, dry_run=True, actor=actor)
        except RotationError as error:
            return {"result": "failed", "message": error.message, "code": error.code}
        return {"result": o.result, "message": o.message, "code": o.error_code}

    return dry_run
