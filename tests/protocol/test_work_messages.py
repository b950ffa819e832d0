"""What a work message may do (shared.fanout.work_on, on the in-memory fakes): never start a rotation, whatever its
reason; advance only what the row already decided; and what a failed audit write means (shared.work.parse_work
holds a message to its format first: tests/fanout/test_fanout.py)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from shared.domain import Actor, Stage, Target
from shared.fanout import work_on
from shared.ports import Work, WorkReason
from shared.work import MalformedWork, parse_work, work_message
from tests.fakes import FakeWorld, rotation_error

GUID_A = "5a1d0000-0000-4000-8000-00000000000a"
GUID_B = "5a1d0000-0000-4000-8000-00000000000b"


class ListQueue:
    """The work queue as a list: what a worker sends (a busy target looked at again later)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Work, int]] = []

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        self.sent.append((work, delay_seconds))


def added(world: FakeWorld) -> int:
    return world.faults.counts["directory.add_password"]


# --------------------------------------------------------------------------------------- the format (plain data)


@pytest.mark.parametrize("reason", list(WorkReason))
@pytest.mark.parametrize("actor", ["timer", "event", "manual", "manual:alice@msp.example",
                                   f"manual:app:{GUID_A}", "manual:J\u00fcrgen M\u00fcller", "manual:" + "a" * 256])
def test_what_work_message_writes_is_read_back(reason: WorkReason, actor: str) -> None:
    work = Work(GUID_A, GUID_B, actor, reason)
    assert parse_work(work_message(work)) == work
    upper = json.loads(work_message(work)) | {"tenantId": GUID_A.upper()}
    assert parse_work(json.dumps(upper)).tenant_id == GUID_A  # ids as the registry keys them


def doc(**changes: object) -> str:
    base: dict[str, object] = {"v": 1, "tenantId": GUID_A, "appId": GUID_B, "actor": "timer", "reason": "due"}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("text", [
    # ids that are not GUIDs
    doc(tenantId="contoso"), doc(appId=GUID_B + "\n"), doc(tenantId="{" + GUID_A + "}"), doc(appId=GUID_B[:-1]),
    doc(tenantId=""), doc(appId=1), doc(tenantId=None), doc(appId=GUID_B.replace("-", "")),
    doc(tenantId=GUID_A + "/../x"), doc(appId="\uff15" + GUID_B[1:]),
    # reasons nobody sends
    doc(reason="rotate"), doc(reason="DUE"), doc(reason="due "), doc(reason=""), doc(reason="force"), doc(reason=1),
    doc(reason=["due"]), doc(reason="retire\n"),
    # actors that are not audit actors
    doc(actor="manual:" + "a" * 40_000), doc(actor="manual:" + "a" * 257), doc(actor="manual:a\nb"),
    doc(actor="manual: alice"), doc(actor="manual:alice "), doc(actor="manual:"), doc(actor="admin"),
    doc(actor="root:alice"), doc(actor=""), doc(actor="Timer"), doc(actor="timer\u200b"), doc(actor="manual:a\u200bb"),
    doc(actor="manual:a\u2028b"), doc(actor="manual:\x1b[31mred"), doc(actor=5), doc(actor=None),
    # not the format
    doc(v=2), doc(v=True), doc(v="1"), doc(v=1.0), doc(v=...), doc(reason=...), doc(extra="x"), "[]", "null",
    "not json", '{"v": 1, "v": 1}', "[" * 100_000,
])
def test_a_message_that_is_not_exactly_a_work_item_is_refused(text: str) -> None:
    with pytest.raises(MalformedWork) as refused:
        parse_work(text)
    assert "aaaa" not in str(refused.value) and len(str(refused.value)) < 200  # never echoes what it refuses


# --------------------------------------------------------------------------------------- what a message may do


