"""Signed approval links on plain data: bound to the request and the action, expiring, signed under a label of
their own (no consent or one-visit state is an approval link), checked with the key version they name."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from shared import approval_links, consent, onevisit
from shared.approval_links import LinkRefused, sign, verify
from shared.change_control import ApprovalRequest, ApprovalStatus

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
KEY = secrets.token_bytes(32)
REQUEST = ApprovalRequest("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
                          "ab" * 16, "33333333-3333-4333-8333-333333333333", ApprovalStatus.PENDING, NOW)


def test_a_link_names_its_request_and_action_and_expires() -> None:
    link = sign(KEY, "v7", REQUEST, "postpone", NOW)
    claims = verify(link, KEY, NOW + approval_links.LIFETIME - timedelta(seconds=1), "postpone")
    assert (claims.tenant_id, claims.app_id, claims.request_id, claims.action, claims.key_version) == \
        (REQUEST.tenant_id, REQUEST.app_id, REQUEST.request_id, "postpone", "v7")
    with pytest.raises(LinkRefused) as expired:
        verify(link, KEY, NOW + approval_links.LIFETIME)
    assert expired.value.code == "LinkExpired"
    with pytest.raises(LinkRefused) as wrong:
        verify(link, KEY, NOW, "approve")
    assert wrong.value.code == "WrongAction"
    assert sign(KEY, "v7", REQUEST, "approve", NOW) != sign(KEY, "v7", REQUEST, "approve", NOW), "a nonce each"


def test_another_key_another_flow_or_a_change_is_refused() -> None:
    link = sign(KEY, "v7", REQUEST, "approve", NOW)
    with pytest.raises(LinkRefused):
        verify(link, secrets.token_bytes(32), NOW)
    version, payload, signature = link.split(".")
    for forged in (f"{version}.{payload[:-1]}A.{signature}", f"{version}.{payload}.{signature[::-1]}",
                   link + ".x", "a1..", "x" * 2000):
        with pytest.raises(LinkRefused) as refused:
            verify(forged, KEY, NOW)
        assert refused.value.code == "InvalidLink"
    # The same key signs consent and one-visit states under their own labels: neither is an approval link.
    consent_state, _ = consent.sign(KEY, "v7", REQUEST.tenant_id, NOW, timedelta(hours=1))
    visit_state, _ = onevisit.sign(KEY, "v7", REQUEST.tenant_id, REQUEST.app_id, NOW)
    for other in (consent_state, visit_state, "a1" + consent_state[2:], "a1" + visit_state[2:]):
        with pytest.raises(LinkRefused):
            verify(other, KEY, NOW)
    with pytest.raises(ValueError):
        sign(KEY, "v7", REQUEST, "delete", NOW)
