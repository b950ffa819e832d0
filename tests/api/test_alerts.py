"""Alerts reach people once: one `event=alert` record and one channel post per condition, target and UTC day; one
resolved record and note when the condition clears; the channel kinds' bodies as the sandbox's stand-ins of Teams
Workflows, Slack and a JSON receiver accept them; a test alert from the API; the webhook URL never leaks."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared import bootstrap
from shared.clock import SystemClock
from tests.alerts.schema import assert_adaptive_card
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import ROTATOR_ROLE, World

WEBHOOK_SECRET = "alert-webhook"
NOTIFY = {"name": "helpdesk", "kind": "notify-only", "options": {}}


@dataclass
class Channel:
    """The sandbox's receiver of one channel kind, its URL (with a secret token) in Key Vault."""

    world: World
    kind: str
    token: str

    def received(self) -> list[dict[str, Any]]:
        return [r for r in self.world.sb.control.state()["webhooks"]["received"] if r["kind"] == self.kind]

    def titles(self) -> list[str]:
        """The title of every accepted post, whatever the kind's body."""
        out = []
        for r in self.received():
            if not r["accepted"]:
                continue
            body = r["body"]
            if self.kind == "teams":
                out.append(body["attachments"][0]["content"]["body"][0]["text"])
            elif self.kind == "slack":
                out.append(body["blocks"][0]["text"]["text"])
            else:
                out.append(body["title"])
        return out

    def count(self, title_part: str) -> int:
        return sum(title_part in t for t in self.titles())


def configure(world: World, monkeypatch: pytest.MonkeyPatch, kind: str) -> Channel:
    """The rotator configured as in production: the webhook URL in Key Vault, named by ALERT_WEBHOOK_SECRET_NAME,
    its kind in ALERT_WEBHOOK_KIND, and the real alert book (not the recorder the api fixture installs)."""
    token = "s3cr3t-" + secrets.token_hex(8)
    world.sb.control.seed({"webhooks": {kind: token}, "keyvault": {"secrets": [
        {"name": WEBHOOK_SECRET, "value": f"{world.sb.endpoints['webhooks']}/{kind}/{token}"}]}})
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET_NAME", WEBHOOK_SECRET)
    monkeypatch.setenv("ALERT_WEBHOOK_KIND", kind)
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")
    return Channel(world, kind, token)


def records(caplog: pytest.LogCaptureFixture, event: str, condition: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == event and getattr(r, "condition", "") == condition]


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(hours=hours)))


