"""Key Vault's events through the native Event Grid trigger (`push_events`), invoked as the host invokes it: one
func.EventGridEvent per call. A version written by hand is adopted (proven, pushed, finished) once however many
copies arrive; the rotator's own versions, a value that gets no token, other vaults, other secrets and malformed
events push nothing; an invocation that could not finish raises, so Event Grid delivers it again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import azure.functions as func
import pytest

from shared.domain import Actor, Stage, Target
from shared.entrypoints.push import EVENT_SEEN_HOURS, EventNotHandled, event_key, new_version_of
from tests.api.conftest import Api, app_functions, functions
from tests.rotation.conftest import Customer, Rotator, World, random_secret
from tests.rotation.test_push_retire import assert_delivered_everywhere, org, portal_secrets, setup

NEW_VERSION = "Microsoft.KeyVault.SecretNewVersionCreated"


def event(world: World, name: str, version: str, event_id: str | None = "ev-1", *, data: Any = None,
          event_type: str = NEW_VERSION, vault: str | None = None) -> func.EventGridEvent:
    """An event as the Functions host hands it to the trigger (Key Vault's event schema)."""
    vault_url = vault or world.env["KEY_VAULT_URL"]
    return func.EventGridEvent(
        id=event_id,  # type: ignore[arg-type]
        data=data if data is not None else {
            "Id": f"{vault_url}/secrets/{name}/{version}", "VaultName": "kv-demo",
            "ObjectType": "Secret", "ObjectName": name, "Version": version, "NBF": None, "EXP": None},
        topic="/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-demo",
        subject=name,
        event_type=event_type,
        event_time=dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC),
        data_version="1",
    )


async def deliver(e: func.EventGridEvent) -> None:
    await functions()["push_events"](e)


async def deliver_until_done(e: func.EventGridEvent, attempts: int = 20) -> int:
    """As Event Grid does: deliver again while the invocation raises; how many raised."""
    for failed in range(attempts):
        try:
            await deliver(e)
            return failed
        except EventNotHandled:
            await asyncio.sleep(0.2)
    raise AssertionError("never handled")


def test_push_events_is_an_event_grid_trigger() -> None:
    function = next(f for f in app_functions() if f.get_function_name() == "push_events")
    (binding,) = function.get_bindings()
    assert binding.type == "eventGridTrigger"


def write_by_hand(world: World, c: Customer, *, in_entra: bool = True, author: str = "alice@msp.example") -> tuple[
        str, str]:
    """A person adds a secret to the app in the Entra portal (or not) and pastes it into Key Vault: (version, value)."""
    value = random_secret()
    if in_entra:
        world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [{"appId": c.app_id,
            "passwordCredentials": [{"displayName": "added in the portal", "secretText": value,
                                     "endDateTime": "+200d"}]}]}]})
    version = uuid.uuid4().hex
    name = Target(c.tenant_id, c.app_id).secret_name
    tags = {"author": author} if author else {}
    world.sb.control.seed({"keyvault": {"secrets": [{"name": name, "value": value, "version": version,
                                                     "tags": tags}]}})
    return version, value


def proofpoint_puts(world: World, c: Customer) -> int:
    return len(org(world, c)["puts"])


async def test_a_hand_written_version_is_adopted_once_however_many_copies_arrive(
    api: Api, world: World, rotator: Rotator
) -> None:
    c = world.seed_customer("Handmade", 100)
    await setup(world, rotator, c)
    version, value = write_by_hand(world, c)
    name = Target(c.tenant_id, c.app_id).secret_name
    # 100 copies, concurrently, some without an id, as Event Grid may repeat a delivery (at most 16 invocations at a
    # time, as a host would run them); each that raises is delivered again.
    gate = asyncio.Semaphore(16)

    async def copy(n: int) -> int:
        async with gate:
            return await deliver_until_done(event(world, name, version, None if n % 3 == 0 else f"ev-{n}"))

    await asyncio.gather(*(copy(n) for n in range(100)))
    key_id = await assert_delivered_everywhere(world, rotator, c)
    assert org(world, c)["settings"]["ad_key"] == value
    credential = next(cred for cred in world.credentials(c) if cred["secretText"] == value)
    assert key_id == credential["keyId"]
    (current,) = [v for v in world.versions(c) if v["tags"].get("stage") == "current"]
    assert current["version"] == version and current["tags"]["key-id"] == key_id
    assert current["tags"]["author"] == "alice@msp.example"
    async with rotator() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id, limit=500)
        rows = await svc.state.all_rows()
    adopted = [e for e in events if e.step == "adopt"]
    assert [(e.outcome, e.actor) for e in adopted] == [("ok", "event")]
    assert f"hand-written version {version} (by alice@msp.example)" in adopted[0].detail
    assert sorted((e.step, e.outcome) for e in events if e.step.startswith("push:")) == \
        [("push:proofpoint", "ok"), ("push:vircom-portal", "ok")]
    assert value not in repr(rows) and value not in repr(events)
    # A later replay changes nothing.
    puts = proofpoint_puts(world, c)
    assert puts == 1
    await deliver(event(world, name, version, "ev-later"))
    assert proofpoint_puts(world, c) == puts


