"""The rotator's own verify probe is known in Entra's sign-in log by its request id, not by time (issue 24), end to
end: the real SDKs over HTTPS against the sandbox (whose Entra keeps a token request's `client-request-id` as the
sign-in's correlationId), Azurite for the state. A portal-only target has no destination that signs in itself, so
the probe is the only sign-in with the new key until someone really uses it: exactly where a probe mistaken for use
would let the old key go unproven."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.domain import Actor, DestinationConfig, Stage
from shared.service import StatusPolicy, target_details
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import PORTAL_PATH
from tests.rotation.test_sign_in_evidence import licensed, live_key_ids, run_pass

LATE = 600.0  # Entra stamps the probe 10 minutes later than the rotator's clock (skew, a slow retry)
HOUR = timedelta(hours=1)


async def portal_only(world: World, rotator: Rotator, name: str) -> Customer:
    due = licensed(world, name)
    world.sb.control.set_sign_in_delay(0)
    world.seed_accounts()
    portal = DestinationConfig("vircom-portal", "http",
                               {"preset": "vircom-portal", "url": world.sb.endpoints["portal"] + PORTAL_PATH})
    async with rotator() as svc:
        await svc.state.create_target(due.target((portal,)))
    return due


async def rotate(world: World, rotator: Rotator, due: Customer, sandbox_ahead: float = 0.0) -> tuple[str, str]:
    """One pass that rotates (the sandbox's clock `sandbox_ahead` seconds ahead): the new key id and its secret."""
    world.sb.control.set_clock(sandbox_ahead)
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        assert target.state.stage is Stage.IDLE and target.observed.last_outcome == "rotated"
        secret = await svc.secrets.value(target, target.state.current_version)
    return target.state.current_key_id, secret.reveal()


async def details(rotator: Rotator, due: Customer, at: timedelta) -> dict[str, Any]:
    async with rotator(at) as svc:
        doc = await target_details(svc.state, svc.directory, svc.secrets, due.tenant_id, due.app_id, StatusPolicy(),
                                   svc.engine.clock.now())
    return {c["keyId"]: c for c in doc["entra"]["credentials"]}


def probe_rows(world: World, due: Customer, key_id: str) -> list[dict[str, Any]]:
    return [r for r in world.sb.control.sign_ins(due.tenant_id)
            if r["keyId"] == key_id and r["errorCode"] == 0 and r["ipAddress"] == "127.0.0.1"]


async def test_a_probe_stamped_ten_minutes_late_is_not_use_and_another_clients_sign_in_is(
    world: World, rotator: Rotator
) -> None:
    due = await portal_only(world, rotator, "LateProbe")
    new, secret = await rotate(world, rotator, due, sandbox_ahead=LATE)
    async with rotator() as svc:
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    probe_id = target.state.probes[new]
    [probe] = probe_rows(world, due, new)
    assert probe["correlationId"] == probe_id  # the log names the probe by the id the row recorded
    # An hour on (past the grace and the sync window's first hour), the late-stamped probe is the new key's only
    # sign-in: no proof, the old key stays (by time alone it counted: 10 min > the 5 min cut-off).
    await run_pass(world, rotator, HOUR)
    assert due.key_id in live_key_ids(world, due)
    view = await details(rotator, due, HOUR)
    assert view[new]["firstSignInBy"] == "rotator-probe" and view[new]["firstSignIn"] is not None
    # Someone else (Proofpoint's address) signs in with the new key: that is use, and the old key goes.
    world.sb.control.set_clock(HOUR.total_seconds() + 60)
    assert world.sb.control.sign_in(due.tenant_id, due.app_id, secret, ip_address="198.51.100.25") is None
    await run_pass(world, rotator, HOUR + timedelta(minutes=2))
    assert live_key_ids(world, due) == {new}
    view = await details(rotator, due, HOUR + timedelta(minutes=2))
    assert view[new]["firstSignInBy"] == "rotator-probe" and view[new]["lastSignInIp"] == "198.51.100.25"


async def test_a_probe_re_run_after_an_interrupted_verify_sends_the_same_id_and_never_counts(
    world: World, rotator: Rotator
) -> None:
    due = await portal_only(world, rotator, "Resumed")
    control = world.sb.control
    # Entra issues the probe's token (a sign-in is logged) but the answer is lost: the pass ends in `pending`.
    control.add_fault("entra", method="POST", path="/oauth2/v2.0/token", status=500, count=None, when="after",
                      client_id=due.app_id)
    control.set_clock(LATE)
    async with rotator(VERIFY_TIMEOUT_SECONDS="1") as svc:
        await svc.engine.run_pass(Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert target.state.stage is Stage.PENDING
    pending_key = target.state.new_key_id
    first_tries = probe_rows(world, due, pending_key)
    assert first_tries, "the interrupted probe is in the log"
    control.clear_faults()
    new, _ = await rotate(world, rotator, due, sandbox_ahead=LATE + 30)  # the resumed pass probes again
    assert new == pending_key
    tries = probe_rows(world, due, new)
    async with rotator() as svc:
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert len(tries) > len(first_tries)
    assert {r["correlationId"] for r in tries} == {target.state.probes[new]}
    await run_pass(world, rotator, HOUR)
    assert due.key_id in live_key_ids(world, due), "no probe of the resumed rotation counts as use"


async def test_a_row_rotated_before_probe_ids_falls_back_to_the_time_cut_off(world: World, rotator: Rotator) -> None:
    due = await portal_only(world, rotator, "OldRow")
    new, secret = await rotate(world, rotator, due)
    async with rotator() as svc:
        target, etag = await svc.state.get_target(due.tenant_id, due.app_id)
        # The row as a rotator before this change wrote it: no probe ids.
        await svc.state.replace_target(target.with_state(probes={}), etag)
        rows = await svc.state.all_rows()
    assert not any("Probes" in r for r in rows if r.get("RowKey") == due.app_id)
    await run_pass(world, rotator, HOUR)
    assert due.key_id in live_key_ids(world, due), "the probe, seconds before the push, is not use by time either"
    view = await details(rotator, due, HOUR)
    assert view[new]["firstSignInBy"] == "rotator-probe"  # by time: within 5 minutes of the push
    world.sb.control.set_clock(HOUR.total_seconds() + 60)
    assert world.sb.control.sign_in(due.tenant_id, due.app_id, secret, ip_address="198.51.100.25") is None
    await run_pass(world, rotator, HOUR + timedelta(minutes=2))
    assert live_key_ids(world, due) == {new}