async def test_told_once_a_day_while_it_holds_and_resolved_once(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    teams = configure(world, monkeypatch, "teams")
    c = world.seed_customer("Woodgrove", 3)
    await api.put(c, {"customer": "Woodgrove", "destinations": [NOTIFY]})
    first = await api.call("rotations", "POST", body=ids(c), params=WAIT)
    assert first.status == 200 and first.body["result"] == "push-incomplete", first.body
    assert teams.count("notify-only-waiting (Woodgrove)") == 1
    [post] = [r for r in teams.received() if r["accepted"]]
    assert post["status"] == 202
    assert_adaptive_card(post["body"])
    assert len(records(caplog, "alert", "notify-only-waiting")) == 1

    # Every resume pass of the day raises it again: neither logged (the e-mail rule counts records) nor posted.
    for _ in range(3):
        assert (await api.call("push", "POST", body=ids(c))).body["result"] == "push-incomplete"
    assert teams.count("notify-only-waiting") == 1
    assert len(records(caplog, "alert", "notify-only-waiting")) == 1

    # The next UTC day: told again, once; a day in one stage is also `stuck`, told once.
    later(monkeypatch, 25)
    for _ in range(2):
        await api.call("push", "POST", body=ids(c))
    assert teams.count("notify-only-waiting") == 2 and teams.count("stuck (Woodgrove)") == 1
    assert len(records(caplog, "alert", "notify-only-waiting")) == 2 and len(records(caplog, "alert", "stuck")) == 1

    # A human pastes the secret and acknowledges it: the rotation finishes, both conditions clear, each resolved once.
    key_id = (await api.call("details", "GET", ids(c))).body["newKeyId"]
    done = await api.call("acknowledgements", "POST",
                          body={**ids(c), "destination": "helpdesk", "keyId": key_id})
    assert done.status == 200 and done.body["outcome"]["result"] == "rotated", done.body
    assert teams.count("resolved: notify-only-waiting") == 1 and teams.count("resolved: stuck") == 1
    assert len(records(caplog, "alert-resolved", "notify-only-waiting")) == 1
    assert len(records(caplog, "alert-resolved", "stuck")) == 1
    for post in teams.received():
        assert_adaptive_card(post["body"])

    # Re-running passes changes nothing: no second resolved note, no new alert.
    told = len(teams.received())
    async with bootstrap.services() as svc:
        await svc.engine.run_pass()
        await svc.engine.run_pass()
    assert len(teams.received()) == told
    assert len(records(caplog, "alert-resolved", "stuck")) == 1

    # The URL's token is a credential: in no log record of the rotator (nor of the SDKs).
    assert not [r for r in caplog.records if teams.token in r.getMessage() or teams.token in str(r.__dict__)]


async def test_a_refused_post_is_retried_without_a_second_record(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    slack = configure(world, monkeypatch, "slack")
    world.sb.control.add_fault("webhooks", status=500, count=1)
    c = world.seed_customer("Litware", 3)
    await api.put(c, {"customer": "Litware", "destinations": [NOTIFY]})
    await api.call("rotations", "POST", body=ids(c), params=WAIT)
    assert slack.count("notify-only-waiting") == 0  # answered 500
    await api.call("push", "POST", body=ids(c))
    assert slack.count("notify-only-waiting (Litware)") == 1  # the next occurrence posts it
    await api.call("push", "POST", body=ids(c))
    assert slack.count("notify-only-waiting") == 1
    # One log record: the e-mail rule must not hear it twice because the webhook failed once.
    assert len(records(caplog, "alert", "notify-only-waiting")) == 1
    [post] = [r for r in slack.received() if r["accepted"]]
    assert post["status"] == 200 and post["body"]["text"] and post["body"]["blocks"]


async def test_json_channel_and_the_timer_pass(api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = configure(world, monkeypatch, "json")
    c = world.seed_customer("Gone", 100, consent=False, owned=False)
    await api.put(c)
    for _ in range(2):
        async with bootstrap.services() as svc:
            await svc.engine.run_pass()
    [post] = hook.received()
    body = post["body"]
    assert post["status"] == 200 and body["schema"] == "sync-secret-rotator.alert/1"
    assert (body["kind"], body["condition"], body["tenantId"], body["appId"]) == (
        "alert", "unreachable", c.tenant_id, c.app_id)
    # The tenant consents and owns the app again: the next pass resolves it, once.
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "grants": [{"appId": "msp-app", "roles": [ROTATOR_ROLE]}],
                                        "applications": [{"appId": c.app_id, "owners": ["msp-app"]}]}]})
    for _ in range(2):
        async with bootstrap.services() as svc:
            await svc.engine.run_pass()
    kinds = [(p["body"]["kind"], p["body"]["condition"]) for p in hook.received()]
    assert kinds == [("alert", "unreachable"), ("resolved", "unreachable")]


