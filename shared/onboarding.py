"""Onboarding a customer tenant: the admin-consent link, and what the consent page does with Entra's answer.

The MSP sends the link (GET /api/consent-url/{tenantId}, `python -m shared consent-url`, `scripts/onboard-customer.sh
consent-url`) to a customer's Global Administrator; Entra sends the admin back to /api/consent, which trusts the
answer only with a state this rotator signed (shared.consent), records the consent, and shows the Proofpoint app
registrations found in the tenant with their secrets' expiry and the next step for each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared import consent
from shared.consent import ConsentRefused
from shared.domain import GUID
from shared.errors import Conflict, RotationError
from shared.ports import Consent, ConsentKeys, ConsentStore, Directory, Principal, StateStore
from shared.service import discover
from shared.settings import IdentityMode, Settings

# The longest error text from Entra shown back on the page (its descriptions carry trace ids, not secrets).


class ConsentUnavailable(Exception):
    """This deployment cannot make consent links (single-tenant mode, or no redirect URI known)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_deployment(settings: Settings) -> None:
    if settings.identity_mode is not IdentityMode.FEDERATED:
        raise ConsentUnavailable(
            "ConsentNotApplicable",
            "IDENTITY_MODE is managed-identity: the rotator works in its own tenant only and there is no MSP app to "
            "consent to (see infra/README.md, identity modes)",
        )
    if not settings.consent_redirect_uri:
        raise ConsentUnavailable(
            "ConsentRedirectUriMissing",
            "no consent redirect URI: set CONSENT_REDIRECT_URI (App Service sets WEBSITE_HOSTNAME, from which it is "
            "derived in Azure)",
        )


async def consent_link(keys: ConsentKeys, settings: Settings, tenant_id: str, now: datetime) -> dict[str, Any]:
    """A signed admin-consent link for one customer tenant."""
    _check_deployment(settings)
    version, key = await keys.signing_key()
    state, claims = consent.sign(key, version, tenant_id, now, timedelta(hours=settings.consent_link_hours))
    url = consent.admin_consent_url(
        settings.authority_host, tenant_id.lower(), settings.msp_app_client_id, settings.consent_redirect_uri, state
    )
    return {
        "tenantId": tenant_id.lower(),
        "url": url,
        "redirectUri": settings.consent_redirect_uri,
        "expires": claims.expires.isoformat(),
        "instructions": "A Global Administrator (or Privileged Role Administrator) of the customer tenant opens this "
        "link once, signs in and accepts; Entra then returns them to the rotator's consent page.",
    }


@dataclass(frozen=True)
class Candidate:
    """A Proofpoint-like app registration found after consent, and what to do next about it."""

    app: dict[str, Any]  # service.discovery_document
    owned: bool | None  # None when ownership could not be read
    next_step: str
    command: str = ""  # the command that takes the step, when there is one


@dataclass(frozen=True)
class ConsentResult:
    """What the consent page shows after a trusted answer: the record, the candidates, or why discovery failed."""

    consent: Consent
    owner: str  # who a customer admin makes owner of the Proofpoint app
    candidates: list[Candidate] = field(default_factory=list)
    discovery_error: dict[str, str] | None = None


def _param(params: Mapping[str, str], name: str) -> str:
    return params.get(name) or ""  # exact, as Entra sends it: " <tenant>\n" is not a tenant id


async def _verified(keys: ConsentKeys, text: str, now: datetime) -> consent.ConsentState:
    claims = consent.unverified(text)
    key = await keys.key(claims.key_version)
    if key is None:
        raise ConsentRefused("InvalidState", "the consent link's state is not one this rotator made (unknown key); "
                             "ask your MSP for a new link")
    return consent.verify(text, key, now)


