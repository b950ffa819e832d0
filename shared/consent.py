"""Admin consent: the link a customer's admin opens, and the `state` that makes its answer trustworthy.

Entra's admin-consent endpoint (learn.microsoft.com/entra/identity-platform/v2-admin-consent) sends the admin's
browser back to the registered `redirect_uri` with `admin_consent=True&tenant=…&state=…` (or `error`,
`error_description`, `state`). That callback is anonymous, so the rotator trusts it only when `state` is one it
signed: HMAC-SHA256 with a key kept in Key Vault, bound to the tenant, with an expiry, used once (the single use is
the consent store's, see ports.ConsentStore). Nothing here does I/O.

A state is `v1.<payload>.<signature>`, both base64url without padding; the payload is the JSON
`{"t": tenant id, "n": nonce, "e": expiry (epoch seconds), "k": the key's Key Vault version}`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from shared import sealed
from shared.domain import GUID

VERSION = "v1"
MAX_STATE_LENGTH = 1024
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"


class ConsentRefused(Exception):
    """The callback cannot be trusted or consent was not given; `code` names why. Nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ConsentState:
    """What a verified state says: which tenant the link was made for, its nonce and expiry, and which key signed it."""

    tenant_id: str
    nonce: str
    expires: datetime
    key_version: str


_PREFIX = f"{VERSION}.".encode("ascii")  # what the signature covers before the payload (the version)


def sign(key: bytes, key_version: str, tenant_id: str, now: datetime, lifetime: timedelta,
         nonce: str | None = None) -> tuple[str, ConsentState]:
    """A new state for `tenant_id`, valid for `lifetime` from `now`."""
    state = ConsentState(
        tenant_id=tenant_id.lower(),
        nonce=nonce or secrets.token_hex(16),
        expires=(now + lifetime).astimezone(UTC).replace(microsecond=0),
        key_version=key_version,
    )
    doc = {"t": state.tenant_id, "n": state.nonce, "e": int(state.expires.timestamp()), "k": key_version}
    return sealed.seal(key, _PREFIX, VERSION, doc), state


def _invalid(why: str) -> ConsentRefused:
    return ConsentRefused("InvalidState", f"the consent link's state is not one this rotator made ({why}); "
                          "ask your MSP for a new link")


def unverified(text: str) -> ConsentState:
    """The claims of a state before its signature is checked: only to know which key to check it with."""
    if not text:
        raise ConsentRefused("MissingState", "the answer carries no state: open the consent link your MSP sent")
    doc = sealed.opened(text, VERSION, MAX_STATE_LENGTH, _invalid)
    tenant, nonce, expires, key_version = doc.get("t"), doc.get("n"), doc.get("e"), doc.get("k")
    if not (isinstance(tenant, str) and GUID.fullmatch(tenant) and isinstance(nonce, str) and 16 <= len(nonce) <= 64
            and nonce.isalnum() and isinstance(key_version, str) and 0 < len(key_version) <= 64
            and key_version.isalnum()):
        raise _invalid("incomplete")
    return ConsentState(tenant.lower(), nonce, sealed.moment(expires, _invalid), key_version)


def verify(text: str, key: bytes, now: datetime) -> ConsentState:
    """The state's claims once its signature matches `key` and it has not expired; ConsentRefused otherwise."""
    claims = unverified(text)
    sealed.check_signature(text, key, _PREFIX, _invalid)
    if now >= claims.expires:
        raise ConsentRefused("StateExpired", f"this consent link expired at {claims.expires.isoformat()}; "
                             "ask your MSP for a new link (consent links are valid for a limited time)")
    return claims


# Entra's error answer: an OAuth 2.0 `error` code (RFC 6749 section 4.1.2.1, and those Microsoft's identity platform
# adds: learn.microsoft.com/entra/identity-platform/reference-error-codes) and an `error_description` that starts with
# an AADSTS number ("AADSTS65004: User declined to consent ..."). Only a known code is repeated.
OAUTH_ERRORS = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type", "invalid_scope",
    "server_error", "temporarily_unavailable", "consent_required", "interaction_required", "login_required",
    "invalid_client", "invalid_grant", "invalid_resource",
})
_AADSTS = re.compile(r"\AAADSTS(\d{1,7})\b")


def entra_error_code(error: str, description: str) -> str:
    """The codes of Entra's error answer, never its free text: `access_denied (AADSTS65004)`, or less, or ""."""
    code = error if error in OAUTH_ERRORS else ""
    number = _AADSTS.match(description)
    aadsts = f"AADSTS{number.group(1)}" if number else ""
    return f"{code} ({aadsts})" if code and aadsts else code or aadsts


def admin_consent_url(authority: str, tenant_id: str, client_id: str, redirect_uri: str, state: str,
                      scope: str = GRAPH_DEFAULT_SCOPE) -> str:
    """The v2.0 admin-consent link: the app's statically configured permissions (`.default`), answered at
    `redirect_uri` (which must be registered on the app, or Entra refuses with AADSTS500113 / AADSTS50011)."""
    query = urlencode({"client_id": client_id, "scope": scope, "redirect_uri": redirect_uri, "state": state})
    return f"{authority.rstrip('/')}/{tenant_id}/v2.0/adminconsent?{query}"
