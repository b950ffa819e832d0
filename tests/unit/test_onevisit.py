"""The consent page's second click on the fakes (shared/onevisit.py): the state (signed, bound to tenant, app and step,
expiring, good once), the PKCE verifier, each step and refusal with its fix, the token never kept."""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from shared import consent, onevisit, sealed
from shared.bulk_onboarding import DEFAULT_TEMPLATE
from shared.consent import ConsentRefused
from shared.domain import Target
from shared.errors import Conflict, PartnerRefused, RotationError, Throttled, Unreachable
from shared.onevisit import Registration, RegistrationStopped, TemplateRegistrar, VisitPorts
from shared.ports import PartnerAdmin, ProofpointOrg
from tests.fakes import ROTATOR, FakeProofpointOrgs, FakeWorld

NOW = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
TENANT = "c0000000-0000-4000-8000-000000000001"
ADMIN = PartnerAdmin(TENANT, "c0000000-0000-4000-8000-0000000000ad", "admin@contoso.example", "Contoso Admin")


class Keys:
    def __init__(self) -> None:
        self.keys = {"v1": secrets.token_bytes(32)}

    async def signing_key(self) -> tuple[str, bytes]:
        return "v1", self.keys["v1"]

    async def key(self, version: str) -> bytes | None:
        return self.keys.get(version)


class Consents:
    def __init__(self) -> None:
        self.used: set[tuple[str, str]] = set()
        self.finished: set[tuple[str, str]] = set()

    async def use_state(self, tenant_id: str, nonce: str, expires: datetime) -> None:
        if (tenant_id, nonce) in self.used:
            raise Conflict("used", code="StateReplayed")
        self.used.add((tenant_id, nonce))

    async def finish_state(self, tenant_id: str, nonce: str) -> None:
        self.finished.add((tenant_id, nonce))

    async def state_unfinished(self, tenant_id: str, nonce: str) -> bool:
        return (tenant_id, nonce) in self.used - self.finished

    async def record_consent(self, record: object) -> None: ...

    async def consent(self, tenant_id: str) -> None:
        return None


@dataclass
class Session:
    """The admin's delegated session: adds owners in the fake directory as Graph would."""

    world: FakeWorld
    refuse: PartnerRefused | None = None
    domain_names: list[str] = field(default_factory=lambda: ["contoso.example", "contoso.onmicrosoft.com"])
    closed: bool = False
    admin: PartnerAdmin = ADMIN

    async def add_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        if self.refuse is not None:
            raise self.refuse
        key, _ = self.world.directory._find(tenant_id, application_object_id)
        assert principal_id == ROTATOR.object_id
        if key not in self.world.directory.unowned:
            return False
        self.world.directory.unowned.discard(key)
        return True

    async def domains(self, tenant_id: str) -> list[str]:
        return list(self.domain_names)

    async def close(self) -> None:
        self.closed = True


@dataclass
class Setup:
    world: FakeWorld
    keys: Keys
    consents: Consents
    session: Session
    redeemed: list[tuple[str, str, str]] = field(default_factory=list)
    register_error: RegistrationStopped | None = None
    redeem_error: Exception | None = None

    def ports(self) -> VisitPorts:
        async def redeem(tenant: str, code: str, verifier: str, redirect_uri: str,
                         scopes: Sequence[str]) -> Session:
            if self.redeem_error is not None:
                raise self.redeem_error
            self.redeemed.append((tenant, code, verifier))
            return self.session

        async def register(tenant: str, app_id: str, name: str, domains: Sequence[str]) -> Registration:
            if self.register_error is not None:
                raise self.register_error
            if (tenant, app_id) in self.world.state.rows:  # as the registrar: a target there is kept
                return Registration(self.world.state.target(tenant, app_id), False, f"{name} is registered already")
            target = Target(tenant, app_id, "Contoso")
            await self.world.state.create_target(target)
            return Registration(target, True, f"registered {name} with Proofpoint org {domains[0]}")

        async def dry_run(tenant: str, app_id: str, actor: str) -> Mapping[str, Any]:
            return {"result": "would-rotate", "message": "10 days left"}

        return VisitPorts(self.keys, self.consents, self.world.directory, self.world.state,  # type: ignore[arg-type]
                          redeem, register, dry_run, "https://rotator.example/api/consent")  # type: ignore[arg-type]


