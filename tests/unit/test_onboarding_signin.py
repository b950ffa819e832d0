"""The partner sign-in's state and PKCE verifier: signed, bound to the operator who started it, short-lived; the
verifier derived from the nonce under the key, never carried; anything else refused with a code."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlparse

import pytest

from shared import onboarding_signin as signin
from shared.onboarding_signin import SignInRefused

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
OPERATOR = "operator@msp.example"
NOW = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
PARTNER = "5a1d0000-0000-4000-8000-000000000001"
UNRESERVED = re.compile(r"\A[A-Za-z0-9\-._~]{43,128}\Z")  # RFC 7636 section 4.1


def test_a_state_verifies_for_its_operator_until_it_expires() -> None:
    text, made = signin.begin(KEY, "v3", OPERATOR, NOW)
    claims = signin.verify(text, KEY, NOW + signin.LIFETIME - timedelta(seconds=1), OPERATOR)
    assert claims == made and claims.key_version == "v3" and claims.run_id == ""
    with pytest.raises(SignInRefused) as expired:
        signin.verify(text, KEY, NOW + signin.LIFETIME, OPERATOR)
    assert expired.value.code == "StateExpired" and expired.value.status == 400


@pytest.mark.parametrize("other", ["reader@msp.example", "OPERATOR@msp.example", "operator@msp.example ",
                                   "app:0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", ""])
def test_another_operator_is_refused(other: str) -> None:
    text, _ = signin.begin(KEY, "v1", OPERATOR, NOW)
    with pytest.raises(SignInRefused) as refused:
        signin.verify(text, KEY, NOW, other)
    assert refused.value.code == "OtherOperator" and refused.value.status == 403


def test_the_state_names_nobody_and_carries_no_verifier() -> None:
    text, made = signin.begin(KEY, "v1", OPERATOR, NOW, run_id="run-42")
    payload = json.loads(base64.urlsafe_b64decode(text.split(".")[1] + "=="))
    assert set(payload) == {"o", "n", "e", "k", "r"} and payload["r"] == "run-42"
    assert "operator" not in text and "msp.example" not in json.dumps(payload)
    code_verifier = signin.verifier(KEY, made.nonce)
    assert code_verifier not in text and signin.challenge(code_verifier) not in text


def test_the_verifier_is_pkce_shaped_and_needs_the_key() -> None:
    _, a = signin.begin(KEY, "v1", OPERATOR, NOW)
    _, b = signin.begin(KEY, "v1", OPERATOR, NOW)
    va, vb = signin.verifier(KEY, a.nonce), signin.verifier(KEY, b.nonce)
    assert UNRESERVED.fullmatch(va) and va != vb and a.nonce != b.nonce
    assert signin.verifier(KEY, a.nonce) == va  # the callback recomputes it
    assert signin.verifier(OTHER_KEY, a.nonce) != va
    # S256: BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 section 4.2)
    assert signin.challenge(va) == base64.urlsafe_b64encode(hashlib.sha256(va.encode()).digest()).rstrip(b"=").decode()


def test_a_state_is_no_verifier_and_no_consent_state() -> None:
    """One key, three uses: each output is labelled, so none of them is another's."""
    from shared import consent

    text, made = signin.begin(KEY, "v1", OPERATOR, NOW)
    assert text.split(".")[2] != signin.verifier(KEY, text.split(".")[1])
    consent_text, _ = consent.sign(KEY, "v1", PARTNER, NOW, timedelta(hours=1), nonce=made.nonce)
    with pytest.raises(SignInRefused):
        signin.verify(consent_text, KEY, NOW, OPERATOR)
    forged = "s1." + ".".join(consent_text.split(".")[1:])
    with pytest.raises(SignInRefused) as refused:
        signin.verify(forged, KEY, NOW, OPERATOR)
    assert refused.value.code == "InvalidState"


def _resigned(text: str, key: bytes, **changes: object) -> str:
    payload = json.loads(base64.urlsafe_b64decode(text.split(".")[1] + "=="))
    payload.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"s1.{body}.{text.split('.')[2]}"


def test_a_changed_payload_or_another_key_is_refused() -> None:
    text, _ = signin.begin(KEY, "v1", OPERATOR, NOW)
    for forged in (_resigned(text, KEY, e=int((NOW + timedelta(days=1)).timestamp())),
                   _resigned(text, KEY, r="another-run"), _resigned(text, KEY, o=signin.operator_tag(KEY, "x@y"))):
        with pytest.raises(SignInRefused) as refused:
            signin.verify(forged, KEY, NOW, OPERATOR)
        assert refused.value.code == "InvalidState"
    with pytest.raises(SignInRefused) as other_key:
        signin.verify(text, OTHER_KEY, NOW, OPERATOR)
    assert other_key.value.code == "InvalidState"


@pytest.mark.parametrize("text", ["", "s1", "v1.a.b", "s1.a.b.c", "s1.!!!.x", "s1.e30.x", "s1.W10.x",
                                  "s1." + "A" * 2000 + ".x"])
def test_malformed_states_are_refused(text: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        signin.verify(text, KEY, NOW, OPERATOR)
    assert refused.value.code in ("MissingState", "InvalidState")


@pytest.mark.parametrize("field,value", [("n", "ABC"), ("n", "g" * 32), ("e", True), ("e", "1"), ("e", 10**20),
                                         ("k", ""), ("k", "v/1"), ("r", "a b"), ("r", None), ("o", "")])
def test_incomplete_claims_are_refused(field: str, value: object) -> None:
    text, _ = signin.begin(KEY, "v1", OPERATOR, NOW)
    with pytest.raises(SignInRefused) as refused:
        signin.verify(_resigned(text, KEY, **{field: value}), KEY, NOW, OPERATOR)
    assert refused.value.code == "InvalidState"


def test_a_run_id_must_be_plain() -> None:
    with pytest.raises(ValueError):
        signin.begin(KEY, "v1", OPERATOR, NOW, run_id="../x")


def test_the_authorize_url_asks_for_the_code_with_s256() -> None:
    text, made = signin.begin(KEY, "v1", OPERATOR, NOW)
    url = signin.authorize_url("https://login.example/", PARTNER, "app-id", "https://rotator.example/api/onboarding/"
                               "callback", ("https://graph.microsoft.com/.default", "offline_access"), text,
                               signin.challenge(signin.verifier(KEY, made.nonce)))
    parsed = urlparse(url)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == f"https://login.example/{PARTNER}/oauth2/v2.0/authorize"
    query = dict(parse_qsl(parsed.query))
    assert query == {
        "client_id": "app-id", "response_type": "code", "response_mode": "query",
        "redirect_uri": "https://rotator.example/api/onboarding/callback",
        "scope": "https://graph.microsoft.com/.default offline_access", "state": text,
        "code_challenge": signin.challenge(signin.verifier(KEY, made.nonce)), "code_challenge_method": "S256",
        "prompt": "select_account",
    }
    assert "code_verifier" not in url and signin.verifier(KEY, made.nonce) not in url
