"""new-key-unused when the tenant later refuses the sign-in log: the last readable log said nothing used the new key a
day after the push, so whatever syncs still uses an old one, whatever Proofpoint's last_successful_sync says. The
old keys stay, with the open hold and its alert, until a readable log shows the new key in use (then they go as
usual) or a human removes them; a new key the destinations' proof alone backs never frees them."""

from __future__ import annotations

from datetime import timedelta

from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts
from shared.sign_in_proof import NEW_KEY_UNUSED
from tests.protocol.test_sign_in_evidence import NOT_LICENSED, evidence_world, live, rotate, timer


async def test_an_unused_new_key_keeps_the_old_one_while_the_log_is_refused_until_a_readable_log_shows_it_used() -> (
        None):
    world, target = evidence_world()
    world.destination.reports_sync.add("proofpoint")
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=24, minutes=10))
    await timer(world, target)
    row = world.row(target)
    assert row.observed.evidence_hold.startswith(NEW_KEY_UNUSED + ":") and row.observed.evidence_kept == (old,)

    # The licence lapses; Proofpoint reports a successful sync after the push (with the old key, as far as the last
    # log can tell): its word alone no longer frees the old key.
    world.sign_ins.refusal = NOT_LICENSED
    world.sign_ins.report_refusal = NOT_LICENSED[0]
    for _ in range(3):
        world.destination.synced["proofpoint"] = world.clock.now()
        world.clock.advance(timedelta(days=1))
        await timer(world, target)
        assert old in live(world, target)
        row = world.row(target)
        assert row.observed.evidence_hold.startswith(NEW_KEY_UNUSED + ":")
        assert NEW_KEY_UNUSED in open_alerts(row, StatusPolicy(), world.clock.now())
        shown = status_document(row)["signInEvidence"]
        assert shown["available"] is False and shown["keptKeyIds"] == [old] and shown["hold"]
    assert [a.condition for a in world.alerter.raised].count(NEW_KEY_UNUSED) == 1, "alerted on entering only"

    # Readable again, the new key still unused: still held. Proofpoint then signs in with it: the old key goes.
    world.sign_ins.refusal = None
    await timer(world, target)
    assert old in live(world, target)
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    await timer(world, target)
    assert old not in live(world, target) and world.converged(target) == []
    assert world.row(target).observed.evidence_hold == "" and NEW_KEY_UNUSED in world.alerter.resolved_conditions()


async def test_a_refusal_before_any_hold_falls_back_to_the_destinations_as_before() -> None:
    world, target = evidence_world()
    world.destination.reports_sync.add("proofpoint")
    world.sign_ins.refusal = NOT_LICENSED
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=25))
    world.destination.synced["proofpoint"] = world.clock.now()
    world.clock.advance(timedelta(minutes=1))
    await timer(world, target)
    assert old not in live(world, target), "no readable log ever said otherwise: the destinations' proof decides"
    assert NEW_KEY_UNUSED not in world.alerter.conditions()
