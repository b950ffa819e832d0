"""Which conditions a row shows (pure), and that every condition the code raises is either resolvable or a notice."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.conditions import NOTICES, RESOLVABLE, holding, may_hold_any, resolvable
from shared.domain import Ack, DestinationConfig, Stage, Target
from shared.protocol.adopt import HAND_WRITTEN_NOT_ADOPTED, HAND_WRITTEN_REFUSED
from shared.protocol.verify import VERIFY_FLAGS
from shared.sync_proof import SYNC_NOT_CONFIRMED

NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
ROOT = Path(__file__).resolve().parents[2]


def target() -> Target:
    return Target("t", "a", "Contoso", destinations=(DestinationConfig("helpdesk", "notify-only"),
                                                      DestinationConfig("portal", "http")))


def test_a_healthy_idle_row_shows_nothing_and_needs_no_look() -> None:
    t = target().with_observed(status="healthy")
    assert holding(t, NOW, DAY) == frozenset() and not may_hold_any(t, NOW, DAY)


def test_each_part_of_the_row_shows_its_condition() -> None:
    t = target()
    assert holding(t.with_observed(status="not-owner"), NOW, DAY) == {("not-owner", "")}
    assert holding(t.with_observed(status="due"), NOW, DAY) == frozenset()
    verified = t.with_state(stage=Stage.VERIFIED, stage_since=NOW - DAY - timedelta(minutes=1), new_key_id="k2",
                            push_failures={"portal": 3, "other": 0})
    assert holding(verified, NOW, DAY) == {("stuck", ""), ("destination-failing", "portal"),
                                           ("notify-only-waiting", "helpdesk")}
    acked = verified.with_state(acks={"helpdesk": Ack("k2", NOW)}, stage_since=NOW)
    assert holding(acked, NOW, DAY) == {("destination-failing", "portal")}
    old_ack = verified.with_state(acks={"helpdesk": Ack("k1", NOW)}, stage_since=NOW, push_failures={})
    assert holding(old_ack, NOW, DAY) == {("notify-only-waiting", "helpdesk")}, "an old key's ack does not count"
    assert holding(t.with_observed(needs_human=f"{SYNC_NOT_CONFIRMED}: portal"), NOW, DAY) == {
        (SYNC_NOT_CONFIRMED, "")}
    assert holding(t.with_observed(last_outcome="failed: CreateFailed"), NOW, DAY) == {("rotation-failed", "")}
    assert holding(t.with_observed(last_outcome="rotated"), NOW, DAY) == frozenset()
    pp = Target("t", "a", "Contoso", destinations=(DestinationConfig("pp", "proofpoint"),))
    drifted = pp.with_state(stage=Stage.VERIFIED, stage_since=NOW, new_key_id="k2", held={"pp": "k2"})
    assert holding(drifted, NOW, DAY) == {("proofpoint-drift", "pp")}
    assert holding(drifted.with_state(new_key_id="", held={"pp": "k2"}), NOW, DAY) == frozenset(), "rotation over"
    refused = t.with_state(stage=Stage.PENDING, stage_since=NOW).with_observed(
        needs_human="verify-refused: Entra ID refused the new secret")
    assert holding(refused, NOW, DAY) == {("verify-refused", "")}
    assert holding(refused.with_state(stage=Stage.VERIFIED, new_key_id="k"), NOW, DAY) == {
        ("notify-only-waiting", "helpdesk")}, "verified: the flag no longer counts"
    in_flight = t.with_state(stage=Stage.CREATING, stage_since=NOW)
    assert holding(in_flight, NOW, DAY) == frozenset() and may_hold_any(in_flight, NOW, DAY)


def test_the_verify_flags_are_the_verify_steps() -> None:
    from shared import conditions

    assert conditions.VERIFY_FLAGS == VERIFY_FLAGS


def test_every_condition_the_code_raises_is_resolvable_or_a_notice() -> None:
    raised: set[str] = set()
    for source in (ROOT / "shared").rglob("*.py"):
        text = source.read_text()
        raised |= set(re.findall(r"\balert\(\s*\"([a-z-]+)\"", text))
        raised |= set(re.findall(r"\bAlert\(\s*\"([a-z-]+)\"", text))
        raised |= {f"{kind}-drift" for kind in re.findall(r"\balert\(\s*f\"\{config\.kind\}-drift\"", text)
                   and ["proofpoint"]}
    raised |= {SYNC_NOT_CONFIRMED, *VERIFY_FLAGS, HAND_WRITTEN_REFUSED, HAND_WRITTEN_NOT_ADOPTED}  # by constant
    assert {"expired", "stuck", "notify-only-waiting", "destination-failing", "rotation-failed"} <= raised
    assert {c for c in raised - {"test"} if not resolvable(c)} <= NOTICES
    assert "proofpoint-drift" in raised and resolvable("proofpoint-drift")
    assert not RESOLVABLE & NOTICES
