"""One visit for a customer without GDAP (issue 23): after admin consent, the consent page's second click.

The consent page (shared.onboarding, /api/consent) lists the tenant's Proofpoint apps. For each one the rotator does
not watch yet it offers a link, "Add the rotator as owner and register": Entra's authorize endpoint of the customer's
own tenant with the MSP app (authorization code + PKCE, learn.microsoft.com/entra/identity-platform/
v2-oauth2-auth-code-flow; the consent just made the MSP app's service principal, so the code flow works there). The
same admin signs in; Entra returns the browser to /api/consent (the redirect URI the consent already uses: nothing
more to register) with `code` and `state`. The rotator then, in this one request:
1. trusts the answer only with a state it signed here: bound to the tenant, the app and the step, short-lived, good
   once (spent in the consent store before the code is redeemed, so a replay changes nothing);
2. redeems the code with the PKCE verifier (derived from the state's nonce under the Key Vault key: never carried or
   stored) for the admin's delegated token, which lives in this request's memory only;
3. adds its own service principal as owner of the chosen app with that token (Graph POST /applications/{id}/owners/
   $ref: delegated Application.ReadWrite.All, and the admin must hold Application Administrator, Cloud Application
   Administrator or Global Administrator: application-post-owners.md, delegate-by-task.md "Manage application
   owners");
4. registers the target with the MSP's destinations (the registrar: the Proofpoint org matched on the tenant's
   verified domains, the destinations template of bulk onboarding);
5. runs a dry run;
and the page says each step with the app's name and id, or what failed and the fix. Every change is audited with
the admin's name.

A state is `o1.<payload>.<signature>` (base64url), the payload `{"t": tenant, "a": app id, "s": "owner", "n": nonce,
"e": expiry, "k": key version}`, signed with the consent links' key (ports.ConsentKeys) under a label of its own, so
no consent state is a one-visit state and no signature is ever a verifier.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

from shared import consent, sealed
from shared.consent import ConsentRefused
from shared.domain import GUID, Actor, Target, actor_of
from shared.errors import AppNotFound, Conflict, NotFound, PartnerRefused, RotationError
from shared.ports import ConsentKeys, ConsentStore, Directory, Event, PartnerAdmin, ProofpointOrgs, StateStore

log = logging.getLogger(__name__)

VERSION = "o1"
STEP_OWNER = "owner"
LIFETIME = timedelta(minutes=30)  # the admin reads the page, then clicks; Entra's codes themselves live minutes
MAX_STATE_LENGTH = 1024
MAX_CODE_LENGTH = 4096
_STATE_LABEL = b"onevisit-state\x00"
_VERIFIER_LABEL = b"onevisit-pkce-verifier\x00"
# The delegated scopes the second click asks for: adding an owner (application-post-owners.md: Application.ReadWrite.
# All, least privileged for delegated calls), the tenant's domains to find its Proofpoint org (domain-list.md:
# Domain.Read.All), and the admin's name for the audit trail (openid profile: the ID token's preferred_username).
SCOPES = (
    "https://graph.microsoft.com/Application.ReadWrite.All",
    "https://graph.microsoft.com/Domain.Read.All",
    "openid",
    "profile",
)
# What the admin does when the token endpoint refuses the code (the delegated adapter's codes for Entra's AADSTS).
SIGN_IN_FIXES = {
    "AppNotConsented": "the consent has not reached Entra's sign-in yet: wait a minute, then open the link on the "
                       "consent page again",
    "SignInExpired": "the sign-in took too long: sign in again (the button below)",
    "TokenEndpointUnavailable": "Entra did not answer: sign in again in a moment (the button below)",
}
# What a customer's admin needs for step 3 (delegate-by-task.md, "Manage application owners"; Graph's owner $ref).
OWNER_ROLES = "Application Administrator, Cloud Application Administrator or Global Administrator"


@dataclass(frozen=True)
class VisitState:
    """What a verified one-visit state says."""

    tenant_id: str
    app_id: str
    step: str
    nonce: str
    expires: datetime
    key_version: str


def is_visit_state(text: str) -> bool:
    """Whether an answer at /api/consent belongs to the second click (its state is a one-visit state)."""
    return text.startswith(f"{VERSION}.")


def sign(key: bytes, key_version: str, tenant_id: str, app_id: str, now: datetime,
         lifetime: timedelta = LIFETIME) -> tuple[str, VisitState]:
    """A new state for the second click on `app_id` of `tenant_id`."""
    claims = VisitState(tenant_id.lower(), app_id.lower(), STEP_OWNER, secrets.token_hex(16),
                        (now + lifetime).astimezone(UTC).replace(microsecond=0), key_version)
    doc = {"t": claims.tenant_id, "a": claims.app_id, "s": claims.step, "n": claims.nonce,
           "e": int(claims.expires.timestamp()), "k": key_version}
    return sealed.seal(key, _STATE_LABEL, VERSION, doc), claims


def verifier(key: bytes, nonce: str) -> str:
    """The PKCE code verifier of the sign-in with this nonce: 43 characters of base64url (RFC 7636 section 4.1)."""
    return sealed.b64(sealed.mac(key, _VERIFIER_LABEL, nonce))


def challenge(code_verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 section 4.2)."""
    return sealed.b64(hashlib.sha256(code_verifier.encode("ascii")).digest())


