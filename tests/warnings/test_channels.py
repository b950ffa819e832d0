"""Staged warnings reach people through the configured channel as every alert does: the real alert book, a Teams
Workflows post (an Adaptive Card the sandbox's Teams stand-in accepts) per threshold once, a resolved note once when
the credential is removed; passes on later days tell nothing again."""

from __future__ import annotations

import json

import pytest

from shared import bootstrap
from shared.inventory import ObjectKind
from shared.warning_pass import take_warnings
from tests.alerts.schema import assert_adaptive_card
from tests.api.conftest import Api
from tests.api.test_alerts import configure, later
from tests.rotation.conftest import World
from tests.warnings.test_api import fleet


@pytest.mark.parametrize("kind", ["teams", "slack", "json"])
async def test_a_threshold_is_posted_once_and_its_removal_resolved_once(
        api: Api, world: World, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    channel = configure(world, monkeypatch, kind)
    one, _, rows = await fleet(api, world)
    for hours in (0, 1, 25, 49):  # the same day again, then two later days
        later(monkeypatch, hours)
        async with bootstrap.services() as svc:
            await take_warnings(svc)
    titles = channel.titles()
    # 10 days left: 14; Tailspin's 5 days: 7; the managed 25-day secret is inside the rotator's lead time; by the
    # third pass the 10-day one crossed 7 too (superseding 14 without a note).
    assert sum("expiring-14d" in t for t in titles) == 1
    assert sum("expiring-7d" in t for t in titles) == 2
    assert not any("resolved" in t for t in titles)
    if kind == "teams":
        for post in channel.received():
            assert_adaptive_card(post["body"])

    backup = rows[0]
    async with bootstrap.services() as svc:
        assert svc.inventory is not None
        await svc.inventory.remove_objects(one, ObjectKind.APPLICATION, [backup.object_id])
        await take_warnings(svc)
        await take_warnings(svc)
    resolved = [t for t in channel.titles() if "resolved" in t]
    assert len(resolved) == 1 and "expiring-7d" in resolved[0] and "Fabrikam" in resolved[0]
    posted = json.dumps([r["body"] for r in channel.received()])
    assert backup.key_id in posted and backup.hint in posted  # the post names the credential it is about
