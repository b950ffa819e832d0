"""Drift at assessment, end to end: the real Proofpoint adapter reads the sandbox org's settings, the real Graph
adapter the app, and each case ends as an MSP engineer needs it (an alert naming what differs, the row showing it,
the status document and the open alerts; or a newer key Proofpoint uses adopted, and one it does not use not)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor
from shared.drift import DRIFT_CHECK_DAYS
from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts
from tests.rotation.conftest import Customer, Rotator, World, customer_seed, random_secret
from tests.rotation.test_push_retire import destinations

ROTATION = "0123456789abcdef0123456789abcdef"


def seed(world: World, name: str, *, credentials: list[dict[str, Any]], held: str, expiry: str | None,
         app_id: str | None = None, sign_in_log: bool = False, **shown: Any) -> Customer:
    """A customer whose app has `credentials` and whose Proofpoint org holds the value of key `held`, showing
    `expiry` as its secret_expiry (None: not shown) and `app_id` as its application (default: the customer's)."""
    customer, doc = customer_seed(name, None)
    app = doc["tenants"][0]["applications"][0]
    app["passwordCredentials"] = credentials
    if sign_in_log:  # the tenant lets the rotator read its sign-in log (docs/evidence.md)
        doc["tenants"][0]["entraIdLicense"] = "P1"
        doc["tenants"][0]["grants"][0]["roles"] += ["AuditLog.Read.All", "Directory.Read.All"]
    value = next(c["secretText"] for c in credentials if c["keyId"] == held)
    customer.key_id, customer.secret = held, value
    org = doc["proofpoint"]["orgs"][0]
    org["settings"] = {"application_id": app_id or customer.app_id, "ad_key": value}
    org["extraFields"] = {"last_successful_sync": "-2h", "last_sync_status": "success"}
    if expiry is not None:
        org["extraFields"]["secret_expiry"] = expiry
    org["nextSync"] = "+20h"  # its next sync is after this test's pass
    org.update(shown)  # expiryFormat, expiryOffsetHours
    world.sb.control.seed(doc)
    return customer


def credential(display: str, start: str, end: str) -> dict[str, Any]:
    return {"keyId": str(uuid.uuid4()), "displayName": display, "secretText": random_secret(),
            "startDateTime": start, "endDateTime": end}


async def register(world: World, rotator: Rotator, customer: Customer, current_key_id: str = "") -> None:
    """Registered as after earlier passes: last read for drift more than a period ago (so this pass reads it)."""
    async with rotator() as svc:
        target = customer.target(destinations(world, customer)).with_state(current_key_id=current_key_id)
        await svc.state.create_target(target.with_observed(
            drift_checked_at=datetime.now(UTC) - timedelta(days=DRIFT_CHECK_DAYS + 2)))


def drift_alerts(alerter: LogAlerter, customer: Customer) -> list[str]:
    return [a.message for a in alerter.raised if a.condition == "proofpoint-drift" and a.app_id == customer.app_id]


async def test_each_kind_of_drift_is_found_alerted_and_shown(
    world: World, rotator: Rotator, caplog: pytest.LogCaptureFixture
) -> None:
    world.seed_accounts()
    made: dict[str, tuple[Customer, str]] = {}
    for name, other_app, expiry_of in [
        ("Healthy", None, "mine"), ("OtherApp", str(uuid.uuid4()), "mine"), ("Unknown", None, "+100d"),
        ("HandPasted", None, "hand"),
    ]:
        m = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
        h = credential("created by hand", "-300d", "+60d")
        expiry = {"mine": "+150d", "hand": "+60d"}.get(expiry_of, expiry_of)
        held = h["keyId"] if expiry_of == "hand" else m["keyId"]
        c = seed(world, name, credentials=[m, h], held=held, expiry=expiry, app_id=other_app)
        made[name] = (c, m["keyId"])
        await register(world, rotator, c, current_key_id=m["keyId"])
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        rows = {name: (await svc.state.get_target(c.tenant_id, c.app_id))[0] for name, (c, _) in made.items()}
    now = datetime.now(UTC)

    healthy, mine_key = made["Healthy"][0], made["Healthy"][1]
    assert rows["Healthy"].observed.status == "healthy" and rows["Healthy"].observed.drift == {}
    assert rows["Healthy"].observed.uses == {"proofpoint": mine_key}
    assert drift_alerts(alerter, healthy) == []
    assert "proofpoint-drift" not in open_alerts(rows["Healthy"], StatusPolicy(), now)

    [other] = drift_alerts(alerter, made["OtherApp"][0])
    assert "uses application" in other and made["OtherApp"][0].app_id in other
    [unknown] = drift_alerts(alerter, made["Unknown"][0])
    assert "matches no credential" in unknown
    [pasted] = drift_alerts(alerter, made["HandPasted"][0])
    assert made["HandPasted"][0].key_id in pasted and "did not make" in pasted
    for name in ("OtherApp", "Unknown", "HandPasted"):
        row = rows[name]
        assert row.observed.status == "healthy", "drift changes nothing on the app: a human decides"
        assert set(row.observed.drift) == {"proofpoint"}
        assert "proofpoint-drift" in open_alerts(row, StatusPolicy(), now)
        [pp] = [d for d in status_document(row)["destinations"] if d["name"] == "proofpoint"]
        assert pp["drift"] == row.observed.drift["proofpoint"]
        assert len(world.credentials(made[name][0])) == 2, "nothing removed, nothing added"
    for message in (other, unknown, pasted):
        assert all(c.secret not in message for c, _ in made.values())
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "proofpoint-drift" in logged
    for c, _ in made.values():
        assert c.secret not in logged and world.proofpoint_password not in logged
    for row in rows.values():
        assert all(c.secret not in repr(row) for c, _ in made.values()), "nor in the state store"

    # The next pass of the same day reads nothing from Proofpoint, and the drift stays shown.
    async with rotator(alerter=LogAlerter()) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        again, _ = await svc.state.get_target(made["Unknown"][0].tenant_id, made["Unknown"][0].app_id)
    assert again.observed.drift == rows["Unknown"].observed.drift
    assert again.observed.drift_checked_at == rows["Unknown"].observed.drift_checked_at


async def test_a_newer_key_proofpoint_uses_is_adopted_and_one_it_does_not_use_is_not(
    world: World, rotator: Rotator
) -> None:
    world.seed_accounts()
    outcomes = {}
    for name, proofpoint_holds in (("Adopted", "fix"), ("NotAdopted", "mine")):
        mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
        fix = credential("Vircom Portal FIX", "-1d", "+700d")
        held = fix if proofpoint_holds == "fix" else mine
        c = seed(world, name, credentials=[mine, fix], held=held["keyId"],
                 expiry="+700d" if proofpoint_holds == "fix" else "+150d")
        await register(world, rotator, c, current_key_id=mine["keyId"])
        outcomes[name] = (c, mine["keyId"], fix["keyId"])
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        rows = {n: (await svc.state.get_target(c.tenant_id, c.app_id))[0] for n, (c, _, _) in outcomes.items()}

    adopted, mine_key, fix_key = outcomes["Adopted"]
    row = rows["Adopted"]
    assert row.observed.status == "foreign-credential" and row.observed.drift == {}
    assert row.observed.uses == {"proofpoint": fix_key} and row.observed.days_left is not None
    assert row.observed.days_left >= 698, "the adopted key's expiry decides the next rotation"
    assert {k["keyId"] for k in world.credentials(adopted)} == {mine_key, fix_key}, "never removed"
    assert [a.condition for a in alerter.raised if a.app_id == adopted.app_id] == ["foreign-credential"]

    not_adopted, mine_key, fix_key = outcomes["NotAdopted"]
    row = rows["NotAdopted"]
    assert row.observed.status == "healthy", "Proofpoint uses the rotator's key: the other one is not adopted"
    assert row.observed.uses == {"proofpoint": mine_key} and 148 <= (row.observed.days_left or 0) <= 150
    assert [a.condition for a in alerter.raised if a.app_id == not_adopted.app_id] == []


FORMATS = [("iso", 0), ("date", 0), ("date", 14), ("date", -12), ("local", 0), ("local", 9.5), ("local", -8),
           ("offset", 5.75), ("offset", -3), ("basic", 0), ("epoch", 0), ("us", -5), ("us", 10), ("dmy", 1),
           ("dmy", -12)]


async def test_no_false_drift_however_proofpoint_writes_the_expiry(world: World, rotator: Rotator) -> None:
    """A healthy target whose Proofpoint org writes secret_expiry as a date, a local time or with an offset, in zones
    from UTC-12 to UTC+14 (the date itself differs by zone): no drift, and the key
    Proofpoint uses is identified."""
    world.seed_accounts()
    made = []
    for n, (shape, hours) in enumerate(FORMATS):
        mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+3623h")
        # A hand-made key ending two days later: near enough to tempt a loose comparison, far enough for a strict one.
        other = credential("created by hand", "-300d", "+3671h")
        c = seed(world, f"Format{n}", credentials=[mine, other], held=mine["keyId"], expiry="+3623h",
                 expiryFormat=shape, expiryOffsetHours=hours)
        await register(world, rotator, c, current_key_id=mine["keyId"])
        made.append((c, mine["keyId"], shape, hours))
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        for c, key_id, shape, hours in made:
            row, _ = await svc.state.get_target(c.tenant_id, c.app_id)
            assert row.observed.drift == {}, (shape, hours, row.observed.drift)
            assert row.observed.uses == {"proofpoint": key_id}, (shape, hours)
    assert [a.condition for a in alerter.raised] == []


async def test_a_rotation_is_no_drift_before_or_after_proofpoints_sync(world: World, rotator: Rotator) -> None:
    """Right after a push Proofpoint still reports the replaced key's expiry until its own sync runs: not drift;
    after the sync it reports the new key's, which it is then seen to use."""
    world.seed_accounts()
    hand = credential("created by hand", "-300d", "+12d")
    due = seed(world, "Rotated", credentials=[hand], held=hand["keyId"], expiry="+12d")
    async with rotator() as svc:
        await svc.state.create_target(due.target(destinations(world, due)))
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await svc.engine.run_pass(Actor.TIMER)  # rotates (a due target is not read for drift: the push reads it)
        await svc.engine.run_pass(Actor.TIMER)  # its first check: Proofpoint has not synced since the push
        row, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert row.observed.last_outcome == "rotated" and row.observed.drift_checked_at is not None
    assert row.observed.drift == {} and row.observed.uses == {}, "expected before its sync, and no proof of use"
    assert "proofpoint-drift" not in [a.condition for a in alerter.raised]

    later = timedelta(hours=25)  # Proofpoint's daily sync ran with the new key, and a period passed for the check
    world.sb.control.set_clock(later.total_seconds())
    async with rotator(later) as svc:
        target = row.with_observed(drift_checked_at=datetime.now(UTC) - timedelta(days=DRIFT_CHECK_DAYS + 2))
        _, etag = await svc.state.get_target(due.tenant_id, due.app_id)
        await svc.state.replace_target(target, etag)
        await svc.engine.run_pass(Actor.TIMER)
        row, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert row.observed.drift == {}
    assert row.observed.uses == {"proofpoint": row.state.current_key_id} != {"proofpoint": hand["keyId"]}


async def test_where_the_sign_in_log_can_say_a_newer_key_is_adopted_only_once_it_signed_in(
    world: World, rotator: Rotator
) -> None:
    """Proofpoint's expiry names a newer key someone else made: in a tenant whose sign-in log the rotator may read,
    it is adopted only when that key has signed in (here by Proofpoint's own sync an hour ago); one that never
    signed in is not adopted yet (the rotator's key still decides) and is looked at again the next day."""
    world.seed_accounts()
    made = {}
    for name, synced in (("SignedIn", True), ("NeverSignedIn", False)):
        mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
        fix = credential("Vircom Portal FIX", "-2d", "+700d")
        c = seed(world, name, credentials=[mine, fix], held=fix["keyId"], expiry="+700d", sign_in_log=True,
                 nextSync="-1h" if synced else "+20h")
        await register(world, rotator, c, current_key_id=mine["keyId"])
        made[name] = (c, mine["keyId"], fix["keyId"])
    async with rotator(alerter=LogAlerter()) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        rows = {n: (await svc.state.get_target(c.tenant_id, c.app_id))[0] for n, (c, _, _) in made.items()}
        events = {n: await svc.state.events(c.tenant_id, c.app_id) for n, (c, _, _) in made.items()}

    _, _, fix_key = made["SignedIn"]
    assert rows["SignedIn"].observed.status == "foreign-credential"
    assert rows["SignedIn"].observed.uses == {"proofpoint": fix_key}
    [adopted] = [e for e in events["SignedIn"] if e.step == "drift-check" and e.outcome == "adopted"]
    assert fix_key in adopted.detail and "signed in at" in adopted.detail

    _, _, fix_key = made["NeverSignedIn"]
    row = rows["NeverSignedIn"]
    assert row.observed.status == "healthy" and 148 <= (row.observed.days_left or 0) <= 150
    assert row.observed.uses == {} and row.observed.drift == {}
    [waiting] = [e for e in events["NeverSignedIn"] if e.step == "drift-check" and e.outcome == "not-adopted"]
    assert fix_key in waiting.detail


async def test_the_command_line_says_drift_and_exits_2(world: World, rotator: Rotator) -> None:
    world.seed_accounts()
    mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
    c = seed(world, "Elsewhere", credentials=[mine], held=mine["keyId"], expiry="+150d", app_id=str(uuid.uuid4()))
    await register(world, rotator, c, current_key_id=mine["keyId"])
    check = world.cli("check")
    assert check.wait(timeout=120) == 2, check.output()
    assert "drift between Proofpoint and Entra ID (proofpoint-drift): Elsewhere" in check.output()
    status = world.cli("status")
    assert status.wait(timeout=60) == 0
    assert "healthy (drift)" in status.output()


async def test_a_newer_key_not_adopted_yet_is_looked_at_the_next_day_and_adopted_once_it_signed_in(
    world: World, rotator: Rotator
) -> None:
    world.seed_accounts()
    mine = credential(f"sync-secret-rotator rotation {ROTATION}", "-30d", "+150d")
    fix = credential("Vircom Portal FIX", "-2d", "+700d")
    c = seed(world, "LaterSignIn", credentials=[mine, fix], held=fix["keyId"], expiry="+700d", sign_in_log=True,
             nextSync="+20h")
    await register(world, rotator, c, current_key_id=mine["keyId"])
    async with rotator() as svc:
        await svc.engine.run_pass(Actor.TIMER)
        first, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert first.observed.status == "healthy" and first.observed.uses == {}

    later = timedelta(hours=25)  # Proofpoint's sync at +20 h signed in with the FIX key; a day since the check
    world.sb.control.set_clock(later.total_seconds())
    async with rotator(later) as svc:
        await svc.engine.run_pass(Actor.TIMER)
        row, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert row.observed.status == "foreign-credential"
    assert row.observed.uses == {"proofpoint": fix["keyId"]}
    assert row.observed.drift_checked_at is not None and first.observed.drift_checked_at is not None
    assert row.observed.drift_checked_at > first.observed.drift_checked_at


async def test_a_replaced_key_pasted_back_into_proofpoint_is_drift_and_never_retired(
    world: World, rotator: Rotator
) -> None:
    """After a push, someone pastes the old key back into Proofpoint, whose next sync then succeeds with it (the
    sync proof alone would let the old key go). Its secret_expiry names the old key after that sync: drift, and the
    key Proofpoint uses is kept (a free tenant: no sign-in log to tell)."""
    import requests

    world.seed_accounts()
    hand = credential("created by hand", "-300d", "+12d")
    due = seed(world, "PastedBack", credentials=[hand], held=hand["keyId"], expiry="+12d")
    async with rotator() as svc:
        # Read for drift just before (its regular check is a period away): the replaced key must be watched anyway.
        await svc.state.create_target(due.target(destinations(world, due)).with_observed(
            drift_checked_at=datetime.now(UTC)))
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)  # rotated; the old key waits for Proofpoint's sync
    async with rotator(timedelta(hours=1), RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)  # before Proofpoint's sync: the replaced key is expected there
        early, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert early.observed.drift == {} and early.observed.uses == {}
    settings_url = f"{world.sb.endpoints['proofpoint']}/{due.stack}/api/v1/orgs/{due.domain}/settings/azure"
    pasted = await asyncio.to_thread(
        requests.put, settings_url, json={"ad_key": hand["secretText"]}, verify=world.sb.ca_file, timeout=10,
        headers={"X-User": world.proofpoint_user, "X-Password": world.proofpoint_password})
    assert pasted.status_code == 200, pasted.text

    later = timedelta(hours=25)  # Proofpoint's sync ran, with the old key
    world.sb.control.set_clock(later.total_seconds())
    alerter = LogAlerter()
    async with rotator(later, alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
        row, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert hand["keyId"] in [k["keyId"] for k in world.credentials(due)], "the key Proofpoint uses stays"
    assert row.observed.uses == {"proofpoint": hand["keyId"]}
    assert "replaced" in row.observed.drift["proofpoint"]
    assert "proofpoint-drift" in [a.condition for a in alerter.raised]
