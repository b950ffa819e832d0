"""One credential's state said once (shared/credential_state.py): GET /api/inventory's `state`/`stateText`, the CSV
export and the customer report agree for every state, renewed ones included (the dashboard shows the API's words,
tests/dashboard/test_credentials_browser.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from shared.credential_state import CredentialState
from shared.customer_report import lines_of, state_of
from shared.expiry_warnings import DEFAULT_THRESHOLDS, new_exclusion
from shared.inventory import ObjectKind
from shared.inventory_view import Filters, csv_row, rows
from tests.fakes import FakeInventory
from tests.warnings.test_rules import NOW, T, cred

OBJ = [f"{i}{i}{i}{i}{i}{i}{i}{i}-0000-4000-8000-000000000000" for i in range(1, 10)]


def fleet() -> list:
    expired_renewed = [cred(-3, key="k-old", app=OBJ[0]), cred(400, key="k-new", app=OBJ[0])]
    renewed = [cred(10, key="k-soon", app=OBJ[1]), cred(500, key="k-next", app=OBJ[1])]
    expired = [cred(-1, key="k-ended", app=OBJ[2])]
    due = [cred(12, key="k-due", app=OBJ[3])]
    healthy = [cred(300, key="k-far", app=OBJ[4]), cred(None, key="k-never", app=OBJ[4])]
    microsoft = [replace(cred(5, key="k-ms", app=OBJ[5], object_kind=ObjectKind.SERVICE_PRINCIPAL),
                         first_party=True)]
    rotated = [cred(-2, key="k-rot", app=OBJ[6], managed=True)]
    paused = [cred(4, key="k-paused", app=OBJ[7], managed=True)]
    snoozed = [cred(6, key="k-snoozed", app=OBJ[8])]
    return expired_renewed + renewed + expired + due + healthy + microsoft + rotated + paused + snoozed


async def test_the_api_the_export_and_the_report_say_the_same_state() -> None:
    credentials = fleet()
    snooze = new_exclusion("s", T, "app", app_id=OBJ[8], snooze=True, until=NOW + timedelta(days=9), by="ann",
                           why="vendor renews it", now=NOW)
    inventory = FakeInventory()
    for c in credentials:
        await inventory.put_objects(T, c.object_kind, {c.object_id: [x for x in credentials
                                                                     if x.object_id == c.object_id]})
    paused = {(T, OBJ[7])}
    api = {c.key_id: doc async for c, doc in rows(inventory, [T], Filters(), [snooze], {}, NOW, paused=paused)}
    report = {x.credential.key_id: x for x in lines_of(credentials, [snooze], DEFAULT_THRESHOLDS, NOW, {OBJ[7]})}
    assert set(api) == set(report) == {c.key_id for c in credentials}
    for key, line in report.items():
        assert (api[key]["state"], api[key]["stateText"]) == (line.state.value, state_of(line)), key
        assert csv_row(api[key])["stateText"] == state_of(line)
    said = {key: doc["stateText"] for key, doc in api.items()}
    assert said["k-old"] == "expired, renewed" and said["k-soon"] == "renewed" and said["k-ended"] == "expired"
    assert said["k-due"] == "within 14 d" and said["k-far"] == said["k-never"] == "ok"
    assert said["k-ms"] == "Microsoft's" and said["k-rot"] == "managed by the rotator"
    assert said["k-paused"] == "rotation disabled" and said["k-snoozed"] == "snooze (vendor renews it)"
    assert {doc["state"] for doc in api.values()} == {s.value for s in CredentialState} - {"excluded"}
