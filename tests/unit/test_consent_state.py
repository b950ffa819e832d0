"""The consent link's state: signed, bound to one tenant, expiring; anything else is refused with a code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlparse

import pytest

from shared import consent
from shared.consent import ConsentRefused

KEY = bytes(range(32))
TENANT = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_state_verifies_until_it_expires() -> None:
    text, made = consent.sign(KEY, "v7", TENANT.upper(), NOW, timedelta(hours=72))
    claims = consent.verify(text, KEY, NOW + timedelta(hours=71, minutes=59))
    assert claims == made and claims.tenant_id == TENANT and claims.key_version == "v7"
    with pytest.raises(ConsentRefused) as expired:
        consent.verify(text, KEY, NOW + timedelta(hours=72))
    assert expired.value.code == "StateExpired"


def test_each_state_has_its_own_nonce() -> None:
    first, a = consent.sign(KEY, "v1", TENANT, NOW, timedelta(hours=1))
    second, b = consent.sign(KEY, "v1", TENANT, NOW, timedelta(hours=1))
    assert first != second and a.nonce != b.nonce and len(a.nonce) == 32


@pytest.mark.parametrize("text", ["", "v1", "v2.a.b", "v1.a.b.c", "v1.!!!.x", "v1.e30.x", "v1." + "A" * 2000 + ".x"])
def test_malformed_states_are_refused(text: str) -> None:
    with pytest.raises(ConsentRefused) as refused:
        consent.verify(text, KEY, NOW)
    assert refused.value.code in ("MissingState", "InvalidState")


def test_another_key_does_not_verify() -> None:
    text, _ = consent.sign(KEY, "v1", TENANT, NOW, timedelta(hours=1))
    with pytest.raises(ConsentRefused) as refused:
        consent.verify(text, b"\x00" * 32, NOW)
    assert refused.value.code == "InvalidState"


def test_the_link_names_the_tenant_app_scope_redirect_and_state() -> None:
    url = consent.admin_consent_url("https://login.example/", TENANT, "app-id", "https://func.example/api/consent",
                                    "v1.a.b")
    parsed = urlparse(url)
    assert parsed.netloc == "login.example" and parsed.path == f"/{TENANT}/v2.0/adminconsent"
    assert dict(parse_qsl(parsed.query)) == {
        "client_id": "app-id", "scope": "https://graph.microsoft.com/.default",
        "redirect_uri": "https://func.example/api/consent", "state": "v1.a.b"}
