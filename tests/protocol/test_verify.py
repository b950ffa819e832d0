"""The verify step on the fakes: only "not propagated yet" (AADSTS7000215) is waited out, and only until
VERIFY_TIMEOUT after the value was stored; every other refusal ends the attempt at once (one token request) needing
a human, with the AADSTS code on the row and a `verify-refused` alert; the new credential stays in Entra ID and in Key
Vault as `pending`, nothing is pushed, the old secret is untouched; the next pass asks once and goes on when fixed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import Actor, Stage, Target, TokenRefusal, VersionStage
from shared.errors import RotationError
from shared.protocol.verify import VERIFY_REFUSED, VERIFY_TIMEOUT
from tests.fakes import Crash, FakeWorld

# Every refusal Entra can give a secret the rotator just made that waiting does not cure (Microsoft's AADSTS
# reference, MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md).
REFUSALS = {
    "AADSTS7000112": "Application 'x'(Proofpoint) is disabled.",
    "AADSTS53003": "Access has been blocked by Conditional Access policies.",
    "AADSTS700016": "Application with identifier 'x' was not found in the directory 'Contoso'.",
    "AADSTS7000222": "The provided client secret keys for app 'x' are expired.",
    "AADSTS90002": "Tenant 'x' not found.",
    "AADSTS7000218": "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    "AADSTS50034": "The user account does not exist in the directory.",
    "AADSTS999999": "A code nobody documented.",
}


def refuse(world: FakeWorld, target: Target, code: str) -> None:
    world.probe.refusals[(target.tenant_id, target.app_id)] = TokenRefusal(code, f"{code}: {REFUSALS[code]}")


async def advance(world: FakeWorld, target: Target, actor: Actor = Actor.TIMER) -> str:
    return (await world.engine().advance(target.tenant_id, target.app_id, actor)).result


def assert_held_pending(world: FakeWorld, target: Target, old_values: dict[str, str]) -> None:
    """The rotation waits for a human: the new credential live in Entra ID with its value in Key Vault as `pending`,
    nothing pushed, the old credential and its value untouched."""
    row = world.row(target)
    assert row.state.stage is Stage.PENDING
    (pending,) = world.secrets.staged(target, VersionStage.PENDING)
    assert world.live_values(target)[row.state.new_key_id] == pending.value
    for key_id, value in old_values.items():
        assert world.live_values(target)[key_id] == value
    assert set(world.destination.held.values()) == set(old_values.values())
    assert world.faults.counts.get("destination.proofpoint", 0) == 0


@pytest.mark.parametrize("code", sorted(REFUSALS))
async def test_a_refusal_other_than_propagation_ends_at_once_needing_a_human(code: str) -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=5))
    target = world.seed(days_left=10)
    old = world.live_values(target)
    refuse(world, target, code)
    before = world.clock.now()
    assert await advance(world, target) == "unverified"
    assert world.faults.counts["probe.try_token"] == 1, "one token request, not a loop"
    assert world.clock.now() == before, "no wait"
    assert_held_pending(world, target, old)
    row = world.row(target)
    assert row.observed.error_code == code
    assert row.observed.needs_human.startswith(f"{VERIFY_REFUSED}: Entra ID refused the new secret: {code}")
    (alert,) = [a for a in world.alerter.raised if a.condition == VERIFY_REFUSED]
    assert alert.details["error_code"] == code and REFUSALS[code] in alert.message
    assert alert.details["rotation_id"] == row.state.rotation_id and alert.details["key_id"] == row.state.new_key_id
    pending_value = world.secrets.staged(target, VersionStage.PENDING)[0].value
    assert pending_value not in alert.message and pending_value not in repr(alert.details)
    assert pending_value not in repr(row) and all(pending_value not in repr(e) for e in world.state.events_)
    steps = [(e.step, e.outcome, e.error_code) for e in world.state.events_ if e.step == "verify"]
    assert steps == [("verify", VERIFY_REFUSED, code)]


async def test_a_held_rotation_asks_once_per_pass_and_goes_on_once_the_cause_is_fixed() -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=5))
    target = world.seed(days_left=10)
    refuse(world, target, "AADSTS7000112")
    assert await advance(world, target) == "unverified"
    for n in (2, 3):  # the resume timer, still disabled: one token request each, the alert again, nothing else
        world.clock.advance(timedelta(minutes=15))
        assert (await world.engine().resume_pass()).by_result == {"unverified": 1}
        assert world.faults.counts["probe.try_token"] == n
        assert [a.condition for a in world.alerter.raised].count(VERIFY_REFUSED) == n
    assert world.faults.counts["directory.add_password"] == 1, "no second credential"
    del world.probe.refusals[(target.tenant_id, target.app_id)]  # an admin enabled the app again
    world.clock.advance(timedelta(minutes=15))
    assert (await world.engine().resume_pass()).by_result == {"rotated": 1}
    assert world.converged(target) == []
    row = world.row(target)
    assert (row.observed.needs_human, row.observed.error_code, row.observed.error_message) == ("", "", "")


async def test_propagation_is_waited_out_within_the_bound() -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=2))
    target = world.seed(days_left=10)
    world.directory.propagation = timedelta(seconds=40)
    assert await advance(world, target) == "rotated"
    assert world.faults.counts["probe.try_token"] > 1
    assert world.converged(target) == [] and not world.alerter.raised


async def test_propagation_past_the_bound_ends_needing_a_human_and_a_later_pass_finishes_it() -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=2))
    target = world.seed(days_left=10)
    old = world.live_values(target)
    world.directory.propagation = timedelta(minutes=30)
    started = world.clock.now()
    assert await advance(world, target) == "unverified"
    waited = world.clock.now() - started
    assert timedelta(minutes=2) <= waited < timedelta(minutes=2, seconds=11), waited
    asked = world.faults.counts["probe.try_token"]
    assert 3 <= asked <= 20, asked
    assert_held_pending(world, target, old)
    row = world.row(target)
    assert row.observed.error_code == "AADSTS7000215" and row.observed.needs_human.startswith(VERIFY_TIMEOUT)
    assert [a.condition for a in world.alerter.raised] == [VERIFY_TIMEOUT]
    world.clock.advance(timedelta(minutes=15))  # still not working: one request, no second wait
    before = world.clock.now()
    assert (await world.engine().resume_pass()).by_result == {"unverified": 1}
    assert world.faults.counts["probe.try_token"] == asked + 1 and world.clock.now() == before
    world.clock.advance(timedelta(minutes=15))  # 32 minutes after: it works
    assert (await world.engine().resume_pass()).by_result == {"rotated": 1}
    assert world.converged(target) == [] and world.row(target).observed.needs_human == ""


async def test_a_token_endpoint_outage_is_no_verdict_on_the_secret() -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=2))
    target = world.seed(days_left=10)
    world.faults.add("probe.try_token", lambda: RotationError("down", code="TokenEndpointUnavailable"), times=1000)
    assert await advance(world, target) == "failed"
    row = world.row(target)
    assert row.state.stage is Stage.PENDING and row.observed.needs_human == ""
    assert not [a for a in world.alerter.raised if a.condition.startswith("verify-")]
    world.faults.rules.clear()
    world.clock.advance(timedelta(minutes=15))
    assert (await world.engine().resume_pass()).by_result == {"rotated": 1}
    assert world.converged(target) == []


@pytest.mark.parametrize(("call", "when"), [
    ("probe.try_token", "before"), ("state.record", "before"), ("state.record", "after"),
    ("state.replace_target", "before"), ("state.replace_target", "after"),
])
async def test_a_crash_while_a_refusal_is_recorded_is_recorded_again_on_the_next_pass(call: str, when: str) -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=5))
    target = world.seed(days_left=10)
    old = world.live_values(target)
    refuse(world, target, "AADSTS53003")
    # The rotation is taken to `pending` first; the crash then hits the verify step's own calls.
    world.faults.crash("probe.try_token")
    with pytest.raises(Crash):
        await advance(world, target)
    engine = world.restart()
    world.faults.crash(call, when=when, nth=world.faults.counts.get(call, 0) + 1)
    with pytest.raises(Crash):
        await engine.advance(target.tenant_id, target.app_id, Actor.TIMER)
    engine = world.restart()
    assert (await engine.advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "unverified"
    assert_held_pending(world, target, old)
    assert world.row(target).observed.error_code == "AADSTS53003"
    assert world.violations == []
    del world.probe.refusals[(target.tenant_id, target.app_id)]
    world.restart()
    assert (await world.engine().resume_pass()).by_result == {"rotated": 1}
    assert world.converged(target) == []
