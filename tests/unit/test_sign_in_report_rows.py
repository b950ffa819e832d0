"""The credential activity report as the row keeps it beside the sign-in log's evidence: written and read back whole
(refused too), a row written before the report was read (no "report" in its SignIns) reads as none, and the status
document shows each key's reported day, keys only the report knows included."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.adapters.tables import entity_to_target, target_to_entity
from shared.domain import CredentialSignIns, ReportedSignIns, SignInEvidence, Target
from shared.registry import status_document

TENANT, APP = "0a0a0a0a-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
KEY, OLD = "0c0c0c0c-0000-4000-8000-000000000003", "0c0c0c0c-0000-4000-8000-000000000004"
AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
DAY = datetime(2026, 10, 20, tzinfo=UTC)


def test_the_report_survives_the_row_and_is_shown_per_key() -> None:
    report = ReportedSignIns(True, AT, {OLD: DAY, KEY: AT.replace(hour=0)})
    evidence = SignInEvidence(True, AT, AT - timedelta(days=1),
                              {KEY: CredentialSignIns(KEY, AT - timedelta(hours=3), AT - timedelta(hours=1))},
                              reported=report)
    target = Target(TENANT, APP).with_observed(sign_ins=evidence)
    back = entity_to_target(target_to_entity(target))
    assert back.observed.sign_ins == evidence
    shown = status_document(back)["signInEvidence"]
    assert shown["report"] == {"available": True, "code": None, "readAt": AT.isoformat()}
    by_key = {c["keyId"]: c for c in shown["credentials"]}
    assert by_key[KEY]["reportedLastSignIn"] == AT.replace(hour=0).isoformat()
    assert by_key[OLD] == {"keyId": OLD, "firstSignIn": None, "lastSignIn": None, "lastSignInIp": None,
                           "lastSignInResource": None, "reportedLastSignIn": DAY.isoformat()}
    refused = SignInEvidence(False, AT, AT, code="Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                             reported=ReportedSignIns(False, AT, code="Authorization_RequestDenied"))
    again = entity_to_target(target_to_entity(target.with_observed(sign_ins=refused)))
    assert again.observed.sign_ins == refused
    assert status_document(again)["signInEvidence"]["report"]["code"] == "Authorization_RequestDenied"


def test_a_row_written_before_the_report_reads_as_none() -> None:
    entity = target_to_entity(Target(TENANT, APP).with_observed(sign_ins=SignInEvidence(True, AT, AT)))
    doc = json.loads(entity["SignIns"])
    assert "report" not in doc  # the layout rows had before the report was read
    back = entity_to_target(entity)
    assert back.observed.sign_ins is not None and back.observed.sign_ins.reported is None
    assert status_document(back)["signInEvidence"]["report"] is None
