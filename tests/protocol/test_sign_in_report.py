"""Entra's credential activity report beside the sign-in log, on the fakes (tests/fakes.py FakeSignInLog: the same
sign-ins rolled up daily): read only where the log is silent on an old key, at most once a day, never on a healthy
scan; it can only keep a key (a tenant that refuses the log but gives the report keeps a key the report shows used
after the push, and raises old-key-still-used), never proves the new one; the customer view's last sign-in comes from
it beyond the log, labelled so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain import ReportedSignIns, Target
from shared.registry import status_document
from shared.service import StatusPolicy, target_details
from shared.sign_in_proof import OLD_KEY_STILL_USED
from tests.fakes import FakeWorld, rotation_error
from tests.protocol.test_sign_in_evidence import NOT_LICENSED, events, live, retire_details, rotate, timer


def world_with(**config: object) -> tuple[FakeWorld, Target]:
    world = FakeWorld(evidence=True, **{"retire_grace": timedelta(hours=1), **config})
    world.destination.reports_sync.add("proofpoint")
    return world, world.seed(days_left=10)


def midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def test_a_refused_log_with_a_readable_report_keeps_an_old_key_used_after_the_push_and_alerts() -> None:
    world, target = world_with()
    world.sign_ins.refusal = NOT_LICENSED  # e.g. Directory.Read.All not consented: the log refuses, the report reads
    old = await rotate(world, target)
    assert world.sync(target, "proofpoint")
    # Something still uses the old key two days later; the report shows that day once it is over.
    world.clock.advance(timedelta(days=2))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    used_on = midnight(world.clock.now())
    world.clock.advance(timedelta(days=1))
    assert world.sync(target, "proofpoint")  # the destinations' proof alone would let the old key go
    await timer(world, target)
    assert old in live(world, target)
    [alert] = [a for a in world.alerter.raised if a.condition == OLD_KEY_STILL_USED]
    assert old in alert.message and used_on.date().isoformat() in alert.message
    assert "credential activity report" in alert.message
    row = world.row(target)
    assert row.observed.evidence_hold.startswith(OLD_KEY_STILL_USED + ":")
    shown = status_document(row)["signInEvidence"]
    assert shown["available"] is False and shown["report"]["available"] is True
    assert shown["keptKeyIds"] == [old] and row.observed.evidence_kept == (old,)
    assert {c["keyId"]: c["reportedLastSignIn"] for c in shown["credentials"]}[old] == used_on.isoformat()
    # Alerted on entering only. A daily roll-up cannot show the last day quiet: while the log is refused the key stays
    # (as a hold the log raised), until a readable log shows it quiet.
    await timer(world, target)
    assert [a.condition for a in world.alerter.raised].count(OLD_KEY_STILL_USED) == 1
    world.clock.advance(timedelta(days=3))
    await timer(world, target)
    assert old in live(world, target)
    world.sign_ins.refusal = None
    await timer(world, target)
    assert old not in live(world, target) and world.converged(target) == []
    assert world.row(target).observed.evidence_hold == ""


async def test_a_refused_log_and_a_refused_report_fall_back_to_the_destinations_as_before() -> None:
    world, target = world_with()
    world.sign_ins.refusal = NOT_LICENSED
    world.sign_ins.report_refusal = NOT_LICENSED[0]
    old = await rotate(world, target)
    world.clock.advance(timedelta(days=2))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old)  # unseen: neither record can be read
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=1))
    await timer(world, target)
    assert old not in live(world, target)
    assert world.sign_ins.report_reads >= 1 and OLD_KEY_STILL_USED not in world.alerter.conditions()
    [detail] = retire_details(world, target)
    assert "no sign-in evidence" in detail


async def test_a_report_day_inside_the_window_the_log_is_silent_on_keeps_the_key_one_before_it_does_not() -> None:
    world, target = world_with()
    old = await rotate(world, target)
    world.clock.advance(timedelta(days=2))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    pushed = min(a.at for a in world.row(target).state.acks.values())
    now = world.clock.now()
    real = world.sign_ins.credential_report

    async def lost_by_the_log(tenant_id: str, app_id: str) -> ReportedSignIns:
        await real(tenant_id, app_id)
        return ReportedSignIns(True, now, {old: midnight(now)})  # a sign-in today the log does not show

    world.sign_ins.credential_report = lost_by_the_log  # type: ignore[method-assign]
    await timer(world, target)
    assert old in live(world, target), "the report contradicts the log's silence: kept"
    assert world.row(target).observed.evidence_hold.startswith(OLD_KEY_STILL_USED + ":")

    world2, target2 = world_with()
    old2 = await rotate(world2, target2)
    world2.clock.advance(timedelta(days=2))
    assert world2.sync(target2, "proofpoint")
    world2.clock.advance(timedelta(minutes=10))

    async def before_the_window(tenant_id: str, app_id: str) -> ReportedSignIns:
        return ReportedSignIns(True, world2.clock.now(), {old2: midnight(pushed) - timedelta(days=3)})

    world2.sign_ins.credential_report = before_the_window  # type: ignore[method-assign]
    await timer(world2, target2)
    assert old2 not in live(world2, target2), "a day before the log's window: the log's word stands"


async def test_the_report_never_proves_the_new_key() -> None:
    world, target = world_with(retire_grace=timedelta(0))
    old = await rotate(world, target)
    new = world.row(target).state.current_key_id
    world.clock.advance(timedelta(hours=2))

    async def says_new_used(tenant_id: str, app_id: str) -> ReportedSignIns:
        return ReportedSignIns(True, world.clock.now(), {new: midnight(world.clock.now())})

    world.sign_ins.credential_report = says_new_used  # type: ignore[method-assign]
    await timer(world, target)
    assert old in live(world, target), "only the log's sign-in after the push proves the new key"


async def test_read_only_where_the_log_is_silent_at_most_once_a_day_never_on_a_healthy_scan() -> None:
    world, target = world_with()
    healthy = world.seed(days_left=100)
    old = await rotate(world, target)
    reads = world.sign_ins.report_reads
    assert reads == 1, "the log is silent on the old key: the report was asked"
    for _ in range(3):
        world.clock.advance(timedelta(hours=2))
        world.sign_ins.sign_in(target.tenant_id, target.app_id, old)  # the log sees it now: no need to ask
        await world.engine().run_pass()
    assert world.sign_ins.report_reads == reads
    kept = world.row(target).observed.sign_ins
    assert kept is not None and kept.reported is not None, "the last report read stays on the row, not read again"
    assert world.row(healthy).observed.sign_ins is None

    quiet_world, quiet = world_with(retire_grace=timedelta(days=3))  # the old key waits out a long grace, unused
    await rotate(quiet_world, quiet)
    assert quiet_world.sign_ins.report_reads == 1
    for _ in range(4):  # passes every 4 h: the day's roll-up is reused
        quiet_world.clock.advance(timedelta(hours=4))
        await timer(quiet_world, quiet)
    assert quiet_world.sign_ins.report_reads == 1
    quiet_world.clock.advance(timedelta(hours=5))  # 21 h after the first read
    await timer(quiet_world, quiet)
    assert quiet_world.sign_ins.report_reads == 2


async def test_a_failed_report_read_is_an_event_and_the_logs_word_stands() -> None:
    world, target = world_with()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=21))  # the report read at the rotation is a day old: read again
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=10))
    world.faults.add("sign_ins.report", rotation_error("TooManyRequests"),
                     nth=world.faults.counts["sign_ins.report"] + 1)
    await timer(world, target)
    assert any(e.step == "sign-ins" and e.outcome == "report unreadable" for e in events(world, target))
    assert old not in live(world, target)


async def test_the_customer_view_shows_the_reports_last_sign_in_beyond_the_log_labelled() -> None:
    world, target = world_with()
    # The old key last signed in 40 days ago: beyond the log's 30 days, in the report.
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, at=world.clock.now() - timedelta(days=40))
    assert await rotate(world, target) == old
    new = world.row(target).state.current_key_id
    world.clock.advance(timedelta(minutes=30))
    await timer(world, target)
    doc = await target_details(world.state, world.directory, world.secrets, target.tenant_id, target.app_id,
                               StatusPolicy(), world.clock.now())
    by_key = {c["keyId"]: c for c in doc["entra"]["credentials"]}
    assert by_key[old]["lastSignInFrom"] == "report"
    assert by_key[old]["lastSignIn"] == midnight(world.clock.now() - timedelta(days=40, minutes=30)).isoformat()
    assert by_key[new]["lastSignInFrom"] == "log" and by_key[new]["lastSignIn"] is not None  # the probe, logged


async def test_a_refused_report_is_asked_again_only_a_day_later() -> None:
    world, target = world_with(retire_grace=timedelta(days=3))
    world.sign_ins.report_refusal = NOT_LICENSED[0]
    await rotate(world, target)
    assert world.sign_ins.report_reads == 1
    for _ in range(4):
        world.clock.advance(timedelta(hours=4))
        await timer(world, target)
    assert world.sign_ins.report_reads == 1
    shown = status_document(world.row(target))["signInEvidence"]["report"]
    assert shown["available"] is False and shown["code"] == NOT_LICENSED[0]
    world.clock.advance(timedelta(hours=5))
    await timer(world, target)
    assert world.sign_ins.report_reads == 2
