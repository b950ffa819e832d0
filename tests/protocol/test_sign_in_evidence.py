"""Retirement on Entra's sign-in records, on the fakes (tests/fakes.py FakeSignInLog: every token issued for a
credential is a sign-in, the rotator's own probe included): the old key goes only once the new key signed in after
the push and the old one went quiet; an old key still used after the grace is kept and alerted once; a tenant that
refuses the read falls back to the destinations' proof and says so once; only targets with a key waiting are read;
a crash at any point of a retirement on evidence converges."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.cli import status_rows
from shared.domain import Actor, CredentialSignIns, Target
from shared.ports import Event
from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts, target_details
from shared.sign_in_proof import EVIDENCE_UNAVAILABLE, EVIDENCE_UNREADABLE, NEW_KEY_UNUSED, OLD_KEY_STILL_USED
from tests.fakes import WRITES, Crash, FakeWorld, rotation_error

NOT_LICENSED = ("Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                "Tenant does not have a valid Microsoft Entra ID P1 or P2 license")


def evidence_world(**config: object) -> tuple[FakeWorld, Target]:
    world = FakeWorld(evidence=True, **{"retire_grace": timedelta(0), **config})
    return world, world.seed(days_left=10)


async def rotate(world: FakeWorld, target: Target) -> str:
    """One timer advance that rotates; the key id the target started with."""
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    return old


async def timer(world: FakeWorld, target: Target) -> None:
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)


def live(world: FakeWorld, target: Target) -> set[str]:
    return set(world.live_values(target))


def events(world: FakeWorld, target: Target) -> list[Event]:
    return [e for e in world.state.events_ if (e.tenant_id, e.app_id) == (target.tenant_id, target.app_id)]


def retire_details(world: FakeWorld, target: Target) -> list[str]:
    return [e.detail for e in events(world, target) if e.step == "retire" and e.outcome == "superseded"]


async def test_retirement_waits_for_the_new_key_to_sign_in_and_never_counts_the_rotators_own_probe() -> None:
    world, target = evidence_world()
    old = await rotate(world, target)
    new = world.row(target).state.current_key_id
    # The verify probe signed in with the new key (Entra records it like any sign-in): not proof that anyone uses it.
    assert [r.key_id for r in world.sign_ins.records] == [new]
    assert old in live(world, target)
    doc = status_document(world.row(target))["signInEvidence"]
    assert doc["available"] is True and [c["keyId"] for c in doc["credentials"]] == [new]
    world.clock.advance(timedelta(hours=2))
    await timer(world, target)
    assert old in live(world, target), "no sign-in with the new key since the push"

    assert world.sync(target, "proofpoint")  # Proofpoint's scheduled sync: a sign-in with the new key
    synced_at = world.clock.now()
    world.clock.advance(timedelta(minutes=10))
    await timer(world, target)
    assert old not in live(world, target)
    assert world.converged(target) == []
    [detail] = retire_details(world, target)
    assert f"key {old}" in detail and f"new key {new} signed in at {synced_at.isoformat()}" in detail
    assert "quiet for 26 h" in detail
    assert not {OLD_KEY_STILL_USED, NEW_KEY_UNUSED, EVIDENCE_UNAVAILABLE} & set(world.alerter.conditions())


async def test_an_old_key_still_used_after_the_grace_is_kept_and_alerted_once_naming_the_client() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    old = await rotate(world, target)
    world.clock.advance(timedelta(minutes=30))
    assert world.sync(target, "proofpoint")
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55", resource="Office 365 Exchange Online")
    await timer(world, target)  # inside the grace: kept, no alarm
    assert old in live(world, target) and OLD_KEY_STILL_USED not in world.alerter.conditions()

    world.clock.advance(timedelta(hours=1))
    await timer(world, target)
    assert old in live(world, target)
    [alert] = [a for a in world.alerter.raised if a.condition == OLD_KEY_STILL_USED]
    assert old in alert.message and "192.0.2.55" in alert.message and "Office 365 Exchange Online" in alert.message
    row = world.row(target)
    assert row.observed.evidence_hold.startswith(f"{OLD_KEY_STILL_USED}: ")
    assert OLD_KEY_STILL_USED in open_alerts(row, StatusPolicy(), world.clock.now())
    shown = status_document(row)
    hold = shown["signInEvidence"]["hold"]
    assert hold == row.observed.evidence_hold and "192.0.2.55" in hold
    assert status_rows([shown])[0]["status"] == "healthy (needs human)"  # python -m shared status

    world.clock.advance(timedelta(hours=2))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")  # still at it
    await timer(world, target)
    assert old in live(world, target)
    assert [a.condition for a in world.alerter.raised].count(OLD_KEY_STILL_USED) == 1, "alerted on entering only"

    # The forgotten integration is fixed: a quiet period (26 h) plus the log's delay later the old key goes.
    world.clock.advance(timedelta(hours=26, minutes=6))
    await timer(world, target)
    assert old not in live(world, target) and world.converged(target) == []
    assert world.row(target).observed.evidence_hold == ""
    assert status_document(world.row(target))["signInEvidence"]["hold"] is None
    assert status_rows([status_document(world.row(target))])[0]["status"] == "healthy"
    assert OLD_KEY_STILL_USED in world.alerter.resolved_conditions()


async def test_a_new_key_nobody_uses_a_day_after_the_push_keeps_the_old_key_and_tells_a_human() -> None:
    world, target = evidence_world()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=23))
    await timer(world, target)
    assert NEW_KEY_UNUSED not in world.alerter.conditions()
    world.clock.advance(timedelta(hours=1))
    await timer(world, target)
    assert old in live(world, target) and NEW_KEY_UNUSED in world.alerter.conditions()
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    await timer(world, target)
    assert old not in live(world, target) and NEW_KEY_UNUSED in world.alerter.resolved_conditions()


async def test_a_tenant_that_refuses_the_read_falls_back_to_the_destinations_and_says_so_once() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    world.sign_ins.refusal = NOT_LICENSED
    world.destination.reports_sync.add("proofpoint")
    old = await rotate(world, target)
    doc = status_document(world.row(target))["signInEvidence"]
    assert doc["available"] is False and doc["code"] == NOT_LICENSED[0] and doc["reason"] == NOT_LICENSED[1]
    assert doc["credentials"] == [] and doc["readAt"] == world.clock.now().isoformat()
    world.clock.advance(timedelta(hours=2))
    await timer(world, target)
    assert old in live(world, target), "the fallback is today's rule: Proofpoint's own sync after the push"
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=1))
    await timer(world, target)
    assert old not in live(world, target) and world.converged(target) == []
    assert [a.condition for a in world.alerter.raised].count(EVIDENCE_UNAVAILABLE) == 1
    [detail] = retire_details(world, target)
    assert f"no sign-in evidence: the tenant refuses the sign-in log ({NOT_LICENSED[0]})" in detail
    assert "proofpoint sync at" in detail


async def test_only_targets_with_a_superseded_key_waiting_read_the_log() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    healthy = world.seed(days_left=100)
    await world.engine().run_pass()
    assert len(world.sign_ins.reads) == 1, "the rotated target's retirement only; the healthy one reads nothing"
    world.clock.advance(timedelta(hours=2))
    world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    await world.engine().run_pass()
    assert len(world.sign_ins.reads) == 2
    assert len(world.directory.live(target.tenant_id, target.app_id)) == 1
    await world.engine().run_pass()
    await world.engine().run_pass()
    assert len(world.sign_ins.reads) == 2, "nothing waits any more"
    assert world.row(healthy).observed.sign_ins is None


async def test_a_failed_read_keeps_the_old_key_until_a_read_succeeds() -> None:
    world, target = evidence_world()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=1))
    world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    world.faults.add("sign_ins.read", rotation_error("TooManyRequests"),
                     nth=world.faults.counts["sign_ins.read"] + 1)
    await timer(world, target)
    assert old in live(world, target)
    assert any(e.step == "sign-ins" and e.outcome == "unreadable" for e in events(world, target))
    await timer(world, target)
    assert old not in live(world, target) and world.converged(target) == []


async def test_the_details_show_each_credentials_sign_ins() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    old = await rotate(world, target)
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    await timer(world, target)
    doc = await target_details(world.state, world.directory, world.secrets, target.tenant_id, target.app_id,
                               StatusPolicy(), world.clock.now())
    by_key = {c["keyId"]: c for c in doc["entra"]["credentials"]}
    assert by_key[old]["lastSignIn"] == world.clock.now().isoformat() and by_key[old]["lastSignInIp"] == "192.0.2.55"
    new = world.row(target).state.current_key_id
    # The new key's only sign-in is the rotator's own verify probe (known by its request id): shown, and said to be
    # the probe; no address is given as if someone had used the key from there.
    assert by_key[new]["firstSignIn"] is not None and by_key[new]["lastSignIn"] == by_key[new]["firstSignIn"]
    assert by_key[new]["lastSignInIp"] is None
    assert world.probe.request_ids[-1] == world.row(target).state.probes[new]
    assert by_key[new]["firstSignInBy"] == "rotator-probe" and by_key[old]["firstSignInBy"] is None
    # Proofpoint's sync signs in with it after the push: its first sign-in is still the probe (earlier), labelled so;
    # a key whose first logged sign-in is after the push plus the margin is not.
    world.clock.advance(timedelta(hours=2))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    await timer(world, target)
    doc = await target_details(world.state, world.directory, world.secrets, target.tenant_id, target.app_id,
                               StatusPolicy(), world.clock.now())
    by_key = {c["keyId"]: c for c in doc["entra"]["credentials"]}
    assert by_key[new]["firstSignInBy"] == "rotator-probe" and by_key[new]["lastSignIn"] != by_key[new]["firstSignIn"]
    pushed = min(a.at for a in world.row(target).state.acks.values() if a.key_id == new)
    row = world.row(target)
    assert row.observed.sign_ins is not None
    later = CredentialSignIns(new, pushed + timedelta(minutes=6), pushed + timedelta(hours=2))
    moved = replace(row.observed.sign_ins, credentials={**row.observed.sign_ins.credentials, new: later})
    world.state._write(row.with_observed(sign_ins=moved))
    doc = await target_details(world.state, world.directory, world.secrets, target.tenant_id, target.app_id,
                               StatusPolicy(), world.clock.now())
    assert {c["keyId"]: c for c in doc["entra"]["credentials"]}[new]["firstSignInBy"] is None


# ------------------------------------------------------------------------------------------ crash safety

async def _waiting(world: FakeWorld, old_still_used: bool) -> tuple[Target, str]:
    """A target whose grace is over and whose new key signed in: the next advance retires (or alerts)."""
    target = world.seed(days_left=10)
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=2))
    world.sync(target, "proofpoint")
    if old_still_used:
        world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    world.clock.advance(timedelta(minutes=10))
    return target, old


def _points() -> list[tuple[bool, str, int, str]]:
    import asyncio

    async def calls(used: bool) -> list[str]:
        world = FakeWorld(evidence=True, retire_grace=timedelta(hours=1))
        target, _ = await _waiting(world, used)
        start = len(world.faults.log)
        await timer(world, target)
        return world.faults.log[start:]

    points = []
    for used in (False, True):
        seen: dict[str, int] = {}
        for call in asyncio.run(calls(used)):
            seen[call] = seen.get(call, 0) + 1
            for when in ("before", "after") if call.startswith(WRITES) else ("before",):
                points.append((used, call, seen[call], when))
    return points


@pytest.mark.parametrize(("used", "call", "nth", "when"), _points(),
                         ids=lambda v: str(v))
async def test_a_crash_anywhere_in_a_retirement_on_evidence_converges(used: bool, call: str, nth: int,
                                                                     when: str) -> None:
    world = FakeWorld(evidence=True, retire_grace=timedelta(hours=1))
    target, old = await _waiting(world, used)
    world.faults.crash(call, when=when, nth=world.faults.counts[call] + nth)  # the nth call of this advance
    with pytest.raises(Crash):
        await timer(world, target)
    world.restart()
    await timer(world, target)
    assert world.violations == []
    if used:
        assert old in live(world, target), "a key still signing in is never removed"
        assert OLD_KEY_STILL_USED in world.alerter.conditions()
        assert world.row(target).observed.evidence_hold.startswith(OLD_KEY_STILL_USED)
    else:
        assert old not in live(world, target) and world.converged(target) == []


async def test_a_key_last_seen_in_use_stays_while_the_log_is_refused_and_goes_once_a_readable_log_shows_it_quiet() -> (
        None):
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    world.destination.reports_sync.add("proofpoint")
    old = await rotate(world, target)
    world.clock.advance(timedelta(minutes=30))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(hours=1))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    await timer(world, target)
    hold = world.row(target).observed.evidence_hold
    assert hold.startswith(f"{OLD_KEY_STILL_USED}: ")
    # The tenant refuses the log for days: the key stays, the hold (and its open alert) with it.
    world.sign_ins.refusal = NOT_LICENSED
    for _ in range(3):
        world.clock.advance(timedelta(days=1))
        await timer(world, target)
        assert old in live(world, target)
        assert world.row(target).observed.evidence_hold == hold
        assert OLD_KEY_STILL_USED in open_alerts(world.row(target), StatusPolicy(), world.clock.now())
    # The log is readable again and shows the key quiet for the quiet period: it goes, the hold clears.
    world.sign_ins.refusal = None
    await timer(world, target)
    assert old not in live(world, target) and world.row(target).observed.evidence_hold == ""


async def test_a_read_that_fails_for_about_a_day_raises_a_resolvable_condition_that_clears_when_it_answers() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=1))
    world.sync(target, "proofpoint")
    failing = world.faults.counts["sign_ins.read"] + 1
    world.faults.add("sign_ins.read", rotation_error("TooManyRequests"), nth=failing, times=3)
    # The first failures (the first pass, a retry an hour later): kept, recorded, nobody alarmed yet.
    await timer(world, target)
    world.clock.advance(timedelta(hours=1))
    await timer(world, target)
    assert old in live(world, target) and EVIDENCE_UNREADABLE not in world.alerter.conditions()
    assert EVIDENCE_UNREADABLE not in open_alerts(world.row(target), StatusPolicy(), world.clock.now())
    # Still failing at the next daily pass: a human is told, the status shows it.
    world.clock.advance(timedelta(days=1))
    await timer(world, target)
    assert old in live(world, target)
    [alert] = [a for a in world.alerter.raised if a.condition == EVIDENCE_UNREADABLE]
    assert old in alert.message and "TooManyRequests" in alert.message
    assert EVIDENCE_UNREADABLE in open_alerts(world.row(target), StatusPolicy(), world.clock.now())
    # The log answers again: the condition resolves and the retirement goes on by the evidence.
    world.clock.advance(timedelta(days=1))
    await timer(world, target)
    assert EVIDENCE_UNREADABLE in world.alerter.resolved_conditions()
    assert world.row(target).observed.sign_ins_unreadable_since is None
    assert EVIDENCE_UNREADABLE not in open_alerts(world.row(target), StatusPolicy(), world.clock.now())
