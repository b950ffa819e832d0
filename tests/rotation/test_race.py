"""Two manual rotations around a finishing rotation: exactly one new credential and one new Key Vault version; the
loser is refused (409-type), whichever path (engine.rotate_now or POST /api/rotations) loses.

The race is made deterministic with the Tables proxy: the loser's first read of the target row is served by
Azurite and its answer held; meanwhile the winner runs a whole rotation; then the loser goes on with what it read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.errors import Conflict
from tests.api.conftest import WAIT, Api, api  # noqa: F401 - `api` is a fixture used here
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import (
    Point,
    assert_converged,
    destinations,
    made,
    proxied,  # noqa: F401 - a fixture
    row,
)


async def manual_by_engine(rotator: Rotator, customer: Customer) -> str:
    """engine.rotate_now without force: "rotated", or the Conflict's code."""
    async with rotator() as svc:
        try:
            outcome = await svc.engine.rotate_now(customer.tenant_id, customer.app_id)
        except Conflict as refused:
            return f"409 {refused.code}"
    return outcome.result


async def manual_by_http(api: Api, customer: Customer) -> str:  # noqa: F811
    """POST /api/rotations?wait=true without force: "rotated", or the 409's error code."""
    reply = await api.call("rotations", "POST", body={"tenantId": customer.tenant_id, "appId": customer.app_id},
                           params=WAIT)
    if reply.status == 409:
        return f"409 {reply.code}"
    assert reply.status == 200, reply.text
    return str(reply.body["result"])


@pytest.fixture
def racing(proxied: World, api: Api) -> tuple[World, Api]:  # noqa: F811
    """`proxied` first: the HTTP functions read the (proxied) connection string when `api` sets the environment."""
    return proxied, api


@pytest.mark.parametrize("loser", ["engine", "http"])
async def test_two_manual_rotations_around_a_finishing_rotation(
    racing: tuple[World, Api], rotator: Rotator, loser: str
) -> None:
    world, api = racing  # noqa: F811
    customer = world.seed_customer("Racy", 300)
    world.seed_accounts()
    async with rotator() as svc:
        await svc.state.create_target(customer.target(destinations(world, customer)))

    def by(path: str) -> Any:
        return manual_by_engine(rotator, customer) if path == "engine" else manual_by_http(api, customer)

    winner = "http" if loser == "engine" else "engine"
    hold = Point("tables", "GET", row(customer), "after").install(world)
    late = asyncio.create_task(by(loser))
    deadline = asyncio.get_running_loop().time() + 60
    while await asyncio.to_thread(world.sb.control.waiting, hold) < 1:
        assert not late.done(), f"the {loser} path ended before reading the row: {late.result()}"
        assert asyncio.get_running_loop().time() < deadline, "the loser never read the target row"
        await asyncio.sleep(0.02)
    # The loser has read an idle row; the winner now rotates, and finishes, before the loser goes on.
    assert await by(winner) == "rotated"
    await asyncio.to_thread(world.sb.control.release, hold)
    refused = await asyncio.wait_for(late, timeout=60)

    assert len(made(world, customer)) == 1, "exactly one new credential"
    assert len(world.versions(customer)) == 1, "exactly one new Key Vault version"
    assert refused.startswith("409"), f"the {loser} path was not refused: {refused}"
    async with rotator() as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    assert_converged(world, customer, rotations=1, target=target)