def _invalid(why: str) -> ConsentRefused:
    return ConsentRefused("InvalidState", f"this sign-in answer carries no state this rotator made ({why}); open the "
                          "consent page's link again, or ask your MSP for a new consent link")


def unverified(text: str) -> VisitState:
    """The claims of a state before its signature is checked: only to know which key version to check it with."""
    if not text:
        raise ConsentRefused("MissingState", "the answer carries no state: open the link on the consent page again")
    doc = sealed.opened(text, VERSION, MAX_STATE_LENGTH, _invalid)
    tenant, app, step, nonce, expires, version = (doc.get(k) for k in ("t", "a", "s", "n", "e", "k"))
    if not (isinstance(tenant, str) and GUID.fullmatch(tenant) and isinstance(app, str) and GUID.fullmatch(app)
            and step == STEP_OWNER and isinstance(nonce, str) and len(nonce) == 32
            and all(c in "0123456789abcdef" for c in nonce) and isinstance(version, str) and 0 < len(version) <= 64
            and version.isalnum()):
        raise _invalid("incomplete")
    return VisitState(tenant.lower(), app.lower(), step, nonce, sealed.moment(expires, _invalid), version)


def verify(text: str, key: bytes, now: datetime) -> VisitState:
    """The state's claims once its signature matches `key` and it has not expired; ConsentRefused otherwise."""
    claims = unverified(text)
    sealed.check_signature(text, key, _STATE_LABEL, _invalid)
    if now >= claims.expires:
        raise ConsentRefused("StateExpired", f"this link expired at {claims.expires.isoformat()} (it is good for "
                             f"{int(LIFETIME.total_seconds() // 60)} minutes); open the consent page's link again, "
                             "or ask your MSP for a new consent link")
    return claims


def authorize_url(authority: str, tenant_id: str, client_id: str, redirect_uri: str, state: str,
                  code_challenge: str) -> str:
    """Entra's v2.0 authorize request at the customer's own tenant (v2-oauth2-auth-code-flow.md, "Request an
    authorization code"), with PKCE S256 and `prompt=select_account` (the admin picks the account that may add an
    owner, never a session taken silently)."""
    query = urlencode({
        "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "response_mode": "query",
        "scope": " ".join(SCOPES), "state": state, "code_challenge": code_challenge,
        "code_challenge_method": "S256", "prompt": "select_account",
    })
    return f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/authorize?{query}"


async def owner_links(keys: ConsentKeys, authority: str, client_id: str, redirect_uri: str, tenant_id: str,
                      app_ids: Sequence[str], now: datetime) -> dict[str, str]:
    """The second click's link for each app of the tenant (by app id), each with a state of its own."""
    version, key = await keys.signing_key()
    links = {}
    for app_id in app_ids:
        state, claims = sign(key, version, tenant_id, app_id, now)
        links[app_id] = authorize_url(authority, claims.tenant_id, client_id, redirect_uri, state,
                                      challenge(verifier(key, claims.nonce)))
    return links


# --- The answer: trust it, spend it, redeem the code, then the steps ----------------------------------------------


@dataclass(frozen=True)
class VisitStep:
    """One step of the second click: done, already (nothing to do), failed (with the fix) or skipped."""

    name: str
    outcome: str
    detail: str
    fix: str = ""
    code: str = ""


