"""Change control with every adapter real (Graph, Key Vault, Proofpoint in the sandbox; Tables and the alert book
on Azurite): a due target in window mode waits outside its window and rotates inside it; in approval mode it waits,
a postponement waits until its date and then asks again, a rejection never rotates and is audited, the force day
rotates it with rotation-forced; never-force is told once a day by the real alert book."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from shared.alerts import LogAlerter
from shared.approvals import decide_request
from shared.change_control import ApprovalStatus, ChangeControl, Mode, Window
from shared.domain import Policy
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import destinations

EVERY_DAY = frozenset(range(7))


async def registered(world: World, rotator: Rotator, name: str, days_left: int, control: ChangeControl) -> Customer:
    world.seed_accounts()
    c = world.seed_customer(name, days_left)
    async with rotator() as svc:
        await svc.state.create_target(replace(c.target(destinations(world, c)),
                                              policy=Policy(change_control=control)))
    return c


def hours_ahead(start: float, length: float = 1.0) -> tuple[Window, ...]:
    """A daily window in UTC opening `start` hours from now (whole minutes)."""
    opens = (datetime.now(UTC) + timedelta(hours=start)).replace(second=0, microsecond=0)
    closes = opens + timedelta(hours=length)
    return (Window(EVERY_DAY, time(opens.hour, opens.minute), time(closes.hour, closes.minute)),)


async def test_window_mode_waits_outside_its_window_and_rotates_inside(world: World, rotator: Rotator) -> None:
    c = await registered(world, rotator, "Windowed", 12, ChangeControl(Mode.WINDOW, "UTC", hours_ahead(3)))
    async with rotator() as svc:
        waiting = await svc.engine.run_pass()
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert [o.result for o in waiting.outcomes] == ["due"]
    assert len(world.credentials(c)) == 1 and world.versions(c) == [], "nothing made outside the window"
    assert target.observed.waiting == "window" and target.observed.waiting_until is not None
    offset = target.observed.waiting_until - datetime.now(UTC) + timedelta(minutes=2)
    async with rotator(offset) as svc:
        resumed = await svc.engine.resume_pass()
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        events = await svc.state.events(c.tenant_id, c.app_id, 100)
    assert [o.result for o in resumed.outcomes] == ["rotated"]
    assert target.observed.waiting == "" and target.state.current_key_id
    assert any(e.step == "reserve" and "inside a maintenance window" in e.detail for e in events)
    assert any(e.step == "change-control" and e.outcome == "waiting-window" for e in events)


async def test_approval_postponed_then_asked_again_then_rejected_never_rotates(world: World, rotator: Rotator) -> None:
    c = await registered(world, rotator, "Cautious", 20, ChangeControl(Mode.APPROVAL, "Europe/Berlin"))
    async with rotator() as svc:
        await svc.engine.run_pass()
        first = await svc.approvals.get(c.tenant_id, c.app_id)  # type: ignore[union-attr]
        assert first is not None and first[0].status is ApprovalStatus.PENDING
        now = svc.engine.clock.now()
        await decide_request(svc.approvals, svc.state, c.tenant_id, c.app_id,  # type: ignore[arg-type]
                             first[0].request_id, "postpone", actor="manual:ann@msp.example", now=now,
                             until=(now + timedelta(days=2)).isoformat())
        await svc.engine.resume_pass()  # reads the decision: waits until the date
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert target.observed.approval_status == "postponed" and target.observed.waiting == "approval"
    async with rotator(timedelta(days=2, minutes=1)) as svc:
        await svc.engine.resume_pass()
        second = await svc.approvals.get(c.tenant_id, c.app_id)  # type: ignore[union-attr]
        assert second is not None and second[0].request_id != first[0].request_id
        assert second[0].status is ApprovalStatus.PENDING
        await decide_request(svc.approvals, svc.state, c.tenant_id, c.app_id,  # type: ignore[arg-type]
                             second[0].request_id, "reject", actor="manual:bob@msp.example",
                             now=svc.engine.clock.now(), reason="customer freeze")
        await svc.engine.resume_pass()
    for day in range(3, 6):
        async with rotator(timedelta(days=day)) as svc:
            await svc.engine.run_pass()
    async with rotator(timedelta(days=6)) as svc:
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        events = await svc.state.events(c.tenant_id, c.app_id, 200)
    assert len(world.credentials(c)) == 1 and world.versions(c) == [], "never rotated"
    assert target.observed.approval_status == "rejected"
    decided = [(e.outcome, e.actor) for e in events if e.step == "approval" and e.outcome != "requested"]
    assert ("rejected", "manual:bob@msp.example") in decided and ("postponed", "manual:ann@msp.example") in decided


async def test_the_force_day_rotates_with_an_alert_saying_so(world: World, rotator: Rotator) -> None:
    c = await registered(world, rotator, "Forced", 12, ChangeControl(Mode.APPROVAL, "UTC",
                                                                       force_days_before_expiry=10))
    async with rotator() as svc:
        await svc.engine.run_pass()
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert target.observed.waiting == "approval" and world.versions(c) == []
    alerter = LogAlerter()
    async with rotator(timedelta(days=2, hours=1), alerter=alerter) as svc:
        resumed = await svc.engine.resume_pass()  # the force day has come: the resume pass takes it
        assert await svc.approvals.get(c.tenant_id, c.app_id) is None  # type: ignore[union-attr]
    assert [o.result for o in resumed.outcomes] == ["rotated"]
    forced = [a for a in alerter.raised if a.condition == "rotation-forced"]
    assert len(forced) == 1 and "no approval" not in forced[0].message
    assert "the approval is still pending" in forced[0].message and "10 days before expiry" in forced[0].message


async def test_never_force_is_told_once_a_day_by_the_alert_book(world: World, rotator: Rotator,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    noon = (Window(EVERY_DAY, time(12, 0), time(13, 0)),)  # UTC; the passes below run in the small hours
    c = await registered(world, rotator, "Stubborn", 3, ChangeControl(Mode.WINDOW, "UTC", noon, never_force=True))
    caplog.set_level(logging.WARNING, logger="shared.alerts.book")
    now = datetime.now(UTC)
    tomorrow = datetime(now.year, now.month, now.day, 1, 0, tzinfo=UTC) + timedelta(days=1)
    for hours in (0, 1, 2, 25):  # three passes on one UTC day, one on the next
        async with rotator(tomorrow - now + timedelta(hours=hours)) as svc:
            assert svc.alerts is not None
            svc.engine.ports = replace(svc.engine.ports, alerter=svc.alerts)  # the real book, as deployed
            await svc.engine.run_pass()
    told = [r for r in caplog.records if getattr(r, "condition", "") == "change-control-blocking-expiry"
            and getattr(r, "event", "") == "alert"]
    assert len(told) == 2, "once on each day"
    assert world.versions(c) == [] and len(world.credentials(c)) == 1


async def test_the_command_line_lists_and_decides_requests(world: World, rotator: Rotator) -> None:
    import json

    c = await registered(world, rotator, "Console", 20, ChangeControl(Mode.APPROVAL, "UTC"))
    run = world.cli("run")
    assert run.wait(timeout=120) == 0, run.output()
    listing = world.cli("approvals", "list", "--status", "pending", "--json")
    assert listing.wait(timeout=60) == 0, listing.output()
    (request,) = json.loads(listing.output())
    assert request["tenantId"] == c.tenant_id and request["status"] == "pending"
    decide = world.cli("approvals", "decide", c.tenant_id, c.app_id, request["requestId"], "reject",
                       "--reason", "year-end freeze", "--as", "carol@msp.example")
    assert decide.wait(timeout=120) == 0, decide.output()
    assert '"decidedBy": "manual:carol@msp.example"' in decide.output()
    again = world.cli("approvals", "decide", c.tenant_id, c.app_id, request["requestId"], "approve")
    assert again.wait(timeout=120) == 2 and "NotPending" in again.output()
    late = world.cli("approvals", "decide", c.tenant_id, c.app_id, request["requestId"], "postpone")
    assert late.wait(timeout=120) == 2 and "InvalidUntil" in late.output()
    async with rotator() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id, 100)
    assert any(e.step == "approval" and e.outcome == "rejected" and "command line" in e.detail for e in events)
    assert world.versions(c) == []
