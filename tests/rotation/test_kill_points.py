"""Real kills (SIGKILL of `python -m shared rotate`) at every crash point inside finish and around every state
write, on a target's SECOND rotation with grace 24 h; then recovery by the timer.

At the held instant, right after the kill and after recovery: at least one `current` version, a live credential is
never `retired`, no credential a destination uses is removed, at most one rotation in flight. After recovery:
exactly one `current` (the new secret), the superseded version `previous`, every live rotator-made credential's
value in Key Vault, every destination on the current secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shared.domain import Stage
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.safety import (
    PORTAL_PATH,
    CrashPoint,
    Exited,
    Point,
    assert_converged,
    assert_safe_now,
    kill_at,
    made,
    proxied,  # noqa: F401 - a fixture
    recover,
    rotated_once,
    row,
    secret_path,
    tagged,
)

IDLE_ROW = r'"Stage": ?"idle"'


# The last destination (the portal) has the new secret and the rotator waits for its answer: finish comes next.
PUSHED = Point("portal", "POST", PORTAL_PATH + "$", "after")


def _versions(c: Customer) -> CrashPoint:
    return CrashPoint("before the versions are read",
                      (PUSHED, Point("keyvault", "GET", secret_path(c) + "/versions$", "before")))


def _tag_move(n: int, when: str) -> Callable[[Customer], CrashPoint]:
    return lambda c: CrashPoint(f"tag move {n + 1} {when}",
                                (PUSHED, Point("keyvault", "PATCH", secret_path(c) + "/[0-9a-f]+$", when, skip=n)))


def _state_write(when: str) -> Callable[[Customer], CrashPoint]:
    return lambda c: CrashPoint(f"state write {when}", (PUSHED, Point("tables", "PUT", row(c), when, body=IDLE_ROW)))


FINISH: dict[str, Callable[[Customer], CrashPoint]] = {
    "finish: before the versions are read": _versions,
    "finish: before tag move 1": _tag_move(0, "before"),
    "finish: after tag move 1 (Key Vault applied it, no answer)": _tag_move(0, "after"),
    "finish: before tag move 2": _tag_move(1, "before"),
    "finish: after tag move 2 (Key Vault applied it, no answer)": _tag_move(1, "after"),
    "finish: before the state write (idle)": _state_write("before"),
    "finish: after the state write (Azurite applied it, no answer)": _state_write("after"),
}


def second_rotation(customer: Customer) -> tuple[str, ...]:
    return ("rotate", customer.tenant_id, customer.app_id, "--force")


async def kill_and_recover(world: World, rotator: Rotator, name: str,
                           make: Callable[[Customer], CrashPoint]) -> None:
    """A second rotation killed at the point, then recovered; every check of the module docstring."""
    customer, first_key = await rotated_once(world, rotator, name)

    def observe() -> None:
        assert_safe_now(world, customer, rotated_before=True)

    await asyncio.to_thread(kill_at, world, make(customer), second_rotation(customer), observe)
    assert_safe_now(world, customer, rotated_before=True)
    async with rotator() as svc:
        killed, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    # A rotation that had recorded its reservation (or made its credential) must be completed by the timer; a manual
    # rotation killed before it reserved anything is gone (its caller saw the failure), and the timer has nothing
    # to do for a target that is not due.
    started = killed.state.stage is not Stage.IDLE or len(made(world, customer)) > 1
    target = await recover(world, rotator, customer)
    assert_converged(world, customer, rotations=2 if started else 1, target=target)
    live = {c["keyId"] for c in world.credentials(customer)}
    if not started:
        assert target.state.current_key_id == first_key and first_key in live
        return
    assert target.state.current_key_id != first_key, "the second rotation completed"
    (previous,) = tagged(world, customer, "previous")
    assert previous["tags"]["key-id"] == first_key, "the superseded version is `previous`"
    assert first_key in live and customer.key_id in live, "superseded credentials stay for the grace period (24 h)"


@pytest.mark.parametrize("point", list(FINISH), ids=list(FINISH))
async def test_a_kill_inside_finish_on_a_second_rotation(
    proxied: World, rotator: Rotator, point: str  # noqa: F811
) -> None:
    await kill_and_recover(proxied, rotator, "Finish", FINISH[point])


@pytest.mark.exhaustive
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_kill_around_every_state_write_of_a_second_rotation(
    proxied: World, rotator: Rotator, when: str  # noqa: F811
) -> None:
    """The n-th write of the target's row, n = 1, 2, ... until the rotation has no n-th write; held `when` Azurite
    applies it (after: applied, answer lost), then killed and recovered."""
    reached = 0
    for n in range(30):
        def point(c: Customer, n: int = n) -> CrashPoint:
            return CrashPoint(f"state write {n + 1} {when}", (Point("tables", "PUT", row(c), when, skip=n),))

        try:
            await kill_and_recover(proxied, rotator, f"Write{n}", point)
        except Exited as exited:
            assert exited.code == 0, str(exited)  # the rotation ended without an (n+1)-th write
            break
        reached += 1
    else:
        raise AssertionError("more than 30 writes of one row in one rotation")
    # Lease, reservation, Key Vault stored, verified, two acknowledgements, pushed, finished, lease released: the
    # exact count is the engine's business, but a rotation that records fewer than four steps is not crash-safe.
    assert reached >= 4, reached
    print(f"{reached} state writes of the row, each killed {when} Azurite applied it")
