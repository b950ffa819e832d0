"""Per-application propagation delays of 0-300 s (sandbox time, seeded), most longer than VERIFY_TIMEOUT_SECONDS:
the timer pass leaves those targets `pending`, flagged `verify-timeout` for a human, and the short-cadence resume
passes (RESUME_SCHEDULE, every 15 minutes; one token request each) finish every one of them within two passes,
clearing the flag, without starting anything new.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

from shared.domain import Actor, Stage
from tests.rotation.conftest import Rotator, World
from tests.rotation.safety import assert_converged, destinations

SEED = int(os.environ.get("PROPAGATION_SEED", "300"))
RESUME_EVERY = timedelta(minutes=15)  # RESUME_SCHEDULE's default cadence
VERIFY_TIMEOUT_SECONDS = 1  # real seconds the timer pass waits for a secret; the delays are sandbox minutes


async def test_per_app_propagation_delays_converge_within_two_resume_passes(world: World, rotator: Rotator) -> None:
    rng = random.Random(SEED)  # test equipment: reproducible on purpose
    print(f"propagation seed {SEED}")
    customers = [world.seed_customer(f"Slow{i}", 5) for i in range(6)]
    delays = {c.app_id: 0.0 if i == 0 else round(rng.uniform(0, 300), 1) for i, c in enumerate(customers)}
    delays[customers[1].app_id] = 300.0  # the upper bound itself
    world.sb.control.set_propagation_delays(dict(delays))
    print("delays (sandbox seconds):", sorted(delays.values()))
    assert sum(d > VERIFY_TIMEOUT_SECONDS for d in delays.values()) >= 4
    idle_but_due = world.seed_customer("Untouched", 5)
    world.seed_accounts()
    settings = {"VERIFY_TIMEOUT_SECONDS": str(VERIFY_TIMEOUT_SECONDS)}
    async with rotator(**settings) as svc:
        for c in customers:
            await svc.state.create_target(c.target(destinations(world, c)))
        summary = await svc.engine.run_pass(Actor.TIMER)
    results = {o.app_id: o.result for o in summary.outcomes}
    assert results[customers[0].app_id] == "rotated"
    assert all(results[c.app_id] == "unverified" for c in customers if delays[c.app_id] > 5), results
    async with rotator(**settings) as svc:
        for c in customers:
            if delays[c.app_id] > 5:
                held, _ = await svc.state.get_target(c.tenant_id, c.app_id)
                assert held.observed.needs_human.startswith("verify-timeout") and \
                    held.observed.error_code == "AADSTS7000215"

    async with rotator(**settings) as svc:
        await svc.state.create_target(idle_but_due.target(destinations(world, idle_but_due)))
    for n in (1, 2):
        later = RESUME_EVERY * n
        world.sb.control.set_clock(later.total_seconds())
        async with rotator(later, **settings) as svc:
            await svc.engine.resume_pass()
            rows = {c.app_id: (await svc.state.get_target(c.tenant_id, c.app_id))[0] for c in customers}
            untouched, _ = await svc.state.get_target(idle_but_due.tenant_id, idle_but_due.app_id)
        assert untouched.state.stage is Stage.IDLE and not untouched.state.rotation_id, "resume starts nothing"
        if all(r.state.stage is Stage.IDLE for r in rows.values()):
            break
    for c in customers:
        assert_converged(world, c, rotations=1, target=rows[c.app_id])
        assert rows[c.app_id].observed.needs_human == ""
