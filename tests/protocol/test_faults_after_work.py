"""Faults that strike after the work: the service did it (credential made, version written, destination updated,
tag moved) and then answered an error or dropped the connection. The next advances converge on the fakes, with
one new credential and one new Key Vault version; Graph's addPassword is never retried blindly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import Actor, Stage
from shared.errors import Ambiguous, RotationError, Throttled
from tests.fakes import FakeWorld
from tests.protocol.test_crash_points import calls_of

WRITE_CALLS = sorted({c for c in __import__("asyncio").run(calls_of("second within grace"))
                      if c.split(".")[0] in ("directory", "secrets", "destination") and c not in (
                          "directory.get_application", "secrets.versions", "secrets.value",
                          "secrets.find_by_rotation")})


def dropped() -> RotationError:
    return Ambiguous("the connection was dropped after the request was sent", code="NetworkError")


def server_error() -> RotationError:
    return Ambiguous("the service answered 500 after doing the work", code="InternalServerError")


async def rotated_once_then_due_again(world: FakeWorld):  # type: ignore[no-untyped-def]
    target = world.seed(days_left=10)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    world.clock.advance(timedelta(hours=2))
    return target


@pytest.mark.parametrize("error", [dropped, server_error], ids=["dropped", "500"])
@pytest.mark.parametrize("call", WRITE_CALLS)
async def test_a_fault_after_the_work_converges(call: str, error) -> None:  # type: ignore[no-untyped-def]
    world = FakeWorld()
    target = await rotated_once_then_due_again(world)
    versions = len(world.secrets.of(target))
    world.faults.add(call, error, when="after", nth=world.faults.counts[call] + 1)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=True)
    for _ in range(3):
        if not world.converged(target):
            break
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.converged(target) == []
    assert len(world.secrets.of(target)) == versions + 1, "one new Key Vault version"
    assert world.faults.counts["directory.add_password"] <= 2 + 1


async def test_add_password_is_not_retried_after_an_ambiguous_answer() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("directory.add_password", server_error, when="after")
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "failed" and world.row(target).state.stage is Stage.CREATING
    assert world.faults.counts["directory.add_password"] == 1
    # The next advance finds the credential by its rotation id; its value is lost: removed, and a new rotation.
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    assert len(world.directory.removed) == 1 and world.converged(target) == []


async def test_throttled_add_password_is_retried_and_makes_one_credential() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("directory.add_password",
                     lambda: Throttled("busy", code="Directory_ConcurrencyViolation", retry_after=1), times=2)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    assert world.faults.counts["directory.add_password"] == 3 and world.directory.removed == []


async def test_a_key_vault_write_that_took_effect_is_adopted_not_written_again() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("secrets.store_pending", server_error, when="after")
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    assert world.faults.counts["secrets.store_pending"] == 1 and len(world.secrets.of(target)) == 1
    assert world.directory.removed == [] and world.converged(target) == []


async def test_key_vault_failing_before_the_work_compensates() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    old = world.live_values(target)
    world.faults.add("secrets.store_pending", server_error, times=99)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "failed" and world.row(target).state.stage is Stage.IDLE
    assert world.live_values(target) == old, "the new credential was removed; the old one untouched"
    assert "rotation-failed" in world.alerter.conditions()


async def test_when_key_vault_cannot_tell_the_credential_is_kept_until_it_can() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("secrets.store_pending", server_error, when="after")
    world.faults.add("secrets.find_by_rotation", server_error)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "failed" and world.row(target).state.stage is Stage.CREATING
    assert world.directory.removed == [], "no compensation while a stored version may exist"
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    assert len(world.secrets.of(target)) == 1 and world.converged(target) == []
