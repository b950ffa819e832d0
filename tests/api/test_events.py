"""Key Vault's events through the native Event Grid trigger (`push_events`), invoked as the host invokes it: one
func.EventGridEvent per call. Replays and copies push once, unknown or malformed events are skipped, and the
old webhook handshake is gone from POST /api/push."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import azure.functions as func

from shared.domain import Actor, Stage
from shared.entrypoints.push import EVENT_SEEN_HOURS
from tests.api.conftest import Api, app_functions, functions
from tests.rotation.conftest import Rotator, World
from tests.rotation.test_push_retire import assert_delivered_everywhere, org, setup

NEW_VERSION = "Microsoft.KeyVault.SecretNewVersionCreated"


def event(name: str, event_id: str = "ev-1", *, data: Any = None, event_type: str = NEW_VERSION) -> func.EventGridEvent:
    """An event as the Functions host hands it to the trigger (Key Vault's event schema)."""
    return func.EventGridEvent(
        id=event_id,
        data=data if data is not None else {
            "Id": f"https://kv-demo.vault.azure.net/secrets/{name}/abc", "VaultName": "kv-demo",
            "ObjectType": "Secret", "ObjectName": name, "Version": "abc"},
        topic="/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-demo",
        subject=name,
        event_type=event_type,
        event_time=dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC),
        data_version="1",
    )


async def deliver(e: func.EventGridEvent) -> None:
    await functions()["push_events"](e)


def test_push_events_is_an_event_grid_trigger() -> None:
    function = next(f for f in app_functions() if f.get_function_name() == "push_events")
    (binding,) = function.get_bindings()
    assert binding.type == "eventGridTrigger"


async def verified(world: World, rotator: Rotator, name: str) -> Any:
    """A target whose first push failed: its new secret is verified and waits to be pushed."""
    due = world.seed_customer(name, 12)
    world.sb.control.add_fault("proofpoint", method="PUT", status=503, count=1)
    await setup(world, rotator, due)
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        first = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        assert first.result == "push-incomplete"
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert target.state.stage is Stage.VERIFIED
    return due, target


async def test_a_new_version_event_pushes_once_and_copies_and_replays_are_skipped(
    api: Api, world: World, rotator: Rotator
) -> None:
    due, target = await verified(world, rotator, "Evented")
    puts_before = len([r for r in world.sb.control.state()["proofpoint"].get("requests", [])])
    # 300 copies of one event, delivered concurrently as Event Grid may (at most 16 invocations at a time, as a
    # host would run them: each builds its own clients, and Azurite on a test machine resets hundreds at once).
    gate = asyncio.Semaphore(16)

    async def copy() -> None:
        async with gate:
            await deliver(event(target.secret_name, "ev-300"))

    await asyncio.gather(*(copy() for _ in range(300)))
    await assert_delivered_everywhere(world, rotator, due)
    async with rotator() as svc:
        events = await svc.state.events(due.tenant_id, due.app_id, limit=500)
    pushes = [e for e in events if e.step.startswith("push:") and e.actor == "event"]
    # The portal took the secret in the first advance; the events push Proofpoint's, once.
    assert [(e.step, e.outcome) for e in pushes] == [("push:proofpoint", "ok")]
    assert puts_before is not None
    # A later replay of the same id changes nothing either.
    settings_before = org(world, due)["settings"]
    await deliver(event(target.secret_name, "ev-300"))
    assert org(world, due)["settings"] == settings_before
    async with rotator() as svc:
        assert len(await svc.state.events(due.tenant_id, due.app_id, limit=500)) == len(events)


async def test_a_replay_after_the_expiry_is_handled_again(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime(2026, 11, 27, 10, tzinfo=dt.UTC)
    keep = dt.timedelta(hours=EVENT_SEEN_HOURS)
    assert await svc.state.claim_event("ev-x", now, keep) is True
    assert await svc.state.claim_event("ev-x", now + keep - dt.timedelta(seconds=1), keep) is False
    assert await svc.state.claim_event("ev-x", now + keep + dt.timedelta(seconds=1), keep) is True
    assert await svc.state.claim_event("ev/with#odd?chars\n", now, keep) is True


async def test_unknown_targets_and_malformed_events_are_skipped_and_never_stop_the_others(
    api: Api, world: World, rotator: Rotator
) -> None:
    due, target = await verified(world, rotator, "Batch")
    other = "ppsync-11111111-2222-4333-8444-555555555555-11111111-2222-4333-8444-555555555555"
    batch = [
        event(other, "ev-unknown"),  # a rotated secret of a target no longer registered
        event("proofpoint-api-account", "ev-other-secret"),
        event("x", "ev-string", data="not an object"),
        event("x", "ev-list", data=[1, 2]),
        event("x", "ev-validation", data={"validationCode": "abc"},
              event_type="Microsoft.EventGrid.SubscriptionValidationEvent"),
        event(target.secret_name + "\n", "ev-newline"),
        event(target.secret_name, "ev-good"),
    ]
    for e in batch:
        await deliver(e)  # each returns normally: acknowledged, nothing retried
    await assert_delivered_everywhere(world, rotator, due)


async def test_push_no_longer_answers_event_grid_handshakes(api: Api) -> None:
    handshake = [{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
                  "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
                  "eventTime": "2026-11-27T10:00:00Z", "dataVersion": "1", "metadataVersion": "1", "topic": "t"}]
    reply = await api.call("push", "POST", body=handshake)
    assert (reply.status, reply.code) == (422, "InvalidRequest")
    assert "512d38b6" not in reply.text