async def entra_refusal(keys: ConsentKeys, params: Mapping[str, str], now: datetime) -> ConsentRefused:
    """Entra answered with an error (the admin declined, or a policy stopped the consent). Nothing is recorded and
    the link stays usable, so the admin may try again.

    The callback is anonymous: anyone can send a browser here with any `error_description` ("sign in again at
    https://evil.example ..."). So no free text from the query is ever shown, and Entra's error code (the OAuth
    `error`, and the AADSTS number of its description) only with a state this rotator signed."""
    try:
        tenant = (await _verified(keys, _param(params, "state"), now)).tenant_id
    except ConsentRefused:
        return ConsentRefused("ConsentDenied", "Entra ID did not grant consent, and this answer carries no valid "
                              "consent link of this rotator, so nothing else from it is shown: open the consent "
                              "link your MSP sent")
    code = consent.entra_error_code(_param(params, "error"), _param(params, "error_description"))
    return ConsentRefused("ConsentDenied", f"Entra ID did not grant consent for tenant {tenant}"
                          + (f": {code}" if code else ""))


async def complete_consent(
    keys: ConsentKeys, consents: ConsentStore, directory: Directory, state: StateStore,
    params: Mapping[str, str], now: datetime, patterns: Sequence[str], owner: str,
) -> ConsentResult:
    """Entra's successful answer: verify the state (signature, expiry, tenant, once), record the consent, then look
    for the Proofpoint app registrations. ConsentRefused, with nothing written, when the answer cannot be trusted."""
    if _param(params, "error"):
        raise await entra_refusal(keys, params, now)
    claims = await _verified(keys, _param(params, "state"), now)
    tenant = _param(params, "tenant").lower()
    if not tenant:
        raise ConsentRefused("MissingParameter", "the answer names no tenant; open the consent link again")
    if not GUID.fullmatch(tenant):
        # Never echoed: it is whatever the query said, of any length.
        raise ConsentRefused("TenantMismatch", f"this consent link was made for tenant {claims.tenant_id}, but the "
                             "answer names no tenant id; sign in to the customer's tenant and open it again")
    if tenant != claims.tenant_id:
        raise ConsentRefused("TenantMismatch", f"this consent link was made for tenant {claims.tenant_id}, but the "
                             f"admin consented in tenant {tenant}; sign in to the customer's tenant and open it again")
    if _param(params, "admin_consent").lower() != "true":
        raise ConsentRefused("ConsentNotGranted", "Entra ID did not report admin consent (admin_consent=True)")
    try:
        await consents.use_state(claims.tenant_id, claims.nonce, claims.expires)
    except Conflict:
        raise ConsentRefused("StateReplayed", "this consent link was used already; the consent it carried is "
                             "recorded. Ask your MSP for a new link to consent again") from None
    record = Consent(claims.tenant_id, now, _param(params, "scope")[:512])
    await consents.record_consent(record)
    try:
        apps = await discover(directory, state, claims.tenant_id, patterns, now)
    except RotationError as error:
        # Consent can take a few minutes to reach Graph; the record stands and discovery can be run again.
        return ConsentResult(record, owner, [], {"code": error.code, "message": error.message})
    found = await asyncio.gather(*(_candidate(directory, claims.tenant_id, app) for app in apps))
    # Who to make owner: the rotator's own service principal in this tenant, as Graph names it.
    owner = next((p.describe() for _, p in found if p is not None), owner)
    return ConsentResult(record, owner, [c for c, _ in found])


async def _candidate(directory: Directory, tenant_id: str, app: dict[str, Any]) -> tuple[Candidate, Principal | None]:
    owned: bool | None
    principal = None
    try:
        ownership = await directory.ownership(tenant_id, app["appId"])
        owned, principal = ownership.owned, ownership.principal
    except RotationError:
        owned = None
    app_id = app["appId"]
    command = ""
    if app["registered"]:
        step = "Registered: the rotator watches this app (see the dashboard)."
    elif owned is False:
        step = "Make the rotator an owner of this app, then register it:"
        command = f"scripts/onboard-customer.sh assign --tenant {tenant_id} --app-id {app_id}"
    elif owned is None:
        step = "Check that the rotator owns this app, then register it:"
        command = f"scripts/onboard-customer.sh assign --tenant {tenant_id} --app-id {app_id}"
    else:
        step = "Register it:"
        command = (f"scripts/onboard-customer.sh register --tenant {tenant_id} --app-id {app_id} "
                   "--domain <customer domain>")
    return Candidate(app, owned, step, command), principal
