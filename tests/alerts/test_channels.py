"""Each channel kind's body, as its service takes it: the Teams card against the published Adaptive Card schema,
Slack's text and blocks within Block Kit's limits, the JSON body's documented keys. Pure: no network."""

from __future__ import annotations

import json
import re
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.alerts import CHANNELS, Notice, NoticeKind, WebhookPost, build_channel
from shared.alerts.json_webhook import SCHEMA, body
from shared.alerts.slack import payload
from shared.alerts.teams import MAX_MESSAGE_BYTES, message
from shared.domain import Secret
from shared.errors import RotationError
from shared.settings import ALERT_WEBHOOK_KINDS, Settings, SettingsError
from tests.alerts.schema import assert_adaptive_card, card_errors

AT = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
TENANT, APP = "8b6f3f7e-2b1a-4c55-9d8e-1f2a3b4c5d6e", "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"


def notices() -> list[Notice]:
    long = "x" * 5000
    return [
        Notice(NoticeKind.ALERT, "destination-failing", TENANT, APP, "helpdesk: HTTP 500 <b>&amp;</b> *bold*", AT,
               "Woodgrove", {"destination": "helpdesk", "error_code": "DestinationUnavailable", "attempts": "5"}),
        Notice(NoticeKind.RESOLVED, "stuck", TENANT, APP, "rotation 1234 has been in stage verified", AT, ""),
        Notice(NoticeKind.TEST, "test", "", "", "A test alert sent by alice@msp.example", AT,
               details={"sentBy": "alice@msp.example"}),
        Notice(NoticeKind.ALERT, "expired", TENANT, APP, long, AT, "C" * 400, {f"k{i}": long for i in range(14)}),
        Notice(NoticeKind.ALERT, "approval-requested", TENANT, APP, "a rotation waits for approval", AT, "Contoso",
               {"requestId": "ab" * 16, **{f"{a}Link": f"https://rotator.example/api/approval-links?link=a1.{a}.x"
                                           for a in ("approve", "postpone", "reject")}}),
    ]


def test_teams_shows_signed_links_as_buttons_on_an_alert_only() -> None:
    asking = notices()[-1]
    card = message(asking)["attachments"][0]["content"]
    assert [(a["type"], a["title"]) for a in card["actions"]] == [
        ("Action.OpenUrl", "Approve…"), ("Action.OpenUrl", "Postpone…"), ("Action.OpenUrl", "Reject…")]
    assert card["actions"][0]["url"] == asking.details["approveLink"]
    facts = [f["title"] for f in card["body"][2]["facts"]]
    assert "requestId" in facts and not any(name.endswith("Link") for name in facts)
    resolved = Notice(NoticeKind.RESOLVED, asking.condition, TENANT, APP, "", AT, details=asking.details)
    assert "actions" not in message(resolved)["attachments"][0]["content"]
    odd = Notice(NoticeKind.ALERT, "x", TENANT, APP, "m", AT, details={"approveLink": "javascript:alert(1)"})
    assert "actions" not in message(odd)["attachments"][0]["content"]


@pytest.mark.parametrize("notice", notices(), ids=lambda n: f"{n.kind.value}-{n.condition}")
def test_teams_sends_an_adaptive_card_the_schema_accepts(notice: Notice) -> None:
    sent = message(notice)
    assert_adaptive_card(sent)
    texts = [b.get("text", "") for b in sent["attachments"][0]["content"]["body"]]
    assert notice.title.startswith(texts[0]) and notice.message.startswith(texts[1]) and texts[1]
    assert len(json.dumps(sent).encode()) < MAX_MESSAGE_BYTES


def test_the_schema_check_refuses_what_teams_would_not_render() -> None:
    card = message(notices()[0])["attachments"][0]["content"]
    assert card_errors({**card, "body": [{"type": "TextBlock", "text": "x", "color": "Purple"}]})
    assert card_errors({**card, "body": [{"type": "MessageCard", "text": "x"}]})
    assert card_errors({**card, "unknown": 1})


