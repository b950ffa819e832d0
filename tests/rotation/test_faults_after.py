"""Faults that strike AFTER the work, on every non-idempotent step: the service does it (credential created, version
written, Proofpoint updated, portal received, credential removed) and then answers 500 or 503, drops the
connection, or the rotator is killed while waiting for the answer. The next run(s) must converge: no duplicate
credential, no credential whose value nobody holds, every destination on the current secret.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import (
    PORTAL_PATH,
    TAKE_OVER,
    CrashPoint,
    Point,
    assert_converged,
    assert_safe_now,
    destinations,
    kill_at,
    made,
    recover,
    secret_path,
)

GRACE_PASSED = timedelta(hours=25)


@dataclass(frozen=True)
class Step:
    name: str
    service: str
    method: str
    path: str  # a function of the customer: see `where`
    retirement: bool = False  # the step happens when superseded credentials are removed, after the grace period

    def where(self, customer: Customer) -> str:
        return self.path.format(secret=secret_path(customer), domain=customer.domain)


STEPS = [
    Step("addPassword", "graph", "POST", "/addPassword$"),
    Step("Key Vault set-secret", "keyvault", "PUT", "{secret}$"),
    Step("Proofpoint PUT", "proofpoint", "PUT", "/orgs/{domain}/settings/azure$"),
    Step("portal POST", "portal", "POST", PORTAL_PATH + "$"),
    Step("removePassword", "graph", "POST", "/removePassword$", retirement=True),
]
FAULTS: dict[str, dict[str, Any]] = {"500": {"status": 500}, "503": {"status": 503}, "drop": {"drop": True}}


async def start(world: World, rotator: Rotator, step: Step) -> Customer:
    """A due customer with both destinations; for retirement, its rotation already done."""
    customer = world.seed_customer("Faulty", 5)
    world.seed_accounts()
    async with rotator() as svc:
        await svc.state.create_target(customer.target(destinations(world, customer)))
        if step.retirement:
            summary = await svc.engine.run_pass(Actor.TIMER)
            assert [o.result for o in summary.outcomes] == ["rotated"], summary.outcomes
    if step.retirement:
        # The old secret goes only after the grace period AND once Proofpoint's own daily sync ran with the new one:
        # the sandbox's clock moves on as the rotator's does, so that sync has happened by the retiring pass.
        world.sb.control.set_clock(GRACE_PASSED.total_seconds())
    return customer


async def converged(world: World, rotator: Rotator, customer: Customer, step: Step, offset: timedelta) -> None:
    target = await recover(world, rotator, customer, offset=offset, passes=4)
    assert_converged(world, customer, rotations=1, target=target)
    if step.retirement:
        # Retirement went through: the customer's own credential is gone, nothing else was removed twice or kept.
        assert [c["keyId"] for c in world.credentials(customer)] == [target.state.current_key_id]
    else:
        assert customer.key_id in {c["keyId"] for c in world.credentials(customer)}, "grace period"


# make test runs the dropped connection at every step; make test-exhaustive also the 500 and the 503.
FAULT_CASES = [pytest.param(f, id=f, marks=() if f == "drop" else pytest.mark.exhaustive) for f in FAULTS]


@pytest.mark.parametrize("fault", FAULT_CASES)
@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_a_fault_after_the_work(world: World, rotator: Rotator, step: Step, fault: str) -> None:
    customer = await start(world, rotator, step)
    offset = GRACE_PASSED if step.retirement else timedelta(0)
    fault_id = world.sb.control.add_fault(step.service, method=step.method, path=step.where(customer),
                                          when="after", **FAULTS[fault])
    async with rotator(offset) as svc:
        await svc.engine.run_pass(Actor.TIMER)
    assert fault_id not in {f["id"] for f in world.sb.control.faults()}, "the step was reached and faulted"
    assert_safe_now(world, customer, rotated_before=step.retirement)
    await converged(world, rotator, customer, step, offset + TAKE_OVER)


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
async def test_a_kill_after_the_work(world: World, rotator: Rotator, step: Step) -> None:
    customer = await start(world, rotator, step)
    offset = GRACE_PASSED if step.retirement else timedelta(0)
    point = CrashPoint(f"after {step.name}", (Point(step.service, step.method, step.where(customer), "after"),))
    args = ("run",) if step.retirement else ("rotate", customer.tenant_id, customer.app_id)
    await asyncio.to_thread(kill_at, world, point, args, None, offset.total_seconds())
    assert_safe_now(world, customer, rotated_before=step.retirement)
    await converged(world, rotator, customer, step, offset + TAKE_OVER)
    assert len(made(world, customer)) == 1


async def test_push_max_attempts_alert_with_a_fault_counted_across_passes(world: World, rotator: Rotator) -> None:
    """Proofpoint fails the next 3 PUTs, whichever pass sends them: the 3rd failed pass alerts a human (once), the
    old secret stays live, and the 4th pass, Proofpoint back, finishes the rotation."""
    attempts = 3
    customer = world.seed_customer("Stubborn", 5)
    world.seed_accounts()
    async with rotator() as svc:
        await svc.state.create_target(customer.target(destinations(world, customer)))
    fault = world.sb.control.add_fault("proofpoint", method="PUT", path=f"/orgs/{customer.domain}/settings/azure$",
                                       status=503, count=attempts)
    alerter = LogAlerter()
    for done in range(1, attempts + 1):
        async with rotator(alerter=alerter, PUSH_MAX_ATTEMPTS=str(attempts)) as svc:
            summary = await svc.engine.run_pass(Actor.TIMER)
            target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
        assert [o.result for o in summary.outcomes] == ["push-incomplete"], summary.outcomes
        left = {f["id"]: f["count"] for f in world.sb.control.faults()}
        assert left.get(fault, 0) == attempts - done, "one Proofpoint PUT per pass"
        assert target.state.push_failures == {"proofpoint": done}
        alerts = [a for a in alerter.raised if a.condition == "destination-failing"]
        assert len(alerts) == (1 if done == attempts else 0), f"after {done} failed pass(es): {alerts}"
        assert bool(target.observed.needs_human) is (done == attempts)
        assert customer.key_id in {c["keyId"] for c in world.credentials(customer)}, "the old secret stays"
        assert_safe_now(world, customer, rotated_before=False)
    async with rotator(alerter=alerter, PUSH_MAX_ATTEMPTS=str(attempts)) as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    assert [o.result for o in summary.outcomes] == ["rotated"], summary.outcomes
    assert_converged(world, customer, rotations=1, target=target)
    assert not target.observed.needs_human and target.state.push_failures == {}
