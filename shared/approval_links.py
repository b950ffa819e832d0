"""Signed approval links (issue 26): from an alert or a ticket to the confirmation of one decision on one request.

A link is `https://<app>/api/approval-links?link=<a1 state>`; the state is the one signed-state envelope
(shared/sealed.py) with the claims `{"t": tenant, "a": app id, "r": request id, "x": action, "n": nonce,
"e": expiry, "k": key version}`, signed with the consent links' Key Vault key (ports.ConsentKeys) under a label of
its own, so no consent or one-visit state is an approval link and no approval link is either of them.

- Bound to the request and the action: a link made for "approve" cannot reject, and one made for a request that a
  newer one replaced (a postponement ended, the key changed) is refused as stale.
- Expiring (LIFETIME) and good once: the POST spends the nonce (an insert in the approvals book) before it decides.
- GET never acts: it answers a confirmation page whose form POSTs. Mail and chat fetch links before a person does:
  Microsoft Defender for Office 365 Safe Links scans "URLs ... prior to message delivery, regardless of whether the
  URLs are rewritten or not" (learn.microsoft.com/defender-office-365/safe-links-about, MicrosoftDocs/defender-docs
  defender-office-365/safe-links-about.md), and "for any publicly accessible link Teams already shows a preview of
  the link including information like an image, title and a description" (devblogs.microsoft.com/microsoft365dev/
  add-rich-previews-to-messages-using-link-unfurling): a GET that acted would decide by itself.
- The actor is the signed-in Rotator.Operate user, as on the dashboard: the link is no credential (a forwarded or
  scanned link approves nothing without an operator's sign-in), so it may sit in an alert, a ticket, a log. The
  audit record names the user and that the decision came through a signed link.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlparse

from shared import sealed
from shared.change_control import ApprovalRequest
from shared.domain import GUID, ROTATION_ID
from shared.ports import Clock, ConsentKeys

VERSION = "a1"
LIFETIME = timedelta(days=7)
MAX_LINK_LENGTH = 1024
PATH = "/api/approval-links"
ACTIONS = ("approve", "postpone", "reject")
_LABEL = b"approval-link\x00"


class LinkRefused(Exception):
    """A link that cannot be used: not ours, tampered with, expired, for another action, used, or stale."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LinkClaims:
    """What a verified approval link says."""

    tenant_id: str
    app_id: str
    request_id: str
    action: str
    nonce: str
    expires: datetime
    key_version: str


def sign(key: bytes, key_version: str, request: ApprovalRequest, action: str, now: datetime,
         lifetime: timedelta = LIFETIME) -> str:
    """A new link state for `action` on `request`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    expires = (now + lifetime).astimezone(UTC).replace(microsecond=0)
    claims = {"t": request.tenant_id, "a": request.app_id, "r": request.request_id, "x": action,
              "n": secrets.token_hex(16), "e": int(expires.timestamp()), "k": key_version}
    return sealed.seal(key, _LABEL, VERSION, claims)


def _invalid(why: str) -> LinkRefused:
    return LinkRefused("InvalidLink", f"this approval link is not one the rotator made ({why}); open the request on "
                       "the dashboard instead")


def unverified(text: str) -> LinkClaims:
    """The claims before the signature is checked (only to know which key version to check it with)."""
    if not text:
        raise LinkRefused("MissingLink", "the request carries no approval link")
    doc = sealed.opened(text, VERSION, MAX_LINK_LENGTH, _invalid)
    t, a, r, x, n, e, k = (doc.get(name) for name in ("t", "a", "r", "x", "n", "e", "k"))
    if not (isinstance(t, str) and GUID.fullmatch(t) and isinstance(a, str) and GUID.fullmatch(a)
            and isinstance(r, str) and ROTATION_ID.fullmatch(r) and x in ACTIONS and isinstance(n, str)
            and len(n) == 32 and all(c in "0123456789abcdef" for c in n) and isinstance(k, str)
            and 0 < len(k) <= 64 and k.isalnum()):
        raise _invalid("incomplete")
    return LinkClaims(t.lower(), a.lower(), r.lower(), str(x), n, sealed.moment(e, _invalid), k)


def verify(text: str, key: bytes, now: datetime, action: str | None = None) -> LinkClaims:
    """The link's claims once its signature matches `key`, it has not expired and (when given) it is for `action`."""
    claims = unverified(text)
    sealed.check_signature(text, key, _LABEL, _invalid)
    if now >= claims.expires:
        raise LinkRefused("LinkExpired", f"this approval link expired at {claims.expires.isoformat()}; open the "
                          "request on the dashboard instead")
    if action is not None and claims.action != action:
        raise LinkRefused("WrongAction", f"this link is for {claims.action}, not {action}")
    return claims


async def verified(keys: ConsentKeys, text: str, now: datetime, action: str | None = None) -> LinkClaims:
    """verify() with the key version the link names (a link signed before a new key was made still verifies)."""
    claims = unverified(text)
    key = await keys.key(claims.key_version)
    if key is None:
        raise _invalid("unknown key")
    return verify(text, key, now, action)


def base_url(consent_redirect_uri: str) -> str:
    """The app's public origin, from the consent redirect URI (https://<WEBSITE_HOSTNAME>/api/consent); "" when
    unknown (no links are made then)."""
    parsed = urlparse(consent_redirect_uri)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.scheme and parsed.netloc else ""


class SignedApprovalLinks:
    """ApprovalLinks: one link per action for a request, signed with the consent links' current key."""

    def __init__(self, keys: ConsentKeys, origin: str, clock: Clock) -> None:
        self._keys = keys
        self._origin = origin.rstrip("/")
        self._clock = clock

    async def links(self, request: ApprovalRequest) -> dict[str, str]:
        if not self._origin:
            return {}
        version, key = await self._keys.signing_key()
        now = self._clock.now()
        return {action: f"{self._origin}{PATH}?{urlencode({'link': sign(key, version, request, action, now)})}"
                for action in ACTIONS}
