"""shared.sealed, the envelope the consent link, the one-visit click and the partner sign-in share: a state signed
the way each flow signed it before the envelope was shared still verifies (links in flight across a deployment), and
one flow's state is never another's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from shared import consent, onboarding_signin, onevisit, sealed
from shared.consent import ConsentRefused

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TENANT, APP = "5a1d0000-0000-4000-8000-0000000000aa", "5a1d0000-0000-4000-8000-0000000000bb"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_a_consent_state_signed_before_the_envelope_was_shared_still_verifies() -> None:
    key = secrets.token_bytes(32)
    doc = {"t": TENANT, "n": secrets.token_hex(16), "e": int((NOW + timedelta(hours=1)).timestamp()), "k": "v7"}
    payload = b64(json.dumps(doc, separators=(",", ":")).encode())
    # how shared.consent signed it: HMAC-SHA256 over "v1." + payload
    old = f"v1.{payload}.{b64(hmac.new(key, f'v1.{payload}'.encode(), hashlib.sha256).digest())}"
    assert consent.verify(old, key, NOW).tenant_id == TENANT
    made, _ = consent.sign(key, "v7", TENANT, NOW, timedelta(hours=1), nonce=doc["n"])
    assert made == old


def test_one_flows_state_is_never_anothers() -> None:
    key = secrets.token_bytes(32)
    visit, _ = onevisit.sign(key, "v7", TENANT, APP, NOW)
    other = "o1." + visit.split(".", 1)[1].rsplit(".", 1)[0] + "." + sealed.b64(
        sealed.mac(key, f"{consent.VERSION}.".encode(), visit.split(".")[1]))
    with pytest.raises(ConsentRefused, match="bad signature"):
        onevisit.verify(other, key, NOW)  # the same key and claims under the consent link's prefix
    signin, _ = onboarding_signin.begin(key, "v7", "operator@msp.example", NOW)
    with pytest.raises(ConsentRefused, match="format"):
        onevisit.verify(signin, key, NOW)
    with pytest.raises(onboarding_signin.SignInRefused, match="format"):
        onboarding_signin.verify(visit, key, NOW, "operator@msp.example")


@pytest.mark.parametrize(("text", "why"), [
    ("v1." + "a" * 2000 + ".x", "too long"),
    ("v1.only-two", "format"),
    ("v2.e30.x", "format"),
    ("v1.!!!.x", "unreadable"),
    ("v1." + b64(b"[1, 2]") + ".x", "unreadable"),
    ("v1." + b64(b"\xff\xfe") + ".x", "unreadable"),
])
def test_opened_refuses_what_is_not_an_envelope(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        sealed.opened(text, "v1", 1024, ValueError)


@pytest.mark.parametrize("seconds", [True, "1", 1.5, None, 10**20])
def test_an_expiry_that_is_not_whole_seconds_in_range_is_incomplete(seconds: object) -> None:
    with pytest.raises(ValueError, match="incomplete"):
        sealed.moment(seconds, ValueError)