@pytest.fixture
def setup() -> Setup:
    world = FakeWorld()
    world.directory.add_app(TENANT, APP, 10)
    world.directory.unowned.add((TENANT, APP))
    return Setup(world, Keys(), Consents(), Session(world))


APP = "a0000000-0000-4000-8000-000000000001"


async def link(s: Setup, tenant: str = TENANT, app: str = APP) -> dict[str, str]:
    url = (await onevisit.owner_links(s.keys, "https://login.example", "c11e0000-0000-4000-8000-000000000001",
                                      "https://rotator.example/api/consent", tenant, [app], NOW))[app]
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


async def answer(s: Setup, query: dict[str, str], code: str = "the-code") -> onevisit.VisitResult:
    return await onevisit.complete(s.ports(), {"code": code, "state": query["state"]}, NOW + timedelta(minutes=1))


async def test_the_link_asks_entra_for_a_code_with_pkce_at_the_customers_tenant(setup: Setup) -> None:
    url = (await onevisit.owner_links(setup.keys, "https://login.example", "c11e0000-0000-4000-8000-000000000001",
                                      "https://rotator.example/api/consent", TENANT, [APP], NOW))[APP]
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert parsed.path == f"/{TENANT}/oauth2/v2.0/authorize"
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == "https://rotator.example/api/consent"
    assert "https://graph.microsoft.com/Application.ReadWrite.All" in query["scope"].split()
    claims = onevisit.verify(query["state"], setup.keys.keys["v1"], NOW)
    assert (claims.tenant_id, claims.app_id, claims.step) == (TENANT, APP, "owner")
    # The challenge is the verifier's, and the verifier is nowhere in the link.
    v = onevisit.verifier(setup.keys.keys["v1"], claims.nonce)
    assert query["code_challenge"] == onevisit.challenge(v) and v not in url
    assert onevisit.is_visit_state(query["state"]) and not onevisit.is_visit_state("v1.x.y")


async def test_the_second_click_adds_the_owner_registers_and_dry_runs(setup: Setup) -> None:
    query = await link(setup)
    result = await answer(setup, query)

    assert result.ok and result.admin == "admin@contoso.example" and result.app_name == "Proofpoint Essentials"
    assert [(s.name, s.outcome) for s in result.steps] == [
        ("sign-in", "done"), ("owner", "done"), ("register", "done"), ("dry-run", "done")]
    owner = result.steps[1].detail
    assert ROTATOR.object_id in owner and APP in owner and "Proofpoint Essentials" in owner
    assert (TENANT, APP) not in setup.world.directory.unowned
    assert setup.world.state.target(TENANT, APP).customer == "Contoso"
    # Redeemed with the verifier the link's challenge was made from; the session closed after.
    [(tenant, code, verifier)] = setup.redeemed
    assert tenant == TENANT and code == "the-code" and onevisit.challenge(verifier) == query["code_challenge"]
    assert setup.session.closed
    audit = [e for e in setup.world.state.events_ if e.step == "onevisit"]
    assert [e.outcome for e in audit] == ["owner adding", "owner added", "registered"]
    assert {e.actor for e in audit} == {"manual:admin@contoso.example"}


async def test_a_replayed_answer_changes_nothing(setup: Setup) -> None:
    query = await link(setup)
    await answer(setup, query)
    setup.world.directory.unowned.add((TENANT, APP))  # someone removed the owner since: a replay must not re-add
    events = len(setup.world.state.events_)
    with pytest.raises(ConsentRefused) as refused:
        await answer(setup, query, code="another-code")
    assert refused.value.code == "StateReplayed"
    assert len(setup.redeemed) == 1 and (TENANT, APP) in setup.world.directory.unowned
    assert len(setup.world.state.events_) == events


@pytest.mark.parametrize("tamper", ["tenant", "app", "step", "signature", "expired", "consent-state", "missing",
                                    "unknown-key"])
