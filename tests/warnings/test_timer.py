"""The inventory timer as the host runs it, then its warnings: a sandbox tenant of many apps and service principals
(secrets, certificates, SAML signing certificates, expired ones, Microsoft first-party principals) read for real, and
exactly the credentials the rules say are due told once each; a second run tells nothing."""

from __future__ import annotations

import logging

import azure.functions.timer as timer
import pytest

from shared.bootstrap import services
from shared.expiry_warnings import DEFAULT_THRESHOLDS, judge, slot
from shared.inventory import InventoryQuery
from tests.api.conftest import Api, functions
from tests.rotation.conftest import World
from tests.rotation.test_entrypoints import register


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return sorted((r.condition, r.destination) for r in caplog.records  # type: ignore[attr-defined]
                  if getattr(r, "event", "") == "alert" and str(getattr(r, "condition", "")).startswith("expiring-"))


async def test_the_timer_warns_of_exactly_the_due_credentials_once(api: Api, world: World,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    customer = world.seed_customer("Populous", 200)
    world.sb.control.seed({"inventory": {"populations": [
        {"tenants": [customer.tenant_id], "applications": 40, "servicePrincipals": 80, "seed": "warnings"}]}})
    world.seed_accounts()
    await register(api, customer)

    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))

    async with services() as svc:
        assert svc.inventory is not None
        rows = await svc.inventory.list_credentials(InventoryQuery(tenant_id=customer.tenant_id))
        verdicts = judge(rows, DEFAULT_THRESHOLDS, [], svc.engine.clock.now(),
                         {customer.app_id: svc.settings.renew_before_days})
    due = sorted((v.holding[0], slot(v.credential)) for v in verdicts if v.warns and v.holding)
    assert due, "the population should hold credentials inside a threshold"
    assert any(r.first_party for r in rows) and any(r.expired(svc.engine.clock.now()) for r in rows)
    assert told(caplog) == due
    assert not any(v.credential.first_party for v in verdicts if v.warns)

    caplog.clear()
    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))
    assert told(caplog) == []
