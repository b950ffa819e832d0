"""The signed, expiring states the rotator sends through Entra's redirects and gets back in the query.

Three flows carry one: the admin-consent link (shared.consent), the one-visit second click (shared.onevisit) and
the partner sign-in for bulk onboarding (shared.onboarding_signin). Each keeps its own claims, its own HMAC input
(a prefix: its version or a label that keeps the key's uses apart) and its own words for a refusal; the envelope
is one: `<version>.<base64url of the claims' JSON>.<base64url of HMAC-SHA256(key, prefix + payload)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Invalid = Callable[[str], Exception]  # a flow's refusal of a state that is not its own, given why


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of base64url text without padding; binascii.Error or ValueError when it is not."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mac(key: bytes, prefix: bytes, text: str) -> bytes:
    """HMAC-SHA256 of `text` under `key`, after `prefix`."""
    return hmac.new(key, prefix + text.encode("utf-8"), hashlib.sha256).digest()


def seal(key: bytes, prefix: bytes, version: str, claims: dict[str, Any]) -> str:
    """The state carrying `claims`, signed with `key`."""
    payload = b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return f"{version}.{payload}.{b64(mac(key, prefix, payload))}"


def opened(text: str, version: str, max_length: int, invalid: Invalid) -> dict[str, Any]:
    """The claims of a state before its signature is checked (only to know which key to check it with); the
    flow's `invalid` refusal when it is too long, not in the envelope, or unreadable."""
    if len(text) > max_length:
        raise invalid("too long")
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != version:
        raise invalid("not in the rotator's format")
    try:
        claims = json.loads(unb64(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid("unreadable") from None
    if not isinstance(claims, dict):
        raise invalid("unreadable")
    return claims


def check_signature(text: str, key: bytes, prefix: bytes, invalid: Invalid) -> None:
    """Nothing when the state (already opened) was signed with `key`; the flow's `invalid` refusal otherwise."""
    _, payload, signature = text.split(".")
    try:
        given = unb64(signature)
    except (binascii.Error, ValueError):
        raise invalid("bad signature") from None
    if not hmac.compare_digest(given, mac(key, prefix, payload)):
        raise invalid("bad signature")


def moment(seconds: object, invalid: Invalid) -> datetime:
    """A claim's expiry (whole seconds since the epoch) as a UTC time; the flow's `invalid` refusal otherwise."""
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise invalid("incomplete")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise invalid("incomplete") from None
