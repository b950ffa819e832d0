"""Change control over HTTP against the real adapters (sandbox + Azurite): the policy's validation through the
target API, the approvals API (roles, bad input, 409 on a stale or decided request), an approval that reserves,
queues and then rotates, the status fields the dashboard reads, and no secret in the approvals book or answers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import bootstrap
from shared.domain import Actor
from shared.entrypoints.access import Role
from tests.api.conftest import Api, ids
from tests.api.test_endpoints import proofpoint
from tests.rotation.conftest import Customer, World

READER = ("reader@msp.example", (Role.READ.value,))
APPROVAL = {"mode": "approval", "timeZone": "Europe/Berlin", "forceDaysBeforeExpiry": 3}


async def register(api: Api, c: Customer, control: dict[str, Any]) -> None:
    reply = await api.put(c, {"customer": c.name, "destinations": [proofpoint(c)],
                              "policy": {"changeControl": control}})
    assert reply.status == 201, reply.body
    stored = reply.body["policy"]["changeControl"]
    assert stored["mode"] == control["mode"] and stored["timeZone"] == control["timeZone"]


async def requested(api: Api, world: World, c: Customer) -> str:
    """Run the timer's assessment; the pending request's id."""
    world.seed_accounts()
    async with bootstrap.services() as svc:
        outcome = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
    assert outcome.result == "due", outcome
    listed = await api.call("approvals", params={"status": "pending"})
    assert listed.status == 200
    mine = [a for a in listed.body["approvals"] if a["tenantId"] == c.tenant_id]
    assert len(mine) == 1 and mine[0]["status"] == "pending" and mine[0]["decidedBy"] is None
    return str(mine[0]["requestId"])


@pytest.mark.parametrize(("control", "field"), [
    ({"mode": "window", "timeZone": "Atlantis/Lost", "windows": [{"days": ["sat"], "start": "22:00",
                                                                   "end": "02:00"}]}, "timeZone"),
    ({"mode": "window", "windows": [{"days": ["sat"], "start": "25:00", "end": "02:00"}]}, "start"),
    ({"mode": "window", "windows": []}, "windows"),
    ({"mode": "approval", "forceDaysBeforeExpiry": 120}, "forceDaysBeforeExpiry"),
    ({"mode": "approval", "forceDaysBeforeExpiry": 30}, "forceDaysBeforeExpiry"),  # not below renew-before (30)
    ({"mode": "weekly"}, "mode"),
])
async def test_a_bad_change_control_is_refused_naming_the_field_and_changes_nothing(
    api: Api, world: World, control: dict[str, Any], field: str
) -> None:
    c = world.seed_customer("Refused", 100)
    reply = await api.put(c, {"customer": c.name, "policy": {"changeControl": control}})
    assert (reply.status, reply.code) == (422, "InvalidTarget")
    assert f"changeControl.{field}" in reply.body["error"]["message"] or field in reply.body["error"]["message"]
    assert (await api.call("target", "GET", ids(c))).status == 404


async def test_approve_reserves_queues_and_rotates_with_the_decision_audited(
    api: Api, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = world.seed_customer("Approver", 12)
    await register(api, c, APPROVAL)
    request_id = await requested(api, world, c)
    status = (await api.call("status")).body["targets"][0]
    assert status["changeMode"] == "approval" and status["rotationWaiting"] == "approval"
    assert status["approval"]["requestId"] == request_id and "approval-requested" in status["alerts"]
    assert status["forceOn"] is not None and status["nextWindow"] is None
    # Roles: a reader may list, not decide; nobody signed in may do neither.
    assert (await api.call("approvals", caller=READER)).status == 200
    body = {"requestId": request_id, "action": "approve"}
    refused = await api.call("approval", "POST", ids(c), body, caller=READER)
    assert (refused.status, refused.code) == (403, "Forbidden")
    assert (await api.call("approval", "POST", ids(c), body, caller=None)).status == 401
    assert (await api.call("approvals", caller=None)).status == 401
    # A stale request id (another request's) is a 409, and changes nothing.
    stale = await api.call("approval", "POST", ids(c), {**body, "requestId": "0" * 32})
    assert (stale.status, stale.code) == (409, "StaleRequest")
    decided = await api.call("approval", "POST", ids(c), {**body, "reason": "CAB-1234"})
    assert decided.status == 200, decided.body
    assert decided.body["approval"]["status"] == "approved"
    assert decided.body["approval"]["decidedBy"] == "manual:operator@msp.example"
    assert decided.body["approval"]["reason"] == "CAB-1234"
    assert decided.body["outcome"]["result"] == "reserved"
    again = await api.call("approval", "POST", ids(c), body)
    assert (again.status, again.code) == (409, "NotPending")
    # The worker the queue message wakes finishes the rotation.
    async with bootstrap.services() as svc:
        done = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER, only_in_flight=True)
        events = await svc.state.events(c.tenant_id, c.app_id, 100)
    assert done.result == "rotated", done
    approval_events = [e for e in events if e.step == "approval" and e.outcome == "approved"]
    assert approval_events and approval_events[0].actor == "manual:operator@msp.example"
    assert "CAB-1234" in approval_events[0].detail
    reserve = next(e for e in events if e.step == "reserve")
    assert "approved by manual:operator@msp.example" in reserve.detail
    after = (await api.call("status")).body["targets"][0]
    assert after["rotationWaiting"] == "" and "approval-requested" not in after["alerts"]
    assert after["approval"]["status"] == "approved"  # kept as the record of who approved
    # No secret, old or new, in any log record, answer or row of the approvals book.
    secrets = {c.secret, world.proofpoint_password, *(v["value"] for v in world.versions(c))}
    async with bootstrap.services() as svc:
        rows = repr(await svc.approvals.all_rows())  # type: ignore[union-attr]
    seen = caplog.text + rows + json.dumps(after) + json.dumps(decided.body)
    assert len(secrets) == 3 and not any(secret in seen for secret in secrets)


async def test_bad_decisions_are_400s_and_change_nothing(api: Api, world: World) -> None:
    c = world.seed_customer("Careful", 12)
    await register(api, c, APPROVAL)
    request_id = await requested(api, world, c)
    now = datetime.now(UTC)
    cases = [
        ({"requestId": request_id, "action": "postpone"}, "InvalidUntil"),
        ({"requestId": request_id, "action": "postpone", "until": (now - timedelta(days=1)).date().isoformat()},
         "InvalidUntil"),
        ({"requestId": request_id, "action": "postpone", "until": "next tuesday"}, "InvalidUntil"),
        ({"requestId": request_id, "action": "postpone", "until": "2027-01-05T10:00:00"}, "InvalidUntil"),
        ({"requestId": request_id, "action": "postpone", "until": (now + timedelta(days=400)).isoformat()},
         "InvalidUntil"),
        ({"requestId": request_id, "action": "approve", "until": (now + timedelta(days=2)).isoformat()},
         "InvalidUntil"),
        ({"requestId": request_id, "action": "maybe"}, "InvalidAction"),
        ({"requestId": request_id, "action": "reject", "reason": "x" * 501}, "InvalidReason"),
        ({"requestId": request_id, "action": "reject", "reason": "line\nbreak"}, "InvalidReason"),
        ({"requestId": request_id, "action": "reject", "reason": f"use {world.proofpoint_password}"}, "InvalidReason"),
        ({"requestId": "not-an-id", "action": "approve"}, "InvalidRequestId"),
    ]
    for body, code in cases:
        reply = await api.call("approval", "POST", ids(c), body)
        assert (reply.status, reply.code) == (400, code), (body, reply.body)
    for body in ({"action": "approve"}, {"requestId": request_id, "action": "approve", "who": "me"}, []):
        assert (await api.call("approval", "POST", ids(c), body)).status == 422
    unknown = await api.call("approval", "POST", {"tenantId": c.app_id, "appId": c.tenant_id},
                             {"requestId": request_id, "action": "approve"})
    assert (unknown.status, unknown.code) == (404, "ApprovalNotFound")
    assert (await api.call("approvals", params={"status": "maybe"})).code == "InvalidQuery"
    listed = (await api.call("approvals", params={"status": "pending"})).body["approvals"]
    assert [a["requestId"] for a in listed] == [request_id], "nothing was decided"


async def test_postpone_and_reject_wait_and_are_listed_by_status(api: Api, world: World) -> None:
    later = world.seed_customer("Later", 12)
    never = world.seed_customer("Never", 12)
    for c in (later, never):
        await register(api, c, APPROVAL)
    first, second = await requested(api, world, later), await requested(api, world, never)
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    postponed = await api.call("approval", "POST", ids(later), {"requestId": first, "action": "postpone",
                                                                 "until": until.isoformat()})
    assert postponed.status == 200 and postponed.body["approval"]["until"] == until.isoformat()
    rejected = await api.call("approval", "POST", ids(never), {"requestId": second, "action": "reject",
                                                                "reason": "customer change freeze"})
    assert rejected.status == 200 and rejected.body["outcome"]["result"] == "due"
    assert [a["requestId"] for a in (await api.call("approvals", params={"status": "postponed"})).body["approvals"]] \
        == [first]
    assert [a["requestId"] for a in (await api.call("approvals", params={"status": "rejected"})).body["approvals"]] \
        == [second]
    status = {d["customer"]: d for d in (await api.call("status")).body["targets"]}
    assert status["Later"]["rotationWaiting"] == "approval" and status["Later"]["approval"]["status"] == "postponed"
    assert status["Never"]["rotationWaiting"] == "" and status["Never"]["approval"]["status"] == "rejected"
    for c in (later, never):
        assert len(world.credentials(c)) == 1, "nothing rotated"
        assert status[c.name]["stage"] == "idle"


async def test_window_mode_status_shows_the_next_window_and_nothing_secret_is_stored(api: Api, world: World) -> None:
    c = world.seed_customer("Windowed", 12)
    soon = datetime.now(UTC) + timedelta(hours=3)
    closes = soon + timedelta(hours=1)
    window = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": soon.strftime("%H:%M"),
              "end": closes.strftime("%H:%M")}
    await register(api, c, {"mode": "window", "timeZone": "UTC", "windows": [window]})
    world.seed_accounts()
    async with bootstrap.services() as svc:
        outcome = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
        rows = await svc.state.all_rows() + await svc.approvals.all_rows()  # type: ignore[union-attr]
    assert outcome.result == "due" and len(world.credentials(c)) == 1
    doc = (await api.call("status")).body["targets"][0]
    assert doc["changeMode"] == "window" and doc["rotationWaiting"] == "window"
    assert doc["nextWindow"]["timeZone"] == "UTC"
    assert doc["nextWindow"]["start"][11:16] == soon.strftime("%H:%M")
    text = repr(rows) + repr(doc)
    assert c.secret not in text and world.proofpoint_password not in text


async def test_a_removed_customers_request_is_not_listed_nor_decided(api: Api, world: World) -> None:
    c = world.seed_customer("Leaving", 12)
    await register(api, c, APPROVAL)
    request_id = await requested(api, world, c)
    assert (await api.call("target", "DELETE", ids(c))).status == 204
    assert (await api.call("approvals")).body["approvals"] == []
    gone = await api.call("approval", "POST", ids(c), {"requestId": request_id, "action": "approve"})
    assert (gone.status, gone.code) == (404, "TargetNotFound")


async def test_rotate_now_goes_ahead_outside_the_window_as_documented(api: Api, world: World) -> None:
    c = world.seed_customer("Urgent", 12)
    later = datetime.now(UTC) + timedelta(hours=5)
    window = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": later.strftime("%H:%M"),
              "end": (later + timedelta(hours=1)).strftime("%H:%M")}
    await register(api, c, {"mode": "window", "timeZone": "America/New_York", "windows": [window]})
    world.seed_accounts()
    async with bootstrap.services() as svc:
        assert (await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)).result == "due"
    assert (await api.call("status")).body["targets"][0]["rotationWaiting"] == "window"
    reply = await api.call("rotations", "POST", body={"tenantId": c.tenant_id, "appId": c.app_id},
                           params={"wait": "true"})
    assert reply.status == 200 and reply.body["result"] == "rotated", reply.body
    async with bootstrap.services() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id, 100)
    reserve = next(e for e in events if e.step == "reserve")
    assert reserve.actor == "manual:operator@msp.example"
    assert "manual rotation OUTSIDE the maintenance windows, next window" in reserve.detail
    assert "America/New_York" in reserve.detail
    assert (await api.call("status")).body["targets"][0]["rotationWaiting"] == ""


async def test_a_changed_change_control_is_applied_by_the_next_resume_pass(api: Api, world: World) -> None:
    c = world.seed_customer("Relaxed", 12)
    await register(api, c, APPROVAL)
    await requested(api, world, c)
    reply = await api.put(c, {"customer": c.name, "destinations": [proofpoint(c)],
                              "policy": {"changeControl": {"mode": "auto"}}})
    assert reply.status == 200 and reply.body["policy"]["changeControl"]["mode"] == "auto"
    async with bootstrap.services() as svc:
        resumed = await svc.engine.resume_pass()
        events = await svc.state.events(c.tenant_id, c.app_id, 100)
    assert [o.result for o in resumed.outcomes] == ["rotated"]
    assert (await api.call("approvals")).body["approvals"] == [], "the pending request was withdrawn"
    assert any(e.step == "approval" and e.outcome == "withdrawn" for e in events)