@pytest.mark.parametrize("reason", list(WorkReason))
async def test_no_message_starts_a_rotation_of_an_idle_due_target(reason: WorkReason) -> None:
    """Due, idle, unreserved: whatever the message says, nothing is created, reserved or pushed."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    before = world.row(target)
    queue = ListQueue()
    result = await work_on(world.engine(), queue, Work(target.tenant_id, target.app_id, "timer", reason))
    assert result.result == "skipped", result
    assert added(world) == 0 and world.secrets.of(target) == [] and world.destination.deliveries == []
    assert world.row(target).state == before.state and queue.sent == []


async def rotated_long_ago(world: FakeWorld, days: int) -> Target:
    """A target rotated once, `days` ago: its old credential superseded, its grace long over."""
    target = world.seed(days_left=10)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    world.clock.advance(timedelta(days=days))
    return target


async def test_a_retire_message_retires_and_never_reserves_even_when_the_target_is_due_again() -> None:
    world = FakeWorld()
    target = await rotated_long_ago(world, 160)  # 180-day secret, renewed 30 days before: due again
    superseded = world.row(target).state.superseded
    assert superseded and added(world) == 1
    result = await work_on(world.engine(), ListQueue(), Work(target.tenant_id, target.app_id, "timer",
                                                             WorkReason.RETIRE))
    assert result.result == "due", result  # what the assessment saw, recorded; nothing reserved
    row = world.row(target)
    assert row.state.stage is Stage.IDLE and not row.state.rotation_id and row.state.superseded == ()
    assert added(world) == 1, "no new credential"
    assert not set(superseded) & set(world.live_values(target))
    assert world.converged(target) == []
    # A second copy of the message finds nothing due: it does nothing.
    again = await work_on(world.engine(), ListQueue(), Work(target.tenant_id, target.app_id, "timer",
                                                            WorkReason.RETIRE))
    assert again.result == "skipped" and added(world) == 1


@pytest.mark.parametrize("reason", list(WorkReason))
async def test_any_message_advances_a_rotation_already_reserved(reason: WorkReason) -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    reserved = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER, reserve_only=True)
    assert reserved.result == "reserved" and added(world) == 0
    result = await work_on(world.engine(), ListQueue(), Work(target.tenant_id, target.app_id, "timer", reason))
    assert result.result == "rotated" and added(world) == 1 and world.converged(target) == []


# --------------------------------------------------------------------------------------- a failed audit write


async def test_a_rotation_on_the_fakes_writes_seven_audit_records() -> None:
    """What the next test strikes, one record at a time (so a new step's record is covered too)."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    assert [(e.step, e.outcome) for e in world.state.events_] == [
        ("reserve", "ok"), ("create", "ok"), ("store", "ok"), ("verify", "ok"), ("push:proofpoint", "ok"),
        ("push:portal", "ok"), ("finish", "ok")]


@pytest.mark.parametrize("nth", range(1, 8))
async def test_a_step_whose_audit_record_cannot_be_written_stops_tells_and_is_finished_later(
    nth: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit trail never silently loses a step: the event is logged whole at ERROR, a human is alerted, and the
    rotation stops there (as after a crash at that point) and is finished by the next run, with its audit rows. The
    one exception is the record between addPassword and the Key Vault write: stopping there would leave a live
    credential whose value nobody holds, so the value is stored first."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("state.record", rotation_error("OutOfRangeInput"), nth=nth)
    with caplog.at_level(logging.ERROR):
        result = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    [unwritten] = [r for r in caplog.records if getattr(r, "event", "") == "audit-unwritten"]
    told = unwritten.__dict__
    assert unwritten.levelno == logging.ERROR and told["actor"] == "timer" and told["at"]
    assert told["step"] and told["outcome"] and told["audit_error_code"] == "OutOfRangeInput"
    assert world.alerter.conditions().count("audit-unwritten") == 1
    if (told["step"], told["outcome"]) == ("create", "ok"):
        assert result.result == "rotated", result
        assert world.faults.counts["secrets.store_pending"] == 1
    else:
        assert (result.result, result.error_code) == ("failed", "AuditWriteFailed"), (told["step"], result)
        assert world.faults.counts["state.record"] == nth, "nothing recorded after the stop"
    assert world.violations == []
    finished = await world.restart().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert finished.result in ("rotated", "healthy"), finished
    assert world.converged(target) == [] and world.row(target).state.stage is Stage.IDLE
    assert added(world) == 1, "one rotation, one credential"
