"""The keys a hold (old-key-still-used, new-key-unused) or a drift finding keeps, as a structured field: found by
key id where the finding is made, kept on the row (EvidenceKept, DriftKept), and what the retire step keeps; a row
written in the layout before these columns still reads, its keys taken from the text as they were then."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.adapters.tables import entity_to_target, target_to_entity
from shared.destinations.proofpoint import reported_use
from shared.domain import Ack, Actor, Credential, RotationState, Target
from shared.drift import find_drift
from shared.registry import status_document
from shared.sign_in_proof import NEW_KEY_UNUSED, OLD_KEY_STILL_USED
from tests.drift.test_find_drift import HAND_OLD, MINE, NOW, app, settings, target
from tests.fakes import FakeWorld
from tests.protocol.test_sign_in_evidence import NOT_LICENSED

TENANT, APP = "0a0a0a0a-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
OLD, OTHER, NEW = ("0c0c0c0c-0000-4000-8000-00000000000" + d for d in "123")


def test_a_drift_finding_names_the_superseded_keys_it_keeps() -> None:
    one = Credential("k-a", "created by hand", NOW - timedelta(days=300), datetime(2027, 2, 1, 8, tzinfo=UTC))
    two = Credential("k-b", "created by hand", NOW - timedelta(days=200), datetime(2027, 2, 1, 20, tzinfo=UTC))
    synced = Ack("k-mine", NOW - timedelta(hours=2), sync_after=NOW - timedelta(hours=2),
                 synced_at=NOW - timedelta(hours=1))
    waiting = target().with_state(superseded=("k-a",), acks={"proofpoint": synced})
    ambiguous = find_drift(reported_use("proofpoint", settings("2027-02-01")), waiting, app(MINE, one, two), NOW)
    assert ambiguous.problems and ambiguous.keeps == ("k-a",), "k-b is not superseded: not the rotator's to keep"
    replaced = target().with_state(superseded=("k-hand",), acks={"proofpoint": synced})
    still = find_drift(reported_use("proofpoint", settings("2027-02-01T08:00:00Z")), replaced,
                       app(MINE, HAND_OLD), NOW)
    assert still.keeps == ("k-hand",)
    healthy = find_drift(reported_use("proofpoint", settings("2027-05-05")), replaced, app(MINE, HAND_OLD), NOW)
    assert healthy.problems == () and healthy.keeps == ()


def row(**observed: object) -> Target:
    return Target(TENANT, APP, state=RotationState(current_key_id=NEW, superseded=(OLD, OTHER))).with_observed(
        **observed)


def test_the_kept_keys_survive_the_row_and_are_shown() -> None:
    held = row(evidence_hold=f"{OLD_KEY_STILL_USED}: some text naming no key", evidence_kept=(OLD,),
               drift={"proofpoint": "a text naming no key"}, drift_kept=(OTHER,))
    entity = target_to_entity(held)
    assert json.loads(entity["EvidenceKept"]) == [OLD] and json.loads(entity["DriftKept"]) == [OTHER]
    back = entity_to_target(entity)
    assert back.observed.evidence_kept == (OLD,) and back.observed.drift_kept == (OTHER,)
    doc = status_document(back.with_observed(sign_ins=None))
    assert doc["driftKeptKeyIds"] == [OTHER]
    plain = target_to_entity(row())
    assert "EvidenceKept" not in plain and "DriftKept" not in plain, "absent on every row that holds nothing"
    assert entity_to_target(plain).observed.evidence_kept == () == entity_to_target(plain).observed.drift_kept


def _legacy(target: Target) -> dict[str, object]:
    """The row as written before the kept-keys columns (the current layout minus them)."""
    entity = dict(target_to_entity(target))
    entity.pop("EvidenceKept", None)
    entity.pop("DriftKept", None)
    return entity


def test_a_row_in_the_earlier_layout_reads_its_kept_keys_from_the_texts() -> None:
    used = row(evidence_hold=f"{OLD_KEY_STILL_USED}: the superseded key {OLD.upper()} signed in at ...; new key {NEW}",
               drift={"proofpoint": f"... matches keys {OTHER} ('by hand'), k-x ('by hand') ...; kept"})
    back = entity_to_target(_legacy(used))
    assert back.observed.evidence_kept == (OLD,), "only superseded keys, whatever the case"
    assert back.observed.drift_kept == (OTHER,)
    unused = row(evidence_hold=f"{NEW_KEY_UNUSED}: Entra ID records no sign-in with the new key {NEW} ...")
    assert entity_to_target(_legacy(unused)).observed.evidence_kept == (OLD, OTHER), "it kept every waiting key"
    assert entity_to_target(_legacy(row())).observed.evidence_kept == ()


async def _rotated(world: FakeWorld) -> tuple[Target, str]:
    target = world.seed(days_left=10, destinations=("proofpoint",))
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    world.clock.advance(timedelta(hours=2))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    return target, old


async def test_the_retire_step_keeps_what_the_field_names_not_what_the_text_says() -> None:
    # An open old-key-still-used whose text names no key, the log now refused: the field keeps the key.
    world = FakeWorld(evidence=True, retire_grace=timedelta(0))
    world.destination.reports_sync.add("proofpoint")
    target, old = await _rotated(world)
    world.sign_ins.refusal = NOT_LICENSED
    world.state._write(world.row(target).with_observed(evidence_hold=f"{OLD_KEY_STILL_USED}: (reworded)",
                                                       evidence_kept=(old,)))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old in set(world.live_values(target))
    # A text naming the key without the field keeps nothing: the destinations' proof lets it go.
    world2 = FakeWorld(evidence=True, retire_grace=timedelta(0))
    world2.destination.reports_sync.add("proofpoint")
    target2, old2 = await _rotated(world2)
    world2.sign_ins.refusal = NOT_LICENSED
    world2.state._write(world2.row(target2).with_observed(
        evidence_hold=f"{OLD_KEY_STILL_USED}: the superseded key {old2} signed in", evidence_kept=()))
    await world2.engine().advance(target2.tenant_id, target2.app_id, Actor.TIMER)
    assert old2 not in set(world2.live_values(target2))


async def test_a_drift_keeps_the_key_its_field_names() -> None:
    world = FakeWorld(retire_grace=timedelta(0))
    world.destination.reports_sync.add("proofpoint")
    target, old = await _rotated(world)
    world.state._write(world.row(target).with_observed(drift={"proofpoint": "which one it uses cannot be told"},
                                                       drift_kept=(old,), drift_checked_at=world.clock.now()))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old in set(world.live_values(target))
