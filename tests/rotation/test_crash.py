"""Real crashes: the rotating process is killed (SIGKILL) while the sandbox holds its request; the next run converges.

Invariants checked after recovery (DESIGN.md): every live rotator-made credential has its value in Key Vault (no
orphan), exactly one new credential stays live, Key Vault has exactly one `current` version, and it is the value
of that credential.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from shared.domain import Actor, Stage
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import wait_held

HELD_TIMEOUT = 120.0  # seconds to reach a crash point on a loaded machine

TAKE_OVER = timedelta(minutes=6)  # past the crashed run's lease (5 minutes)


@dataclass(frozen=True)
class CrashPoint:
    """Where to kill the rotator: the request held (before or after the service processed it)."""

    name: str
    service: str
    method: str
    path: str
    when: str
    # Requests to hold first, in order, before the crash point itself is installed (to get past earlier calls
    # to the same route).
    before: tuple[tuple[str, str, str, str], ...] = ()


def kv_put(when: str) -> tuple[str, str, str, str]:
    return ("keyvault", "PUT", "/secrets/ppsync-", when)


CRASH_POINTS = [
    CrashPoint("before addPassword", "graph", "POST", "/addPassword", "before"),
    CrashPoint("after addPassword, before its answer", "graph", "POST", "/addPassword", "after"),
    CrashPoint("before the Key Vault write", *kv_put("before")),
    CrashPoint("after the Key Vault write, before its answer", *kv_put("after")),
    CrashPoint("during verification", "entra", "POST", "/oauth2/v2.0/token", "before", before=(kv_put("after"),)),
]


def kill_at(world: World, customer: Customer, point: CrashPoint, *args: str) -> None:
    """Run `python -m shared rotate` (or args) and SIGKILL it while the crash point's request is held."""
    control = world.sb.control
    process = world.cli(*(args or ("rotate", customer.tenant_id, customer.app_id)))
    try:
        for service, method, path, when in point.before:
            first = control.add_hold(service, method=method, path=path, when=when)
            wait_held(world, process, first, timeout=HELD_TIMEOUT)
            crash = control.add_hold(point.service, method=point.method, path=scoped(point, customer), when=point.when)
            control.release(first)
            break
        else:
            crash = control.add_hold(point.service, method=point.method, path=scoped(point, customer), when=point.when)
        wait_held(world, process, crash, timeout=HELD_TIMEOUT)
    finally:
        process.kill()
        process.wait(timeout=10)
        process.log.unlink(missing_ok=True)
        control.release_all()


def scoped(point: CrashPoint, customer: Customer) -> str:
    # The token route serves every token request of the tenant; the rotator's own Graph token is cached by
    # then, so the next request for this tenant is the verification of the new secret.
    return f"/{customer.tenant_id}{point.path}" if point.service == "entra" else point.path


async def assert_converged(world: World, rotator: Rotator, customer: Customer) -> None:
    async with rotator(TAKE_OVER) as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
        assert [o.result for o in summary.outcomes] == ["rotated"], summary.outcomes
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
        assert target.state.stage is Stage.IDLE
        made = [c for c in world.credentials(customer) if "rotation" in (c["displayName"] or "")]
        assert len(made) == 1, f"exactly one rotator-made credential must stay live, found {len(made)}"
        assert made[0]["keyId"] == target.state.current_key_id
        current = [v for v in world.versions(customer) if v["tags"].get("stage") == "current"]
        assert len(current) == 1 and current[0]["value"] == made[0]["secretText"]
        # The credential the customer had is untouched until the grace period is over.
        assert any(c["keyId"] == customer.key_id for c in world.credentials(customer))


@pytest.mark.parametrize("point", CRASH_POINTS, ids=lambda p: p.name)
async def test_a_crash_while_rotating_converges_on_the_next_run(
    world: World, rotator: Rotator, point: CrashPoint
) -> None:
    customer = world.seed_customer("Crashy", 5)
    async with rotator() as svc:
        await svc.state.create_target(customer.target())
    await asyncio.to_thread(kill_at, world, customer, point)
    async with rotator() as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
        assert target.state.stage in (Stage.CREATING, Stage.PENDING), "the crash left a rotation in flight"
        # Within the crashed run's lease nobody else touches the target.
        assert (await svc.engine.advance(customer.tenant_id, customer.app_id, Actor.TIMER)).result == "busy"
    await assert_converged(world, rotator, customer)