async def test_the_rotators_own_versions_push_nothing(api: Api, world: World, rotator: Rotator) -> None:
    c = world.seed_customer("Own", 12)
    await setup(world, rotator, c)
    async with rotator() as svc:
        assert (await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)).result == "rotated"
    name = Target(c.tenant_id, c.app_id).secret_name
    puts, portal = proofpoint_puts(world, c), len(portal_secrets(world, c))
    assert (puts, portal) == (1, 1)
    for v in world.versions(c):
        await deliver(event(world, name, v["version"], f"ev-{v['version']}"))
    assert (proofpoint_puts(world, c), len(portal_secrets(world, c))) == (puts, portal)
    async with rotator() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id, limit=500)
    assert not [e for e in events if e.step == "adopt"]


async def test_a_hand_written_value_that_gets_no_token_is_alerted_and_never_pushed(
    api: Api, world: World, rotator: Rotator
) -> None:
    c = world.seed_customer("Typo", 100)
    await setup(world, rotator, c)
    before = org(world, c)["settings"]
    version, value = write_by_hand(world, c, in_entra=False, author="")
    name = Target(c.tenant_id, c.app_id).secret_name
    await deliver_until_done(event(world, name, version, "ev-typo"))
    assert org(world, c)["settings"] == before and value not in portal_secrets(world, c)
    async with rotator() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id, limit=50)
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        assert await svc.state.event_seen(event_key(world.env["KEY_VAULT_URL"], name, version),
                                          svc.engine.clock.now())
    (refused,) = [e for e in events if e.step == "adopt"]
    assert (refused.outcome, refused.error_code) == ("refused", "AADSTS7000215")
    assert "author not recorded" in refused.detail and value not in refused.detail
    assert target.state.stage is Stage.IDLE and not target.state.current_version


async def test_other_vaults_other_secrets_and_malformed_events_are_skipped_and_never_stop_the_others(
    api: Api, world: World, rotator: Rotator
) -> None:
    c = world.seed_customer("Batch", 100)
    await setup(world, rotator, c)
    version, value = write_by_hand(world, c)
    name = Target(c.tenant_id, c.app_id).secret_name
    other = "ppsync-11111111-2222-4333-8444-555555555555-11111111-2222-4333-8444-555555555555"
    batch = [
        event(world, other, "0" * 32, "ev-unknown"),  # a secret of a target that is not registered
        event(world, "proofpoint-api-account", "1" * 32, "ev-other-secret"),
        event(world, name, version, "ev-other-vault", vault="https://kv-someone-else.vault.azure.net"),
        event(world, name, version, "ev-string", data="not an object"),
        event(world, name, version, "ev-list", data=[1, 2]),
        event(world, name, version, "ev-validation", data={"validationCode": "abc"},
              event_type="Microsoft.EventGrid.SubscriptionValidationEvent"),
        event(world, name + "\n", version, "ev-newline"),
        event(world, name, "2" * 32, "x" * 5000),  # an unknown version, with an id far past any key length
    ]
    for e in batch:
        await deliver(e)  # each returns normally: acknowledged, nothing retried
    assert org(world, c)["settings"]["ad_key"] != value
    await deliver_until_done(event(world, name, version, "ev-good"))
    assert org(world, c)["settings"]["ad_key"] == value


