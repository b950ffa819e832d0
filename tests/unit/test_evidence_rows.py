"""The sign-in evidence as the row stores it and the registry accepts its quiet period: what is written is read back
whole, an old row without it reads as none, and a quiet period the log cannot show is refused with its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.tables import entity_to_target, target_to_entity
from shared.domain import CredentialSignIns, Policy, SignInEvidence, Target
from shared.registry import InvalidTarget, parse_target, status_document, target_document

TENANT, APP = "0a0a0a0a-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
KEY = "0c0c0c0c-0000-4000-8000-000000000003"
AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def test_the_evidence_and_its_hold_survive_the_row() -> None:
    evidence = SignInEvidence(True, AT, AT - timedelta(days=1), {
        KEY: CredentialSignIns(KEY, AT - timedelta(hours=5), AT - timedelta(hours=1), "192.0.2.55", "Microsoft Graph"),
        "quiet": CredentialSignIns("quiet", None, None)})
    target = Target(TENANT, APP, policy=Policy(retire_quiet_hours=72)).with_observed(
        sign_ins=evidence, evidence_hold="old-key-still-used: the superseded key ...")
    back = entity_to_target(target_to_entity(target))
    assert back.observed.sign_ins == evidence and back.observed.evidence_hold == target.observed.evidence_hold
    assert back.policy.retire_quiet_hours == 72
    failing = entity_to_target(target_to_entity(target.with_observed(sign_ins_unreadable_since=AT)))
    assert failing.observed.sign_ins_unreadable_since == AT
    refused = SignInEvidence(False, AT, AT, code="Authorization_RequestDenied", reason="no AuditLog.Read.All")
    assert entity_to_target(target_to_entity(target.with_observed(sign_ins=refused))).observed.sign_ins == refused


def test_a_row_that_never_read_evidence_stores_nothing_for_it() -> None:
    entity = target_to_entity(Target(TENANT, APP))
    assert not {"SignIns", "EvidenceHold", "RetireQuietHours", "SignInsUnreadableSince"} & set(entity)
    back = entity_to_target(entity)
    assert back.observed.sign_ins is None and back.observed.evidence_hold == ""
    assert back.observed.sign_ins_unreadable_since is None
    assert status_document(back)["signInEvidence"] is None


@pytest.mark.parametrize("hours", [0, 721, -1, 1.5, "24", True])
def test_a_quiet_period_the_log_cannot_show_is_refused_by_its_field(hours: object) -> None:
    with pytest.raises(InvalidTarget) as refused:
        parse_target({"tenantId": TENANT, "appId": APP, "policy": {"retireQuietHours": hours}})
    assert refused.value.field == "policy.retireQuietHours"


@pytest.mark.parametrize("hours", [1, 24, 720])
def test_a_quiet_period_within_the_logs_retention_is_kept(hours: int) -> None:
    target = parse_target({"tenantId": TENANT, "appId": APP, "policy": {"retireQuietHours": hours}})
    assert target.policy.retire_quiet_hours == hours
    assert target_document(target)["policy"] == {"retireQuietHours": hours}
