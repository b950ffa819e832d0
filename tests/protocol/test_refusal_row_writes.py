"""A tenant that refuses the sign-in log read, while a replaced key waits (a pass every quarter hour): the log is
still asked at every pass, but the row is not rewritten for the same refusal more than once a day; a different
answer is written at once, and a licence granted is used at the next pass."""

from __future__ import annotations

from datetime import timedelta

from shared.registry import status_document
from shared.sign_in_proof import EVIDENCE_UNAVAILABLE
from tests.protocol.test_sign_in_evidence import NOT_LICENSED, evidence_world, live, rotate, timer

NO_CONSENT = ("Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


async def test_the_same_refusal_is_asked_each_pass_and_written_once_a_day() -> None:
    world, target = evidence_world(retire_grace=timedelta(days=3))
    world.sign_ins.refusal = NOT_LICENSED
    world.destination.reports_sync.add("proofpoint")
    old = await rotate(world, target)
    world.clock.advance(timedelta(minutes=15))
    await timer(world, target)  # the first pass after the rotation records its days left
    first = world.row(target).observed.sign_ins
    assert first is not None and not first.available
    reads, writes = len(world.sign_ins.reads), world.state.writes
    for _ in range(4):
        world.clock.advance(timedelta(minutes=15))
        await timer(world, target)
    assert len(world.sign_ins.reads) == reads + 4, "asked at every pass"
    # Two writes a pass: the lease taken for the retirement still awaiting the sync, and released; none for the same
    # refusal, recorded this morning (three a pass when each rewrote it).
    assert world.state.writes == writes + 2 * 4
    assert world.row(target).observed.sign_ins == first and old in live(world, target)
    # A day later the refusal is written again (the status shows when it was last asked, within a day).
    world.clock.advance(timedelta(days=1))
    await timer(world, target)
    again = world.row(target).observed.sign_ins
    assert again is not None and again.read_at == world.clock.now() and again.code == NOT_LICENSED[0]
    assert status_document(world.row(target))["signInEvidence"]["readAt"] == world.clock.now().isoformat()
    # A different refusal is written at once.
    world.sign_ins.refusal = NO_CONSENT
    world.clock.advance(timedelta(minutes=15))
    await timer(world, target)
    changed = world.row(target).observed.sign_ins
    assert changed is not None and changed.code == NO_CONSENT[0] and changed.read_at == world.clock.now()
    assert [a.condition for a in world.alerter.raised].count(EVIDENCE_UNAVAILABLE) == 1, "told once"


async def test_a_licence_granted_is_read_at_the_next_pass() -> None:
    world, target = evidence_world(retire_grace=timedelta(days=3))
    world.sign_ins.refusal = NOT_LICENSED
    await rotate(world, target)
    world.clock.advance(timedelta(minutes=15))
    await timer(world, target)
    world.sign_ins.refusal = None
    world.clock.advance(timedelta(minutes=15))
    await timer(world, target)
    evidence = world.row(target).observed.sign_ins
    assert evidence is not None and evidence.available and evidence.read_at == world.clock.now()