async def test_an_answer_the_rotator_did_not_sign_for_this_tenant_app_and_step_is_refused(
    setup: Setup, tamper: str
) -> None:
    query = await link(setup)
    state = query["state"]
    _, payload, signature = state.split(".")
    doc = json.loads(sealed.unb64(payload))
    key = setup.keys.keys["v1"]
    now = NOW + timedelta(minutes=1)

    def resigned(**changes: Any) -> str:
        body = sealed.b64(json.dumps({**doc, **changes}).encode())
        return f"o1.{body}.{sealed.b64(sealed.mac(key, onevisit._STATE_LABEL, body))}"

    if tamper == "tenant":  # signed for another tenant, then its payload edited
        state = f"o1.{sealed.b64(json.dumps({**doc, 't': str(uuid.uuid4())}).encode())}.{signature}"
    elif tamper == "app":
        state = f"o1.{sealed.b64(json.dumps({**doc, 'a': str(uuid.uuid4())}).encode())}.{signature}"
    elif tamper == "step":
        state = resigned(s="register")
    elif tamper == "signature":
        state = f"o1.{payload}.{sealed.b64(b'x' * 32)}"
    elif tamper == "expired":
        now = NOW + onevisit.LIFETIME + timedelta(seconds=1)
    elif tamper == "consent-state":  # the first click's state is not the second's
        state, _ = consent.sign(key, "v1", TENANT, NOW, timedelta(hours=1))
    elif tamper == "missing":
        state = ""
    elif tamper == "unknown-key":
        setup.keys.keys = {"v2": secrets.token_bytes(32)}
    with pytest.raises(ConsentRefused) as refused:
        await onevisit.complete(setup.ports(), {"code": "c", "state": state}, now)
    assert refused.value.code in {"InvalidState", "StateExpired", "MissingState"}
    assert setup.redeemed == [] and setup.consents.used == set() and (TENANT, APP) in setup.world.directory.unowned


async def test_entras_refusal_shows_only_its_codes(setup: Setup) -> None:
    query = await link(setup)
    params = {"state": query["state"], "error": "access_denied",
              "error_description": "AADSTS65004: sign in again at https://evil.example"}
    with pytest.raises(ConsentRefused) as refused:
        await onevisit.complete(setup.ports(), params, NOW)
    assert refused.value.code == "SignInDenied" and "AADSTS65004" in refused.value.message
    assert "evil" not in refused.value.message and setup.redeemed == []


async def test_an_admin_without_the_role_is_told_which_role(setup: Setup) -> None:
    setup.session.refuse = PartnerRefused("Insufficient privileges to complete the operation.",
                                          code="Authorization_RequestDenied", fix="")
    result = await answer(setup, await link(setup))
    assert not result.ok and [s.name for s in result.steps] == ["sign-in", "owner"]
    owner = result.steps[-1]
    assert owner.outcome == "failed" and "Application Administrator" in owner.fix and APP in owner.detail
    assert setup.world.state.rows == {} and setup.session.closed
    assert any(e.outcome == "owner refused" for e in setup.world.state.events_)


async def test_an_owner_already_in_place_is_said_and_registration_goes_on(setup: Setup) -> None:
    setup.world.directory.unowned.clear()
    result = await answer(setup, await link(setup))
    assert [(s.name, s.outcome) for s in result.steps][1:3] == [("owner", "already"), ("register", "done")]


async def test_a_registration_that_cannot_be_made_names_the_fix(setup: Setup) -> None:
    setup.register_error = RegistrationStopped("no Proofpoint org of the MSP matches contoso.example",
                                               code="ProofpointOrgNotFound", fix="your MSP registers it by hand")
    result = await answer(setup, await link(setup))
    assert [(s.name, s.outcome) for s in result.steps][1:] == [("owner", "done"), ("register", "failed")]
    assert result.steps[-1].fix == "your MSP registers it by hand"


async def test_a_sign_in_the_token_endpoint_refuses_is_a_failed_step_with_the_fix(setup: Setup) -> None:
    setup.redeem_error = Unreachable("AADSTS50105: the user is not assigned", code="AADSTS50105")
    result = await answer(setup, await link(setup))
    assert [(s.name, s.outcome, s.code) for s in result.steps] == [("sign-in", "failed", "AADSTS50105")]
    assert "Application Administrator" in result.steps[0].fix


# --- The registrar: as bulk onboarding registers ------------------------------------------------------------------


def registrar(world: FakeWorld, *orgs: ProofpointOrg, configured: bool = True) -> TemplateRegistrar:
    listing = FakeProofpointOrgs(world.faults)
    listing.orgs = list(orgs)
    return TemplateRegistrar(world.state, listing if configured else None, DEFAULT_TEMPLATE)


