"""The function entry points end to end: POST /api/push and the Event Grid trigger (more on events in
tests/api/test_events.py); the timers and the queue functions are in tests/fanout."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.alerts import LogAlerter
from shared.domain import Actor
from tests.api.conftest import Api, api, app_functions, functions  # noqa: F401 - `api` is a fixture used here
from tests.api.test_events import event
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_crash import CRASH_POINTS, kill_at
from tests.rotation.test_push_retire import destinations


def test_the_timer_runs_on_the_schedule_setting_and_never_on_startup() -> None:
    timer_function = next(f for f in app_functions() if f.get_function_name() == "rotation_timer")
    (binding,) = timer_function.get_bindings()
    assert binding.schedule == "%ROTATION_SCHEDULE%"
    assert binding.run_on_startup is False


async def test_direct_push_request_and_its_own_new_version_event_while_rotating(
    api: Api, world: World  # noqa: F811
) -> None:
    due = world.seed_customer("Direct", 12)
    await register(api, due)
    reply = await api.call("push", "POST", body={"tenantId": due.tenant_id, "appId": due.app_id})
    assert reply.status == 200 and reply.body["result"] == "nothing-to-push"
    # An event announcing a version Key Vault does not hold (the rotator's own versions: tests/api/test_events.py).
    target = await read(api, due)
    await functions()["push_events"](event(world, target.secret_name, "0" * 32))
    assert (await read(api, due)).state == target.state
    missing = await api.call("push", "POST", body={"tenantId": due.tenant_id, "appId": due.tenant_id})
    assert missing.status == 404


async def test_push_refuses_malformed_bodies_with_a_client_error(api: Api) -> None:  # noqa: F811
    for raw in (b"[" * 100_000, b"1" * 5000, b"{", b"[]", b"[1, 2]", b'{"tenantId": 1}', b'{"x": 1}'):
        reply = await api.call("push", "POST", raw=raw)
        assert 400 <= reply.status < 500, (raw[:20], reply.status, reply.body)
        assert isinstance(reply.code, str)


async def test_a_rotation_stuck_in_one_stage_raises_an_alert(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("Stuck", 5)
    async with rotator() as svc:
        await svc.state.create_target(due.target())
    verification = next(p for p in CRASH_POINTS if p.name == "during verification")
    await asyncio.to_thread(kill_at, world, due, verification)
    alerter = LogAlerter()
    from datetime import timedelta

    async with rotator(timedelta(hours=25), alerter=alerter) as svc:
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
    assert outcome.result == "rotated"
    stuck = [a for a in alerter.raised if a.condition == "stuck"]
    assert len(stuck) == 1 and stuck[0].details["stage"] == "pending"


async def register(client: Api, *customers: Customer) -> None:
    for c in customers:
        reply = await client.put(c, {"customer": c.name, "destinations": _docs(client.world, c)})
        assert reply.status in (200, 201), reply.body


async def read(client: Api, customer: Customer):  # type: ignore[no-untyped-def]
    from shared.bootstrap import services

    async with services() as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    return target


def _docs(world: World, customer: Customer) -> list[dict[str, Any]]:
    return [{"name": d.name, "kind": d.kind, "options": d.options} for d in destinations(world, customer)]