async def test_a_replay_after_the_expiry_is_handled_again(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC)
    keep = dt.timedelta(hours=EVENT_SEEN_HOURS)
    assert await svc.state.claim_event("ev-x", now, keep) is True
    assert await svc.state.event_seen("ev-x", now + keep - dt.timedelta(seconds=1)) is True
    assert await svc.state.claim_event("ev-x", now + keep - dt.timedelta(seconds=1), keep) is False
    assert await svc.state.event_seen("ev-x", now + keep + dt.timedelta(seconds=1)) is False
    assert await svc.state.claim_event("ev-x", now + keep + dt.timedelta(seconds=1), keep) is True
    assert await svc.state.claim_event("ev/with#odd?chars\n", now, keep) is True
    # Long ids are hashed whole, never cut: two that share their first 1,000 characters are two events.
    long_a, long_b = "a" * 1000 + "1", "a" * 1000 + "2"
    assert await svc.state.claim_event(long_a, now, keep) is True
    assert await svc.state.event_seen(long_b, now) is False
    assert await svc.state.claim_event(long_b, now, keep) is True


def test_the_event_key_is_the_version_and_never_truncated() -> None:
    vault = "https://kv.vault.azure.net"
    name = "ppsync-" + "a" * 300
    assert event_key(vault, name, "1" * 32) == event_key("https://KV.vault.azure.net", name.upper(), "1" * 32)
    assert event_key(vault, name, "1" * 32) != event_key(vault, name, "2" * 32)
    assert event_key(vault, name + "x", "1" * 32) != event_key(vault, name + "y", "1" * 32)


async def test_push_no_longer_answers_event_grid_handshakes(api: Api) -> None:
    handshake = [{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
                  "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
                  "eventTime": "2026-11-27T10:00:00Z", "dataVersion": "1", "metadataVersion": "1", "topic": "t"}]
    reply = await api.call("push", "POST", body=handshake)
    assert (reply.status, reply.code) == (422, "InvalidRequest")
    assert "512d38b6" not in reply.text


@pytest.fixture(autouse=True)
def _quick_verify(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    """A value that gets no token is judged within seconds, not the default two minutes."""
    world.env["VERIFY_TIMEOUT_SECONDS"] = "3"


VAULT = "https://kv-rotator-x1.vault.azure.net"
TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-rotator-x1"


def _named_event(vault_name: Any = "kv-rotator-x1", topic: str | None = TOPIC,
                 host: str = VAULT) -> func.EventGridEvent:
    data = {"Id": f"{host}/secrets/ppsync-a-b/0123456789abcdef0123456789abcdef", "ObjectType": "Secret",
            "ObjectName": "ppsync-a-b", "Version": "0123456789abcdef0123456789abcdef", "NBF": None, "EXP": None}
    if vault_name is not None:
        data["VaultName"] = vault_name
    return func.EventGridEvent(id="ev", data=data, topic=topic, subject="ppsync-a-b",  # type: ignore[arg-type]
                               event_type=NEW_VERSION, event_time=dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
                               data_version="1")


@pytest.mark.parametrize("vault_name, topic", [
    ("kv-rotator-x1", TOPIC), ("KV-Rotator-X1", TOPIC.upper()), (None, TOPIC), ("kv-rotator-x1", None),
])
def test_an_event_of_our_vault_is_ours(vault_name: Any, topic: str | None) -> None:
    assert new_version_of(_named_event(vault_name, topic), VAULT + "/") == (
        "ppsync-a-b", "0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("vault_name, topic", [
    ("kv-other", TOPIC),  # VaultName names another vault
    ("kv-rotator-x1", TOPIC.replace("kv-rotator-x1", "kv-other")),  # so does the topic
    ("kv-rotator-x1", TOPIC + "-2"),  # a vault whose name starts like ours
    ("kv-rotator-x1", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/kvrotatorx1"),
    ("", TOPIC), (17, TOPIC), (["kv-rotator-x1"], TOPIC),
])
def test_an_event_naming_another_vault_anywhere_is_not_ours(vault_name: Any, topic: str) -> None:
    assert new_version_of(_named_event(vault_name, topic), VAULT + "/") is None


def test_an_event_whose_id_names_another_vault_is_not_ours() -> None:
    other = _named_event(host="https://kv-other.vault.azure.net")
    assert new_version_of(other, VAULT + "/") is None