CONTOSO = ProofpointOrg("Contoso Ltd", "contoso.example", ("contoso.example", "mail.contoso.example"), "us2")


async def test_the_registrar_matches_the_org_by_domain_and_renders_the_template() -> None:
    world = FakeWorld()
    other = ProofpointOrg("Fabrikam", "fabrikam.example", (), "eu1")
    done = await registrar(world, other, CONTOSO)(TENANT, APP, "PPE Sync", ["Mail.Contoso.Example", "x.onmicrosoft"])
    assert done.created and "contoso.example" in done.detail and "us2" in done.detail and APP in done.detail
    target = world.state.target(TENANT, APP)
    assert target.customer == "Contoso Ltd"
    [proofpoint] = target.destinations
    assert proofpoint.kind == "proofpoint" and proofpoint.options["domain"] == "contoso.example"
    assert proofpoint.options["stack"] == "us2"
    again = await registrar(world, CONTOSO)(TENANT, APP, "PPE Sync", ["contoso.example"])
    assert not again.created and "registered already" in again.detail


@pytest.mark.parametrize(("orgs", "configured", "code"), [
    ((), True, "ProofpointOrgNotFound"),
    ((CONTOSO, ProofpointOrg("Contoso EU", "contoso.example", (), "eu1")), True, "ProofpointOrgAmbiguous"),
    ((CONTOSO,), False, "ProofpointChannelMissing"),
])
async def test_the_registrar_stops_with_the_cause_when_it_cannot_tell_the_org(
    orgs: tuple[ProofpointOrg, ...], configured: bool, code: str
) -> None:
    world = FakeWorld()
    with pytest.raises(RegistrationStopped) as stopped:
        await registrar(world, *orgs, configured=configured)(TENANT, APP, "PPE", ["contoso.example"])
    assert stopped.value.code == code and "registers" in stopped.value.fix
    assert world.state.rows == {}


async def test_each_app_gets_a_link_bound_to_it(setup: Setup) -> None:
    other = "a0000000-0000-4000-8000-000000000002"
    links = await onevisit.owner_links(setup.keys, "https://login.example", "c11e0000-0000-4000-8000-000000000001",
                                       "https://rotator.example/api/consent", TENANT, [APP, other], NOW)
    states = {app: dict(parse_qs(urlparse(url).query))["state"][0] for app, url in links.items()}
    claims = {app: onevisit.verify(state, setup.keys.keys["v1"], NOW) for app, state in states.items()}
    assert {app: c.app_id for app, c in claims.items()} == {APP: APP, other: other}
    assert claims[APP].nonce != claims[other].nonce


async def test_a_partner_flavoured_fix_is_never_shown_to_the_customers_admin(setup: Setup) -> None:
    setup.redeem_error = PartnerRefused("Entra refused the sign-in: AADSTS65001", code="AppNotConsented",
                                        fix="install it with the Partner Center method")
    result = await answer(setup, await link(setup))
    [step] = result.steps
    assert step.code == "AppNotConsented" and "Partner Center" not in step.fix and "wait a minute" in step.fix


@pytest.mark.parametrize("error", [Unreachable("the connection was lost", code="NetworkError"),
                                   Throttled("HTTP 503", code="ServiceUnavailable", retry_after=None)])