@dataclass(frozen=True)
class VisitResult:
    """What the second click did, for the page (never a token or a secret)."""

    tenant_id: str
    app_id: str
    app_name: str
    admin: str
    steps: tuple[VisitStep, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(s.outcome in ("done", "already") for s in self.steps)

    @property
    def retryable(self) -> bool:
        """Another sign-in may fix it (the sign-in or the owner failed); a registration the MSP makes is not."""
        return any(s.outcome == "failed" and s.name in ("sign-in", "owner") for s in self.steps)


class RegistrationStopped(RotationError):
    """The target could not be registered (no Proofpoint org matches the tenant, several do...); `fix` says what."""

    def __init__(self, message: str, *, code: str, fix: str) -> None:
        super().__init__(message, code=code)
        self.fix = fix


@dataclass(frozen=True)
class Registration:
    """A target registered (or found registered) by the second click, and what to say about it."""

    target: Target
    created: bool
    detail: str


class AdminSession(Protocol):
    """What the second click needs of the admin's delegated session (a PartnerSession has it: the same adapter, with
    the customer's tenant as home). Errors as PartnerSession's."""

    admin: PartnerAdmin

    async def add_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool: ...

    async def domains(self, tenant_id: str) -> list[str]: ...

    async def close(self) -> None: ...


# Redeems an authorization code at the customer's tenant with its PKCE verifier (the rotator's client assertion as
# its credential) into the admin's delegated session (shared.adapters.delegated, branch `partner`): (tenant, code,
# verifier, redirect URI, scopes).
Redeem = Callable[[str, str, str, str, Sequence[str]], Awaitable[AdminSession]]
# Registers the target: (tenant, app id, app display name, the tenant's verified domains).
Register = Callable[[str, str, str, Sequence[str]], Awaitable[Registration]]
# The engine's dry run of a target: (tenant, app id, actor) -> {"result", "message"}.
DryRun = Callable[[str, str, str], Awaitable[Mapping[str, Any]]]


def _param(params: Mapping[str, str], name: str) -> str:
    return params.get(name) or ""


async def _verified(keys: ConsentKeys, text: str, now: datetime) -> tuple[VisitState, bytes]:
    claims = unverified(text)
    key = await keys.key(claims.key_version)
    if key is None:
        raise _invalid("unknown key")
    return verify(text, key, now), key


@dataclass(frozen=True)
class VisitPorts:
    """What the second click works through."""

    keys: ConsentKeys
    consents: ConsentStore
    directory: Directory
    state: StateStore
    redeem: Redeem
    register: Register
    dry_run: DryRun
    redirect_uri: str


async def complete(ports: VisitPorts, params: Mapping[str, str], now: datetime) -> VisitResult:
    """Entra's answer to the second click. ConsentRefused, with nothing done, when it cannot be trusted (forged,
    expired, replayed) or Entra refused the sign-in; otherwise each step's outcome (a step that fails says the fix
    and stops the later ones)."""
    claims, key = await _verified(ports.keys, _param(params, "state"), now)
    if _param(params, "error"):
        # Only Entra's codes, and only with a state this rotator signed: the callback is anonymous (as the consent's).
        code = consent.entra_error_code(_param(params, "error"), _param(params, "error_description"))
        raise ConsentRefused("SignInDenied", f"Entra ID did not sign the admin in to tenant {claims.tenant_id}"
                             + (f" ({code})" if code else "") + "; nothing was changed. Open the link again and sign "
                             f"in with an account of this tenant holding {OWNER_ROLES}")
    code = _param(params, "code")
    if not code:
        raise ConsentRefused("MissingParameter", "the sign-in answer carries no authorization code; open the link "
                             "on the consent page again")
    if len(code) > MAX_CODE_LENGTH:
        raise ConsentRefused("InvalidParameter", "the authorization code is longer than any Entra issues")
    try:
        await ports.consents.use_state(claims.tenant_id, claims.nonce, claims.expires)
    except Conflict:
        if await ports.consents.state_unfinished(claims.tenant_id, claims.nonce):
            # Spent, but its answer was never given (the process died after the state was spent: before the owner,
            # after it, during the registration). The code is spent too (Entra redeems one once), so the state cannot
            # act again; within its window it earns the page it never showed, saying so, whose retry is a fresh
            # link for the same tenant and app (the entry point's, as for any sign-in that failed), nothing else.
            return interrupted(claims)
        raise ConsentRefused("StateReplayed", "this sign-in answer was used already: what it did is on the page it "
                             "showed then (and in your MSP's audit trail). Open the consent page's link again to "
                             "retry") from None
    result = await _signed_in(ports, claims, key, code)
    try:
        await ports.consents.finish_state(claims.tenant_id, claims.nonce)
    except RotationError as error:  # the answer stands; a reload would only offer a fresh link
        log.warning("one-visit state not marked finished: %s", error.code)
    return result


def interrupted(claims: VisitState) -> VisitResult:
    """The answer to a second click whose first answer was cut off (the process died) before it was given: nothing
    done now; the admin signs in again (a fresh link for the same tenant and app) and the steps go on, each one
    idempotent (an owner added is found in place, a target registered is kept)."""
    return VisitResult(claims.tenant_id, claims.app_id, "", "", (VisitStep(
        "sign-in", "failed", f"the rotator was interrupted while it worked on app id {claims.app_id} after your "
        "sign-in, before it could answer: what it did is in your MSP's audit trail and is kept",
        "sign in again (the button below) to finish", "VisitInterrupted"),))


async def _signed_in(ports: VisitPorts, claims: VisitState, key: bytes, code: str) -> VisitResult:
    try:
        session = await ports.redeem(claims.tenant_id, code, verifier(key, claims.nonce), ports.redirect_uri, SCOPES)
    except RotationError as error:
        # The adapter's own fixes speak to a partner admin (GDAP, Partner Center): this is the customer's admin.
        fix = SIGN_IN_FIXES.get(error.code, "sign in again (the button below) with an account of "
                                f"this tenant holding {OWNER_ROLES}")
        return VisitResult(claims.tenant_id, claims.app_id, "", "", (
            VisitStep("sign-in", "failed", f"the sign-in could not be completed: {error.message}", fix, error.code),))
    try:
        return await _steps(ports, session, claims)
    finally:
        await session.close()  # the admin's token is forgotten with this request


async def _steps(ports: VisitPorts, session: AdminSession, claims: VisitState) -> VisitResult:
    admin = session.admin.user_principal_name or session.admin.object_id
    actor = actor_of(Actor.MANUAL, admin)
    steps = [VisitStep("sign-in", "done", f"signed in as {admin}")]

    def result(app_name: str = "") -> VisitResult:
        return VisitResult(claims.tenant_id, claims.app_id, app_name, admin, tuple(steps))

    tenant, app_id = claims.tenant_id, claims.app_id
    try:
        app = await ports.directory.get_application(tenant, app_id)
        ownership = await ports.directory.ownership(tenant, app_id)
    except AppNotFound:
        steps.append(VisitStep("owner", "failed", f"no app registration with app id {app_id} in tenant {tenant}",
                               "check the app in Entra ID (App registrations), then open the consent page again",
                               "AppNotFound"))
        return result()
    except RotationError as error:
        steps.append(VisitStep("owner", "failed", f"the rotator could not read the app: {error.message}",
                               "consent can take a few minutes to reach Microsoft Graph: sign in again shortly "
                               "(the button below)", error.code))
        return result()
    named = f"{app.display_name} (app id {app.app_id})"
    principal = ownership.principal
    if ownership.owned:
        steps.append(VisitStep("owner", "already", f"the rotator is an owner of {named} already"))
    elif principal is None:
        steps.append(VisitStep("owner", "failed", "the rotator cannot name its own service principal",
                               "your MSP sets AZURE_CLIENT_ID / MSP_APP_CLIENT_ID", "PrincipalUnknown"))
        return result(app.display_name)
    else:
        # Intent first: a process that dies between Graph's answer and the outcome's record still leaves the change
        # in the audit trail (as bulk onboarding records each change: started, then its outcome).
        await _audit(ports, tenant, app_id, "owner adding", actor)
        try:
            added = await session.add_owner(tenant, app.object_id, principal.object_id)
        except PartnerRefused as error:
            steps.append(VisitStep("owner", "failed", f"Microsoft Graph refused to add {principal.describe()} as "
                                   f"owner of {named}: {error.message}", _owner_fix(error), error.code))
            await _audit(ports, tenant, app_id, "owner refused", actor, error.code)
            return result(app.display_name)
        except RotationError as error:
            steps.append(VisitStep("owner", "failed", f"adding the owner of {named} failed: {error.message}",
                                   "sign in again (the button below)", error.code))
            # Audited too: a call cut after Graph took it (a lost connection, a 5xx) may have added the owner, and
            # every change in the customer's tenant is in the trail with the admin's name.
            await _audit(ports, tenant, app_id, "owner failed", actor, error.code)
            return result(app.display_name)
        steps.append(VisitStep("owner", "done" if added else "already",
                               f"{principal.describe()} {'added as' if added else 'is already an'} owner of {named}"))
        await _audit(ports, tenant, app_id, "owner added" if added else "owner present", actor)
    try:
        domains = await session.domains(tenant)
        registration = await ports.register(tenant, app_id, app.display_name, domains)
    except RegistrationStopped as error:
        steps.append(VisitStep("register", "failed", error.message, error.fix, error.code))
        return result(app.display_name)
    except RotationError as error:
        steps.append(VisitStep("register", "failed", f"registering {named} failed: {error.message}",
                               "your MSP registers it (the owner is in place)", error.code))
        return result(app.display_name)
    steps.append(VisitStep("register", "done" if registration.created else "already", registration.detail))
    if registration.created:
        await _audit(ports, tenant, app_id, "registered", actor)
    try:
        preview = await ports.dry_run(tenant, app_id, actor)
    except RotationError as error:
        steps.append(VisitStep("dry-run", "failed", f"the dry run failed: {error.message}",
                               "your MSP looks at it on the dashboard", error.code))
        return result(app.display_name)
    outcome = str(preview.get("result", ""))
    message = str(preview.get("message", "") or preview.get("status", ""))
    steps.append(VisitStep("dry-run", "done", f"dry run of {named}: {outcome}" + (f" ({message})" if message else "")))
    return result(app.display_name)


def _owner_fix(error: PartnerRefused) -> str:
    if error.code in ("Authorization_RequestDenied", "MissingGdapRole", "Forbidden", "403"):
        return (f"sign in with an account holding {OWNER_ROLES} in this tenant (adding an owner to an app "
                "registration needs one of them): the button below signs in again")
    return "sign in again (the button below)"


async def _audit(ports: VisitPorts, tenant: str, app_id: str, outcome: str, actor: str, code: str = "") -> None:
    await ports.state.record(Event(tenant, app_id, "onevisit", outcome, actor, error_code=code,
                                   detail="the customer's admin, on the consent page's second click"))



# --- The registrar: the Proofpoint org matched on the tenant's domains, the MSP's destinations template ------------


@dataclass(frozen=True)
class TemplateRegistrar:
    """Registers the target as bulk onboarding does (shared.bulk_onboarding): the Proofpoint org of the MSP's channel
    whose domains include one of the tenant's verified domains, and the MSP's destinations template rendered for it."""

    state: StateStore
    orgs: ProofpointOrgs | None  # None: no channel org configured (PROOFPOINT_CHANNEL_DOMAIN)
    template: Sequence[Mapping[str, Any]]
    allowed_hosts: frozenset[str] = frozenset()

    async def __call__(self, tenant_id: str, app_id: str, app_name: str, domains: Sequence[str]) -> Registration:
        from shared.bulk_onboarding import InvalidTemplate, match_orgs, render_destinations
        from shared.registry import customer_name

        by_hand = (f"your MSP registers {app_name} (app id {app_id}) itself: the rotator is its owner now, so "
                   "nothing more is needed from you")
        try:
            found, _ = await self.state.get_target(tenant_id, app_id)
            return Registration(found, False, f"{app_name} (app id {app_id}) is registered already, for customer "
                                f"{found.customer or tenant_id}")
        except NotFound:
            pass
        if self.orgs is None:
            raise RegistrationStopped("the MSP has not named its Proofpoint channel org (PROOFPOINT_CHANNEL_DOMAIN), "
                                      "so the customer's org cannot be found", code="ProofpointChannelMissing",
                                      fix=by_hand)
        matched = match_orgs(await self.orgs.child_orgs(), domains)
        shown = ", ".join(domains[:5]) or "none"
        if not matched:
            raise RegistrationStopped(f"no Proofpoint Essentials org of the MSP has one of this tenant's domains "
                                      f"({shown})", code="ProofpointOrgNotFound", fix=by_hand)
        if len(matched) > 1:
            names = ", ".join(o.primary_domain for o in matched)
            raise RegistrationStopped(f"several Proofpoint Essentials orgs match this tenant's domains ({names})",
                                      code="ProofpointOrgAmbiguous", fix=by_hand)
        org = matched[0]
        name = customer_name(org.name or app_name)  # as the registry takes a name from a person
        values = {"tenantId": tenant_id, "customer": name, "domain": org.primary_domain.lower(),
                  "stack": org.stack}
        try:
            destinations = render_destinations(self.template, values, self.allowed_hosts)
        except InvalidTemplate as error:
            raise RegistrationStopped(f"the MSP's destinations template does not fit: {error}",
                                      code="InvalidTemplate", fix=by_hand) from None
        target = Target(tenant_id, app_id, name, destinations=destinations)
        try:
            await self.state.create_target(target)
        except Conflict:
            return Registration(target, False, f"{app_name} (app id {app_id}) is registered already")
        names = ", ".join(d.name for d in destinations)
        return Registration(target, True, f"{app_name} (app id {app_id}) registered for customer {target.customer}: "
                            f"Proofpoint Essentials org {org.primary_domain.lower()} ({org.stack}); destinations "
                            f"{names}")
