"""Alerts reach a webhook (Teams/Slack JSON) at most once per condition, target and UTC day; always logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from shared import bootstrap
from shared.clock import SystemClock
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import World

WEBHOOK_SECRET = "alert-webhook"


@dataclass
class Receiver:
    """A webhook receiver on loopback: records each post, answers with the queued statuses (then 200)."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def by_condition(self, condition: str) -> list[dict[str, Any]]:
        return [p for p in self.received if f": {condition} (" in p["summary"]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        state.received.append(await request.json())
        return web.json_response({}, status=state.statuses.pop(0) if state.statuses else 200)

    app = web.Application()
    app.router.add_post("/hook/{token}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook/s3cr3t-webhook-token"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def webhook(api: Api, world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """The rotator configured as in production: the webhook URL in Key Vault, named by ALERT_WEBHOOK_SECRET_NAME."""
    world.sb.control.seed({"keyvault": {"secrets": [{"name": WEBHOOK_SECRET, "value": receiver.url}]}})
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET_NAME", WEBHOOK_SECRET)
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")  # let bootstrap build the real alerter
    return receiver


NOTIFY = {"name": "helpdesk", "kind": "notify-only", "options": {}}


async def test_a_condition_posts_once_a_day(api: Api, world: World, webhook: Receiver, monkeypatch,  # type: ignore[no-untyped-def]
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = world.seed_customer("Woodgrove", 3)
    await api.put(c, {"customer": "Woodgrove", "destinations": [NOTIFY]})
    first = await api.call("rotations", "POST", body=ids(c), params=WAIT)
    assert first.status == 200, first.body
    assert first.body["result"] == "push-incomplete"
    [posted] = webhook.by_condition("notify-only-waiting")
    assert posted["text"] and posted["summary"] == "Sync-secret rotator: notify-only-waiting (Woodgrove)"
    assert posted["@type"] == "MessageCard" and c.tenant_id in posted["text"]

    # The same condition again the same day: logged, not posted.
    caplog.clear()
    again = await api.call("push", "POST", body=ids(c))
    assert again.status == 200 and again.body["result"] == "push-incomplete"
    assert len(webhook.by_condition("notify-only-waiting")) == 1
    assert any(getattr(r, "event", "") == "alert" and getattr(r, "condition", "") == "notify-only-waiting"
               for r in caplog.records), "every alert is logged as a structured event"

    # The next UTC day it is posted again.
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(days=1, hours=1)))
    await api.call("push", "POST", body=ids(c))
    assert len(webhook.by_condition("notify-only-waiting")) == 2
    assert len(webhook.by_condition("stuck")) == 1, "a day in one stage is a stuck rotation: its own condition"
    await api.call("push", "POST", body=ids(c))
    assert len(webhook.by_condition("notify-only-waiting")) == 2 and len(webhook.by_condition("stuck")) == 1

    # The URL is a credential: never in a log record of the rotator or the SDKs (the receiver's own access log aside).
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp.access")]
    assert ours and not any("s3cr3t-webhook-token" in m for m in ours)


async def test_a_failed_post_is_retried_by_the_next_occurrence(api: Api, world: World, webhook: Receiver) -> None:
    webhook.statuses = [500]
    c = world.seed_customer("Litware", 3)
    await api.put(c, {"customer": "Litware", "destinations": [NOTIFY]})
    await api.call("rotations", "POST", body=ids(c), params=WAIT)
    assert len(webhook.by_condition("notify-only-waiting")) == 1  # answered 500
    await api.call("push", "POST", body=ids(c))
    assert len(webhook.by_condition("notify-only-waiting")) == 2  # the claim was given back: posted again
    await api.call("push", "POST", body=ids(c))
    assert len(webhook.by_condition("notify-only-waiting")) == 2


async def test_unreachable_tenant_alerts_through_the_timer_pass(api: Api, world: World, webhook: Receiver) -> None:
    c = world.seed_customer("Gone", 100, consent=False, owned=False)
    await api.put(c)
    for _ in range(2):
        async with bootstrap.services() as svc:
            await svc.engine.run_pass()
    assert len(webhook.by_condition("unreachable")) == 1


async def test_without_the_setting_alerts_are_only_logged(api: Api, world: World, receiver: Receiver,
                                                           monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")
    c = world.seed_customer("Quiet", 3)
    await api.put(c, {"destinations": [NOTIFY]})
    assert (await api.call("rotations", "POST", body=ids(c), params=WAIT)).body["result"] == "push-incomplete"
    assert receiver.received == []
