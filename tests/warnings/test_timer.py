"""The inventory timer as the host runs it, then its warnings: a sandbox tenant of many apps and service principals
(secrets, certificates, SAML signing certificates, expired ones, Microsoft first-party principals) read for real, and
exactly the credentials the rules say are due told once each; a second run tells nothing."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import azure.functions.timer as timer
import pytest

from sandbox.inventory import MICROSOFT_TENANT, Population, generated_service_principal
from shared import bootstrap
from shared.bootstrap import services
from shared.expiry_warnings import DEFAULT_THRESHOLDS, judge, slot
from shared.inventory import InventoryQuery
from tests.api.conftest import Api, functions
from tests.rotation.conftest import World
from tests.rotation.test_entrypoints import register


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return sorted((r.condition, r.destination) for r in caplog.records  # type: ignore[attr-defined]
                  if getattr(r, "event", "") == "alert" and str(getattr(r, "condition", "")).startswith("expiring-"))


def seed_with_microsoft_credentials(tenant_id: str, service_principals: int) -> str:
    """A population seed whose draw, for this (random) tenant id, holds a Microsoft first-party principal with a
    credential of its own: about one draw in twelve holds none, and the test must not depend on the draw."""
    epoch = datetime.now(UTC)
    for attempt in range(100):
        seed = f"warnings-{attempt}"
        pop = Population(seed, 0, service_principals, epoch)
        if any(sp["appOwnerOrganizationId"] == MICROSOFT_TENANT and sp["keyCredentials"]
               for sp in (generated_service_principal(tenant_id, pop, i) for i in range(service_principals))):
            return seed
    raise AssertionError("no seed gives a Microsoft principal with a credential")


class Frozen:
    """One instant for the pass and for the expectation: a credential crossing a day boundary between the two
    would otherwise make them disagree."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


async def test_the_timer_warns_of_exactly_the_due_credentials_once(api: Api, world: World,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    clock = Frozen()
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", clock)
    customer = world.seed_customer("Populous", 200)
    # The generated population varies with the (random) tenant id, so one app is seeded with a secret surely inside
    # a threshold and one already expired: the test must not depend on the draw (it once drew none inside).
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "applications": [
        {"appId": "b4c6b4c6-0000-4000-8000-00000000b4c7", "displayName": "Backup connector", "passwordCredentials": [
            {"keyId": "b4c6b4c6-0000-4000-8000-0000000000e2", "displayName": "nightly", "endDateTime": "+9d",
             "secretText": secrets.token_urlsafe(30)},
            {"keyId": "b4c6b4c6-0000-4000-8000-0000000000e3", "displayName": "old", "endDateTime": "-3d",
             "secretText": secrets.token_urlsafe(30)}]}]}],
        "inventory": {"populations": [
            {"tenants": [customer.tenant_id], "applications": 40, "servicePrincipals": 80,
             "seed": seed_with_microsoft_credentials(customer.tenant_id, 80)}]}})
    world.seed_accounts()
    await register(api, customer)

    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))

    async with services() as svc:
        assert svc.inventory is not None
        rows = await svc.inventory.list_credentials(InventoryQuery(tenant_id=customer.tenant_id))
        assert svc.engine.clock.now() == clock.at
        verdicts = judge(rows, DEFAULT_THRESHOLDS, [], clock.at,
                         {customer.app_id: svc.settings.renew_before_days})
    due = sorted((v.holding[0], slot(v.credential)) for v in verdicts if v.warns and v.holding)
    assert due, "the population should hold credentials inside a threshold"
    assert any(r.first_party for r in rows) and any(r.expired(clock.at) for r in rows)
    assert told(caplog) == due
    assert not any(v.credential.first_party for v in verdicts if v.warns)

    caplog.clear()
    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))
    assert told(caplog) == []