async def test_without_a_channel_the_record_is_still_once_a_day(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")
    c = world.seed_customer("Quiet", 3)
    await api.put(c, {"destinations": [NOTIFY]})
    assert (await api.call("rotations", "POST", body=ids(c), params=WAIT)).body["result"] == "push-incomplete"
    for _ in range(3):
        await api.call("push", "POST", body=ids(c))
    assert len(records(caplog, "alert", "notify-only-waiting")) == 1
    assert world.sb.control.state()["webhooks"]["received"] == []


async def test_send_a_test_alert(api: Api, world: World, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    teams = configure(world, monkeypatch, "teams")
    reply = await api.call("alert_test", "POST")
    assert reply.status == 200, reply.body
    assert reply.body["channel"] == "teams" and reply.body["status"] == 202 and reply.body["delivered"] is True
    assert reply.body["sent"]["kind"] == "test" and "operator@msp.example" in reply.body["sent"]["message"]
    assert teams.token not in reply.text
    [post] = teams.received()
    assert_adaptive_card(post["body"])
    async with bootstrap.services() as svc:
        [audit] = await svc.state.events("rotator", "alerts")
    assert (audit.step, audit.outcome, audit.actor) == ("alert-test", "delivered", "operator@msp.example")

    # The channel refuses (the token revoked): the answer says so with the channel's status, still without the URL.
    world.sb.control.seed({"webhooks": {"teams": "another-token"}})
    refused = await api.call("alert_test", "POST")
    assert refused.status == 200 and refused.body["delivered"] is False and refused.body["status"] == 404
    assert refused.body["errorCode"] == "WebhookRejected" and teams.token not in refused.text
    assert not [r for r in caplog.records if teams.token in r.getMessage() or teams.token in str(r.__dict__)]


async def test_a_test_alert_needs_operate_and_a_channel(api: Api, world: World) -> None:
    forbidden = await api.call("alert_test", "POST", caller=("reader@msp.example", ("Rotator.Read",)))
    assert forbidden.status == 403 and forbidden.code == "Forbidden"
    none = await api.call("alert_test", "POST")
    assert none.status == 409 and none.code == "NoAlertChannel"
    wrong = await api.call("alert_test", "GET")
    assert wrong.status == 405


@pytest.mark.parametrize("url", ["ftp://hooks.example/x?sig=s3cr3t-q", "https:///no-host?sig=s3cr3t-q",
                                 "http://hooks.example/x?sig=s3cr3t-q"])
async def test_a_bad_url_is_named_by_its_secret_never_shown(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    configure(world, monkeypatch, "slack")
    world.sb.control.seed({"keyvault": {"secrets": [{"name": WEBHOOK_SECRET, "value": url}]}})
    reply = await api.call("alert_test", "POST")
    assert reply.body["delivered"] is False and reply.body["errorCode"] == "WebhookUrlInvalid"
    assert "s3cr3t-q" not in reply.text
    assert not [r for r in caplog.records if "s3cr3t-q" in r.getMessage() or "s3cr3t-q" in str(r.__dict__)]


async def test_an_unreachable_channel_hides_the_url(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configure(world, monkeypatch, "json")
    # A closed port on loopback with the token in path and query.
    world.sb.control.seed({"keyvault": {"secrets": [
        {"name": WEBHOOK_SECRET, "value": "https://127.0.0.1:9/json/s3cr3t-p?sig=s3cr3t-q"}]}})
    reply = await api.call("alert_test", "POST")
    assert reply.body["delivered"] is False and reply.body["errorCode"] == "WebhookUnreachable"
    assert reply.body["status"] is None and "s3cr3t" not in reply.text
    assert not [r for r in caplog.records if "s3cr3t" in r.getMessage() or "s3cr3t" in str(r.__dict__)]


async def test_the_command_line_sends_a_test_alert(api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    slack = configure(world, monkeypatch, "slack")
    world.env.update({"ALERT_WEBHOOK_SECRET_NAME": WEBHOOK_SECRET, "ALERT_WEBHOOK_KIND": "slack"})
    run = world.cli("alert-test", "--as", "ops-script")
    assert run.wait(120) == 0, run.output()
    out = run.output()
    answer = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert (answer["channel"], answer["status"], answer["delivered"]) == ("slack", 200, True)
    assert slack.token not in out
    [post] = slack.received()
    assert post["accepted"] and "ops-script" in post["body"]["text"]
    async with bootstrap.services() as svc:
        [audit] = await svc.state.events("rotator", "alerts")
    assert (audit.step, audit.outcome, audit.actor) == ("alert-test", "delivered", "ops-script")
    # No channel configured: exit 1 and the reason, nothing posted.
    world.env["ALERT_WEBHOOK_SECRET_NAME"] = ""
    refused = world.cli("alert-test")
    assert refused.wait(120) == 1 and "NoAlertChannel" in refused.output()
    assert len(slack.received()) == 1
