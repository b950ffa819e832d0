"""The verify probe's request id on plain data (shared/verify_probe.py) and the evidence rule it enables
(shared/sign_in_proof.judge with `probe_known`): the id is a GUID fixed by the rotation and key, no secret in it; a
key whose probe is known by id counts any other sign-in after the push; one without falls back to the time cut-off."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared import verify_probe
from shared.domain import CredentialSignIns, SignInEvidence
from shared.sign_in_proof import SELF_SIGN_IN_MARGIN, judge

PUSH = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NEW, OLD = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
DAY = timedelta(hours=24)


def allows(new: CredentialSignIns, *, probe_known: bool) -> bool:
    now = PUSH + 2 * DAY
    evidence = SignInEvidence(True, now, PUSH - DAY, {NEW: new})
    return judge(evidence, NEW, (OLD,), PUSH, now, DAY, DAY, True, probe_known=probe_known).allows


def test_the_id_is_a_guid_fixed_by_rotation_and_key_and_distinct_otherwise() -> None:
    one = verify_probe.request_id("r-1", NEW)
    assert str(uuid.UUID(one)) == one  # Entra's correlation ids are GUIDs
    assert one == verify_probe.request_id("r-1", NEW)  # a re-run after a crash sends the same
    others = {verify_probe.request_id("r-2", NEW), verify_probe.request_id("r-1", OLD), verify_probe.adoption_id("r-1")}
    assert one not in others and len(others) == 3


def test_a_sign_in_inside_the_old_margin_counts_once_the_probe_is_set_aside_by_id() -> None:
    proofpoint = CredentialSignIns(NEW, PUSH + timedelta(minutes=2), PUSH + timedelta(minutes=2),
                                   probe_sign_in=PUSH - timedelta(seconds=20))
    assert allows(proofpoint, probe_known=True)
    assert not allows(proofpoint, probe_known=False)  # a row without probe ids: the time rule, as before


def test_only_the_probe_never_counts_however_late_entra_stamped_it() -> None:
    for late in (timedelta(minutes=10), timedelta(hours=3)):
        only_probe = CredentialSignIns(NEW, None, None, probe_sign_in=PUSH + late)
        assert not allows(only_probe, probe_known=True)
    # The same late probe read without its id (an old row) is counted by the time rule past its margin.
    unknown = CredentialSignIns(NEW, PUSH + SELF_SIGN_IN_MARGIN * 2, PUSH + SELF_SIGN_IN_MARGIN * 2)
    assert allows(unknown, probe_known=False)


def test_the_first_sign_in_shown_is_the_probes_only_when_it_came_first() -> None:
    probe, sync = PUSH - timedelta(seconds=20), PUSH + timedelta(hours=3)
    assert verify_probe.first_sign_in(CredentialSignIns(NEW, sync, sync, probe_sign_in=probe), True) == (probe, True)
    assert verify_probe.first_sign_in(CredentialSignIns(NEW, None, None, probe_sign_in=probe), True) == (probe, True)
    earlier = CredentialSignIns(NEW, probe - timedelta(hours=1), sync, probe_sign_in=probe)
    assert verify_probe.first_sign_in(earlier, True) == (probe - timedelta(hours=1), False)
    assert verify_probe.first_sign_in(CredentialSignIns(NEW, sync, sync), True) == (sync, False)
    assert verify_probe.first_sign_in(CredentialSignIns(NEW, probe, sync, probe_sign_in=probe), False) == (probe, False)


def test_the_recorded_ids_are_matched_in_lower_case_and_empty_ones_dropped() -> None:
    assert verify_probe.recorded({NEW: "ABCDEF00-0000-4000-8000-000000000001", OLD: ""}) == frozenset(
        {"abcdef00-0000-4000-8000-000000000001"})
