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