async def test_an_owner_call_that_failed_without_a_refusal_is_audited_with_the_admins_name(
        setup: Setup, error: RotationError) -> None:
    """A call cut after Graph took it may have added the owner: it is in the audit trail with the admin's name and
    the error's code, as a refusal is (nothing was audited before)."""
    session = setup.session

    async def cut(tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        await Session.add_owner(session, tenant_id, application_object_id, principal_id)  # Graph took it...
        raise error  # ...and the answer was lost

    session.add_owner = cut  # type: ignore[method-assign]
    result = await answer(setup, await link(setup))
    assert [(s.name, s.outcome) for s in result.steps] == [("sign-in", "done"), ("owner", "failed")]
    intent, event = [e for e in setup.world.state.events_ if e.step == "onevisit"]
    assert (intent.outcome, intent.actor) == ("owner adding", "manual:admin@contoso.example")
    assert (event.outcome, event.actor, event.error_code) == ("owner failed", "manual:admin@contoso.example",
                                                              error.code)


async def test_the_registrar_takes_proofpoints_org_name_as_the_registry_takes_a_name() -> None:
    """Proofpoint's org name is another service's text: the target's customer is one line, NFC, without control,
    format or separator characters (it was stored as it came)."""
    world = FakeWorld()
    odd = ProofpointOrg("Contoso\r\nLtd\u00a0 (EU)", "contoso.example", (), "us2")
    done = await registrar(world, odd)(TENANT, APP, "PPE Sync", ["contoso.example"])
    assert done.created and world.state.target(TENANT, APP).customer == "Contoso Ltd (EU)"


@pytest.mark.parametrize("where", ["redeem", "owner", "register", "dry-run", "finish"])
async def test_a_visit_cut_off_after_its_state_was_spent_is_finished_with_a_fresh_sign_in(
        setup: Setup, where: str) -> None:
    """The process dies after the state was spent (before the owner, after it, in the registration, the dry run, or
    marking the answer given): the same answer again earns no action, only a failed sign-in step VisitInterrupted for
    the same tenant and app (retryable: a fresh link, within the state's window); a sign-in with that link finishes,
    the owner kept, nothing twice."""
    from tests.fakes import Crash

    ports = setup.ports()
    crashes = {"redeem": "redeem", "register": "register", "dry-run": "dry_run"}

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise Crash(where)

    if where == "owner":  # the owner is added, then the process dies
        real = setup.session.add_owner

        async def add_then_die(*args: Any) -> bool:
            await real(*args)
            raise Crash(where)

        setup.session.add_owner = add_then_die  # type: ignore[method-assign]
    elif where == "finish":
        setup.consents.finish_state = crash  # type: ignore[method-assign]
    else:
        ports = dataclasses.replace(ports, **{crashes[where]: crash})
    query = await link(setup)
    with pytest.raises(Crash):
        await onevisit.complete(ports, {"code": "the-code", "state": query["state"]}, NOW + timedelta(minutes=1))
    events = len(setup.world.state.events_)
    setup.session = Session(setup.world)  # the next process
    setup.consents.finish_state = Consents.finish_state.__get__(setup.consents)  # type: ignore[method-assign]

    cut = await answer(setup, query, code="the-code")  # the browser reloads the answer it never got
    assert (cut.tenant_id, cut.app_id, cut.retryable, cut.ok) == (TENANT, APP, True, False)
    assert [(s.name, s.outcome, s.code) for s in cut.steps] == [("sign-in", "failed", "VisitInterrupted")]
    assert "sign in again" in cut.steps[0].fix
    assert len(setup.world.state.events_) == events and len(setup.redeemed) == (0 if where == "redeem" else 1)
    assert (await answer(setup, query, code="the-code")).steps == cut.steps  # again, until the window ends
    with pytest.raises(ConsentRefused) as late:  # past the state's window: a new consent link, as before
        await onevisit.complete(setup.ports(), {"code": "c", "state": query["state"]}, NOW + onevisit.LIFETIME)
    assert late.value.code == "StateExpired"

    fresh = await link(setup)  # what the entry point offers as the retry of a failed sign-in
    result = await answer(setup, fresh, code="a-new-code")
    assert result.ok, result
    outcomes = dict((s.name, s.outcome) for s in result.steps)
    assert outcomes["owner"] == ("done" if where == "redeem" else "already")
    assert outcomes["register"] == ("done" if where in ("redeem", "owner", "register") else "already")
    assert (TENANT, APP) not in setup.world.directory.unowned
    assert setup.world.state.target(TENANT, APP).customer == "Contoso"
    audit = [e.outcome for e in setup.world.state.events_ if e.step == "onevisit"]
    assert audit == {  # the owner change is in the trail however the first attempt ended; nothing is done twice
        "redeem": ["owner adding", "owner added", "registered"],
        "owner": ["owner adding", "registered"],  # the intent, then the owner found in place
    }.get(where, ["owner adding", "owner added", "registered"]), audit
    with pytest.raises(ConsentRefused) as replay:  # the finished visit's answer: replayed, as any
        await answer(setup, fresh, code="a-new-code")
    assert replay.value.code == "StateReplayed"
