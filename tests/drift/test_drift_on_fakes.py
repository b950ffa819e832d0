"""Drift on the row as the engine's other paths see it (every port faked): a dry run names it."""

from __future__ import annotations

from tests.fakes import FakeWorld


async def test_a_dry_run_names_the_drift_the_last_check_found() -> None:
    world = FakeWorld()
    target = world.seed(days_left=200, destinations=("proofpoint",))
    drift = {"proofpoint": "Proofpoint's sync uses application '33333333-3333-3333-3333-333333333333', not the "
                           f"registered app {target.app_id}"}
    world.state._write(world.row(target).with_observed(drift=drift))
    preview = await world.engine().rotate_now(target.tenant_id, target.app_id, force=True, dry_run=True)
    assert preview.result == "would-rotate"
    assert "drift found at proofpoint: Proofpoint's sync uses application" in preview.message
    clean = world.seed(days_left=200, destinations=("proofpoint",))
    plain = await world.engine().rotate_now(clean.tenant_id, clean.app_id, force=True, dry_run=True)
    assert "drift" not in plain.message


async def test_a_superseded_key_a_drift_names_is_kept_until_the_drift_clears() -> None:
    from datetime import timedelta

    from shared.domain import Actor

    world = FakeWorld(retire_grace=timedelta(0))
    target = world.seed(days_left=10, destinations=("proofpoint",))
    world.destination.reports_sync.add("proofpoint")  # the old key waits for Proofpoint's own sync
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    world.clock.advance(timedelta(hours=1))
    assert old in set(world.live_values(target))
    assert world.sync(target, "proofpoint")
    # The last check found Proofpoint's expiry matching the old key and a hand-made one, neither the rotator's.
    drift = {"proofpoint": f"Proofpoint's secret expires 2027-02-01, which matches keys {old} ('created by hand'), "
                           "k-other ('created by hand') ...; which one it uses cannot be told"}
    world.state._write(world.row(target).with_observed(drift=drift, drift_kept=(old,),
                                                       drift_checked_at=world.clock.now()))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old in set(world.live_values(target)), "a key Proofpoint may use is never retired"
    world.state._write(world.row(target).with_observed(drift={}, drift_kept=()))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old not in set(world.live_values(target)), "the drift cleared: the old key goes"
