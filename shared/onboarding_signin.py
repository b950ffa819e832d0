"""The partner admin's web sign-in for a bulk onboarding run: authorization code with PKCE, its `state` and verifier.

An operator already signed in to the dashboard (App Service Authentication) opens GET /api/onboarding/signin; the
rotator sends the browser to Entra's authorize endpoint of the partner (MSP) tenant with a `state` and a PKCE
`code_challenge` (RFC 7636, S256); Entra returns it to GET /api/onboarding/callback with `code` and `state`, and the
rotator redeems the code with the verifier and its own client assertion (a confidential client).

Where the verifier lives between the two requests: nowhere. It is derived, HMAC-SHA256 of the state's random nonce
under the rotator's state-signing key (the consent links' key, kept in Key Vault: shared.consent, ports.ConsentKeys),
with a label of its own so that no state signature is ever a verifier. So it is never in a URL, a cookie, a table or
a log, and only a holder of the Key Vault key can recompute it; the challenge Entra sees is its SHA-256. The other
candidates were weighed: a per-flow Key Vault secret costs a write and leaves soft-deleted versions behind for every
sign-in; a verifier in Tables (even encrypted) puts key material in the state store; an encrypted cookie needs a
second key and a cookie path, and still needs a server-side record to be good once. What the verifier protects
against (a stolen code redeemed elsewhere, a code injected into another session) holds as long as the key does.

The state is `s1.<payload>.<signature>` (base64url), the payload `{"o": operator, "n": nonce, "e": expiry, "k": key
version, "r": run id or ""}`. `o` is an HMAC of the signed-in operator's name (the dashboard's caller), never the name
itself: the state travels through Entra and the browser. It is good for LIFETIME (Entra's authorization codes are
short-lived too), for the operator who started it only, and once: the callback claims the nonce with an insert in
the consent store (ports.ConsentStore.use_state) before it redeems anything. No I/O but through the ports given.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlencode

from shared import consent, sealed
from shared.errors import Conflict, PartnerRefused
from shared.ports import ConsentKeys, ConsentStore

VERSION = "s1"
LIFETIME = timedelta(minutes=10)
MAX_STATE_LENGTH = 1024
_RUN_ID = re.compile(r"\A[0-9a-zA-Z-]{1,64}\Z")
# Labels that keep the key's three uses apart (a state signature, a verifier, an operator's tag).
_STATE_LABEL = b"onboarding-signin-state\x00"
_VERIFIER_LABEL = b"onboarding-signin-pkce-verifier\x00"
_OPERATOR_LABEL = b"onboarding-signin-operator\x00"


class SignInRefused(Exception):
    """The callback cannot be trusted (or Entra refused the sign-in); `code` names why. Nothing was changed."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SignInState:
    """What a verified state says: who started the sign-in, its nonce and expiry, the key that signed it, and the
    run it resumes ("" for a new run)."""

    operator_tag: str
    nonce: str
    expires: datetime
    key_version: str
    run_id: str = ""


def operator_tag(key: bytes, operator: str) -> str:
    """The operator's name as the state carries it: a keyed hash, so the state names nobody."""
    return sealed.b64(sealed.mac(key, _OPERATOR_LABEL, operator)[:18])


def verifier(key: bytes, nonce: str) -> str:
    """The PKCE code verifier of the sign-in with this nonce: 43 characters of base64url (RFC 7636 section 4.1)."""
    return sealed.b64(sealed.mac(key, _VERIFIER_LABEL, nonce))


def challenge(code_verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 section 4.2)."""
    return sealed.b64(hashlib.sha256(code_verifier.encode("ascii")).digest())


def begin(key: bytes, key_version: str, operator: str, now: datetime, run_id: str = "",
          lifetime: timedelta = LIFETIME) -> tuple[str, SignInState]:
    """A new state for `operator`'s sign-in (resuming `run_id` when given), valid for `lifetime` from `now`."""
    if run_id and not _RUN_ID.fullmatch(run_id):
        raise ValueError("a run id is letters, digits and hyphens")
    state = SignInState(
        operator_tag=operator_tag(key, operator),
        nonce=secrets.token_hex(16),
        expires=(now + lifetime).astimezone(UTC).replace(microsecond=0),
        key_version=key_version,
        run_id=run_id,
    )
    doc = {"o": state.operator_tag, "n": state.nonce, "e": int(state.expires.timestamp()), "k": key_version,
           "r": run_id}
    return sealed.seal(key, _STATE_LABEL, VERSION, doc), state


def _invalid(why: str) -> SignInRefused:
    return SignInRefused("InvalidState", f"this sign-in answer carries no state this rotator made ({why}); start "
                         "the partner sign-in again from the dashboard's onboarding page")


def unverified(text: str) -> SignInState:
    """The claims of a state before its signature is checked: only to know which key version to check it with."""
    if not text:
        raise SignInRefused("MissingState", "the sign-in answer carries no state; start the partner sign-in again "
                            "from the dashboard's onboarding page")
    doc = sealed.opened(text, VERSION, MAX_STATE_LENGTH, _invalid)
    tag, nonce, expires, key_version, run_id = doc.get("o"), doc.get("n"), doc.get("e"), doc.get("k"), doc.get("r")
    if not (isinstance(tag, str) and 0 < len(tag) <= 64 and isinstance(nonce, str) and len(nonce) == 32
            and all(c in "0123456789abcdef" for c in nonce) and isinstance(key_version, str)
            and 0 < len(key_version) <= 64 and key_version.isalnum() and isinstance(run_id, str)
            and (run_id == "" or _RUN_ID.fullmatch(run_id))):
        raise _invalid("incomplete")
    return SignInState(tag, nonce, sealed.moment(expires, _invalid), key_version, run_id)


