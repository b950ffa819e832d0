"""20 seeded random-time kills after the first reservation, each followed by recovery: the invariants hold.

Each case draws (from its seed, printed and in the test id) a first or a second rotation, and either a random held
request (any service, before or after it did the work, the n-th match) or a random delay after the row left idle,
then SIGKILLs `python -m shared rotate`. Replay one case with KILL_SEED=<seed> and `-k seed=<seed>`.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from azure.data.tables import TableClient

from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import (
    PORTAL_PATH,
    CrashPoint,
    Exited,
    Point,
    assert_converged,
    assert_safe_now,
    destinations,
    kill_after,
    kill_at,
    made,
    proxied,  # noqa: F401 - a fixture
    recover,
    rotated_once,
    row,
    secret_path,
    tagged,
)

BASE_SEED = int(os.environ.get("KILL_SEED", "20261128"))
SEEDS = [BASE_SEED + i for i in range(20)]


def random_point(rng: random.Random, c: Customer) -> CrashPoint:
    when = rng.choice(["before", "after"])
    kv = secret_path(c)
    pool = [
        Point("graph", "POST", "/addPassword$", when),
        Point("keyvault", "PUT", kv + "$", when),
        Point("entra", "POST", "/token$", when, client_id=c.app_id),  # the verification, not the rotator's token
        Point("proofpoint", "PUT", f"/orgs/{c.domain}/settings/azure$", when),
        Point("portal", "POST", PORTAL_PATH + "$", when),
        Point("keyvault", "PATCH", kv + "/[0-9a-f]+$", when, skip=rng.randrange(2)),
        Point("tables", "PUT", row(c), when, skip=rng.randrange(1, 5)),  # 0 is the lease: before the reservation
    ]
    point = rng.choice(pool)
    return CrashPoint(f"{point.service} {point.method} {point.when} (skip {point.skip})", (point,))


def left_idle(world: World, customer: Customer) -> bool:
    """True once the rotator reserved a rotation (the row, read straight from Azurite, is no longer idle)."""
    with TableClient.from_connection_string(world.env["STATE_TABLES_CONNECTION_STRING"],
                                            f"{world.prefix}targets") as table:
        return str(table.get_entity(customer.tenant_id, customer.app_id)["Stage"]) != "idle"


SAMPLE = 3  # make test runs the first seeds; make test-exhaustive all 20
CASES = [
    pytest.param(s, id=f"seed={s}", marks=() if i < SAMPLE else pytest.mark.exhaustive) for i, s in enumerate(SEEDS)
]


@pytest.mark.parametrize("seed", CASES)
async def test_a_random_kill_then_recovery(proxied: World, rotator: Rotator, seed: int) -> None:  # noqa: F811
    world = proxied
    rng = random.Random(seed)  # test equipment: reproducible on purpose
    second = rng.random() < 0.5
    if second:
        customer, _ = await rotated_once(world, rotator, "Again")
    else:
        customer = world.seed_customer("Once", 5)
        world.seed_accounts()
        async with rotator() as svc:
            await svc.state.create_target(customer.target(destinations(world, customer)))
    args = ("rotate", customer.tenant_id, customer.app_id, "--force")
    killed: bool
    if rng.random() < 0.5:
        point = random_point(rng, customer)
        print(f"seed {seed}: {'second' if second else 'first'} rotation, killed at {point.name}")
        try:
            await asyncio.to_thread(kill_at, world, point, args)
            killed = True
        except Exited as exited:
            assert exited.code == 0, str(exited)
            killed = False  # that n-th match never came: the rotation ended normally
    else:
        delay = rng.uniform(0.0, 1.5)
        print(f"seed {seed}: {'second' if second else 'first'} rotation, killed {delay:.3f} s after the reservation")
        killed = await asyncio.to_thread(kill_after, world, args, lambda: left_idle(world, customer), delay)
    print(f"seed {seed}: {'killed' if killed else 'ended before the kill'}")
    assert_safe_now(world, customer, rotated_before=second)
    target = await recover(world, rotator, customer)
    assert_converged(world, customer, rotations=2 if second else 1, target=target)
    if second:
        assert len(tagged(world, customer, "previous")) == 1
    assert len(made(world, customer)) == (2 if second else 1)
