"""`python -m shared run` (and `check`) after a pass in which the sign-in evidence keeps an old key for a human
(old-key-still-used): the customer is named under the condition and the command exits 2, as for drift; the status
stays healthy (nothing else says a human must look). End to end: the CLI in its own process against the sandbox."""

from __future__ import annotations

from datetime import timedelta

from shared.sign_in_proof import OLD_KEY_STILL_USED
from tests.rotation.conftest import Rotator, World
from tests.rotation.test_push_retire import setup
from tests.rotation.test_sign_in_evidence import DAY_AND_AN_HOUR, licensed, live_key_ids, run_pass


async def test_run_names_an_old_key_still_used_and_exits_2(world: World, rotator: Rotator) -> None:
    due = licensed(world, "Forgotten")
    world.sb.control.set_sign_in_delay(0)
    await setup(world, rotator, due)
    await run_pass(world, rotator, timedelta(0))
    world.sb.control.set_clock(DAY_AND_AN_HOUR.total_seconds())
    assert world.sb.control.sign_in(due.tenant_id, due.app_id, due.secret, ip_address="192.0.2.55") is None
    world.env["RETIRE_GRACE_HOURS"] = "0"
    at = DAY_AND_AN_HOUR + timedelta(minutes=5)
    world.sb.control.set_clock(at.total_seconds())
    run = world.cli("run", offset=at.total_seconds())
    assert run.wait(timeout=180) == 2, run.output()
    assert f"{OLD_KEY_STILL_USED}: Forgotten" in run.output()
    assert due.key_id in live_key_ids(world, due)
    assert due.secret not in run.output()