@pytest.mark.parametrize("notice", notices(), ids=lambda n: f"{n.kind.value}-{n.condition}")
def test_slack_gets_text_and_blocks_within_block_kit_limits(notice: Notice) -> None:
    sent = payload(notice)
    assert sent["text"].strip() and len(sent["text"]) <= 3000
    header, section, *fields = sent["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    assert section["type"] == "section" and len(section["text"]["text"]) <= 3000
    assert fields and all(len(f["fields"]) <= 10 for f in fields)
    assert all(len(f["text"]) <= 2000 for block in fields for f in block["fields"])
    assert sum(len(b["fields"]) for b in fields) == len(notice.facts())
    # Slack's control characters never reach it raw: a message cannot become a link or a mention.
    assert "<" not in sent["text"] and "<" not in section["text"]["text"]


def test_slack_escapes_its_control_characters() -> None:
    sent = payload(notices()[0])
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in sent["blocks"][1]["text"]["text"]


@pytest.mark.parametrize("notice", notices(), ids=lambda n: f"{n.kind.value}-{n.condition}")
def test_the_json_body_is_the_documented_one(notice: Notice) -> None:
    sent = body(notice)
    assert set(sent) == {"schema", "kind", "condition", "tenantId", "appId", "customer", "destination", "title",
                         "message", "details", "at"}
    assert sent["schema"] == SCHEMA and sent["kind"] == notice.kind.value and sent["at"] == AT.isoformat()
    assert sent["details"] == dict(notice.details) and sent["destination"] == notice.details.get("destination", "")


def test_every_kind_the_setting_accepts_has_a_channel_module() -> None:
    assert set(CHANNELS) == set(ALERT_WEBHOOK_KINDS)
    assert all(build_channel(k, lambda b: None).kind == k for k in CHANNELS)  # type: ignore[arg-type,return-value]


BASE = {"KEY_VAULT_URL": "https://kv.vault.azure.net", "STATE_TABLES_ENDPOINT": "https://st.table.core.windows.net"}


@pytest.mark.parametrize(("env", "problem"), [
    ({"ALERT_WEBHOOK_SECRET_NAME": "hook"}, "ALERT_WEBHOOK_KIND is required"),
    ({"ALERT_WEBHOOK_SECRET_NAME": "hook", "ALERT_WEBHOOK_KIND": "messagecard"}, "must be one of teams, slack, json"),
    ({"ALERT_WEBHOOK_KIND": "office365"}, "must be one of"),
])
def test_the_channel_kind_is_validated_at_start(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env({**BASE, **env})


@pytest.mark.parametrize("kind", ["teams", "Slack", "json"])
def test_a_known_kind_is_taken(kind: str) -> None:
    settings = Settings.from_env({**BASE, "ALERT_WEBHOOK_SECRET_NAME": "hook", "ALERT_WEBHOOK_KIND": kind})
    assert settings.alert_webhook_kind == kind.lower()
    assert Settings.from_env(BASE).alert_webhook_kind == ""  # no channel: e-mail only


class OneSecret:
    """The secret store's one call the webhook post makes."""

    def __init__(self, value: str) -> None:
        self.value = value

    async def get_named(self, name: str) -> Secret:
        return Secret(self.value)


@pytest.mark.parametrize("url", ["https://127.0.0.1:9/hook/s3cr3t-p?sig=s3cr3t-q",  # nothing listens: unreachable
                                 "ftp://hooks.example/s3cr3t-p?sig=s3cr3t-q",
                                 "http://hooks.example/s3cr3t-p?sig=s3cr3t-q"])  # http only on loopback
async def test_a_failed_post_never_carries_the_url(url: str) -> None:
    post = WebhookPost(OneSecret(url), "alert-webhook")  # type: ignore[arg-type]
    with pytest.raises(RotationError) as caught:
        await post({"text": "x"})
    error = caught.value
    shown = "".join(traceback.format_exception(error)) + repr(error) + str(error.message)
    assert "s3cr3t" not in shown, shown
    assert "alert-webhook" in error.message  # named by its secret, for the operator to find
    assert error.code in ("WebhookUnreachable", "WebhookUrlInvalid")


def test_the_api_document_and_the_bicep_offer_exactly_the_channel_kinds() -> None:
    from shared.entrypoints.api import openapi_document

    result = openapi_document()["components"]["schemas"]["TestAlertResult"]
    assert result["properties"]["channel"]["enum"] == list(ALERT_WEBHOOK_KINDS)
    main = (Path(__file__).resolve().parents[2] / "infra" / "main.bicep").read_text()
    allowed = re.search(r"@allowed\(\[([^\]]*)\]\)\s*param alertWebhookKind string = ''", main)
    assert allowed is not None
    assert re.findall(r"'([^']*)'", allowed.group(1)) == ["", *ALERT_WEBHOOK_KINDS]
    assert "ALERT_WEBHOOK_KIND: alertWebhookKind" in main