def verify(text: str, key: bytes, now: datetime, operator: str) -> SignInState:
    """The state's claims once its signature matches `key`, it has not expired and `operator` started it;
    SignInRefused otherwise (InvalidState, StateExpired, OtherOperator)."""
    claims = unverified(text)
    sealed.check_signature(text, key, _STATE_LABEL, _invalid)
    if now >= claims.expires:
        raise SignInRefused("StateExpired", f"this sign-in expired at {claims.expires.isoformat()} (a partner sign-in "
                            f"is good for {int(LIFETIME.total_seconds() // 60)} minutes); start it again")
    if not hmac.compare_digest(claims.operator_tag, operator_tag(key, operator)):
        raise SignInRefused("OtherOperator", "this partner sign-in was started by another operator of the dashboard; "
                            "start your own from the onboarding page", 403)
    return claims


def authorize_url(authority: str, tenant_id: str, client_id: str, redirect_uri: str, scopes: tuple[str, ...],
                  state: str, code_challenge: str) -> str:
    """Entra's v2.0 authorize request for the code flow with PKCE (learn.microsoft.com/entra/identity-platform/
    v2-oauth2-auth-code-flow, "Request an authorization code"): `response_mode=query`, the challenge with S256,
    `prompt=select_account` so the partner account is chosen, never the operator's dashboard session taken silently."""
    query = urlencode({
        "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "response_mode": "query",
        "scope": " ".join(scopes), "state": state, "code_challenge": code_challenge,
        "code_challenge_method": "S256", "prompt": "select_account",
    })
    return f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/authorize?{query}"


# --- The callback: trust the answer, spend the state, redeem the code ---------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class Redemption:
    """What the token endpoint needs to redeem the code (the code and the verifier hidden from repr), and the run
    the sign-in resumes ("" for a new one)."""

    code: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str
    run_id: str


# Redeems the code at the partner tenant's token endpoint with the rotator's client assertion
# (shared.adapters.delegated) and hands the partner session on (bulk onboarding); PartnerRefused when Entra refuses.
Redeem = Callable[[Redemption], Awaitable[T]]


def _param(params: Mapping[str, str], name: str) -> str:
    return params.get(name) or ""


async def verified(keys: ConsentKeys, text: str, now: datetime, operator: str) -> SignInState:
    """The state's claims, checked with the key version it names (SignInRefused otherwise)."""
    claims = unverified(text)
    key = await keys.key(claims.key_version)
    if key is None:
        raise _invalid("unknown key")
    return verify(text, key, now, operator)


async def complete(keys: ConsentKeys, consents: ConsentStore, partner_tenant: str, params: Mapping[str, str],
                   now: datetime, operator: str, redirect_uri: str, redeem: Redeem[T]) -> tuple[SignInState, T]:
    """Entra's answer at the callback: the state verified (signature, expiry, the operator who started it), spent
    once, then the code redeemed with the verifier derived from it. SignInRefused, with nothing redeemed, when the
    answer cannot be trusted or Entra refused; a replayed answer is refused before anything reaches Entra.

    The callback is reached by a redirect anyone can forge: no free text from the query is ever repeated, only
    Entra's error codes, and only with a state this rotator signed (as the consent page does)."""
    claims = await verified(keys, _param(params, "state"), now, operator)
    if _param(params, "error"):
        code = consent.entra_error_code(_param(params, "error"), _param(params, "error_description"))
        if "AADSTS65001" in code:  # the partner tenant's admin never consented to the sign-in's scopes
            raise SignInRefused("PartnerSignInNotConsented", "Entra ID did not sign the partner admin in (AADSTS65001: "
                                "the partner tenant's admin has not consented to the MSP app's sign-in permissions, "
                                "Microsoft Graph DelegatedAdminRelationship.Read.All); nothing was changed. A Global "
                                "Administrator of the partner tenant runs infra/scripts/create-msp-app.sh again (it "
                                "grants that consent) or grants admin consent to the MSP app in the Entra admin "
                                "center, then sign in again")
        raise SignInRefused("SignInDenied", "Entra ID did not sign the partner admin in"
                            + (f" ({code})" if code else "") + "; nothing was changed. Sign in again with an account "
                            "of the partner tenant that may read its GDAP relationships")
    code = _param(params, "code")
    if not code:
        raise SignInRefused("MissingParameter", "the sign-in answer carries no authorization code; sign in again")
    if len(code) > 4096:
        raise SignInRefused("InvalidParameter", "the authorization code is longer than any Entra issues")
    try:
        await consents.use_state(partner_tenant, claims.nonce, claims.expires)
    except Conflict:
        raise SignInRefused("StateReplayed", "this sign-in answer was used already; start the partner sign-in "
                            "again from the dashboard", 409) from None
    key = await keys.key(claims.key_version)
    if key is None:  # the version was read a moment ago; a vault that lost it since is refused as unknown
        raise _invalid("unknown key")
    try:
        return claims, await redeem(Redemption(code, verifier(key, claims.nonce), redirect_uri, claims.run_id))
    except PartnerRefused as refused:
        raise SignInRefused(refused.code, f"{refused.message}; {refused.fix}" if refused.fix else refused.message,
                            400) from None
