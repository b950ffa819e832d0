"""What a customer tenant's own rules do to the protocol (issue 9): an app the rotator reads but does not own, an
app-management policy that blocks secrets or caps their lifetime, a newer secret someone else made."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import Actor, Stage
from shared.errors import NotOwner
from tests.fakes import ROTATOR, FakeWorld

BLOCKED = "Credential type not allowed as per assigned policy."


async def test_an_app_the_rotator_does_not_own_is_not_owner_before_any_write() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.directory.unowned.add((target.tenant_id, target.app_id))
    before = world.directory.app(target.tenant_id, target.app_id).credentials
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert (outcome.result, outcome.status, outcome.error_code) == ("not-owner", "not-owner", "NotOwner")
    row = world.row(target)
    assert row.state.stage is Stage.IDLE and row.state.rotation_id == "", "no rotation reserved"
    assert row.observed.status == "not-owner" and ROTATOR.object_id in row.observed.error_message
    assert row.observed.days_left == 10 and row.observed.expires is not None, "how soon an admin must act"
    assert world.faults.counts["directory.add_password"] == 0 and world.secrets.of(target) == []
    assert world.directory.app(target.tenant_id, target.app_id).credentials == before
    [alert] = [a for a in world.alerter.raised if a.condition == "not-owner"]
    assert alert.details["owner_to_add"] == ROTATOR.object_id and ROTATOR.display_name in alert.message
    preview = await world.engine().rotate_now(target.tenant_id, target.app_id, dry_run=True)
    assert (preview.result, preview.status, preview.days_left) == ("would-fail", "not-owner", 10)
    assert ROTATOR.object_id in preview.message


async def test_ownership_lost_between_assessment_and_write_ends_the_rotation_as_not_owner() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("directory.add_password", lambda: NotOwner("Insufficient privileges", code="NotOwner"))
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert (outcome.result, outcome.status) == ("not-owner", "not-owner"), outcome
    row = world.row(target)
    assert row.state.stage is Stage.IDLE and row.state.rotation_id == ""
    assert row.observed.last_outcome == "failed: NotOwner" and "Insufficient privileges" in row.observed.error_message
    assert "not-owner" in world.alerter.conditions() and world.secrets.of(target) == []


async def test_a_policy_that_blocks_secrets_is_policy_blocked_with_its_message_and_nothing_created() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.directory.blocked[(target.tenant_id, target.app_id)] = BLOCKED
    before = world.directory.app(target.tenant_id, target.app_id).credentials
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert (outcome.result, outcome.status) == ("policy-blocked", "policy-blocked"), outcome
    assert outcome.error_code == "CredentialTypeNotAllowedAsPerAppPolicy"
    row = world.row(target)
    assert row.state.stage is Stage.IDLE and row.state.rotation_id == ""
    assert row.observed.status == "policy-blocked" and BLOCKED in row.observed.error_message
    assert world.directory.app(target.tenant_id, target.app_id).credentials == before
    assert world.secrets.of(target) == []
    [alert] = [a for a in world.alerter.raised if a.condition == "policy-blocked"]
    assert BLOCKED in alert.message
    preview = await world.engine().rotate_now(target.tenant_id, target.app_id, dry_run=True)
    assert (preview.result, preview.status) == ("would-fail", "policy-blocked") and BLOCKED in preview.message


async def test_a_refused_lifetime_is_retried_at_once_shorter_recorded_and_alerted() -> None:
    world = FakeWorld(lifetime_days=180, renew_before_days=30)
    target = world.seed(days_left=10)
    world.directory.max_lifetime[(target.tenant_id, target.app_id)] = timedelta(days=100)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    assert world.converged(target) == []
    assert world.faults.counts["directory.add_password"] == 2, "180 refused, then 90 at once"
    row = world.row(target)
    new = next(c for c in world.directory.live(target.tenant_id, target.app_id) if c.key_id == row.state.current_key_id)
    assert new.end - world.clock.now() == timedelta(days=90)
    assert row.observed.lifetime_cap_days == 90 and row.observed.days_left == 90
    [alert] = [a for a in world.alerter.raised if a.condition == "lifetime-capped"]
    assert (alert.details["asked_days"], alert.details["made_days"]) == ("180", "90")
    preview = await world.engine().rotate_now(target.tenant_id, target.app_id, force=True, dry_run=True)
    assert preview.result == "would-rotate" and "expect 90 days" in preview.message


async def test_a_policy_allowing_no_lifetime_beyond_the_renew_window_is_policy_blocked() -> None:
    world = FakeWorld(lifetime_days=180, renew_before_days=30)
    target = world.seed(days_left=10)
    world.directory.max_lifetime[(target.tenant_id, target.app_id)] = timedelta(days=20)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert (outcome.result, outcome.status) == ("policy-blocked", "policy-blocked"), outcome
    assert outcome.error_code == "CredentialInvalidLifetimeAsPerAppPolicy"
    # 180, 90, 60 refused; 30 and shorter would be due as soon as made (renew window 30 days + 7).
    assert world.faults.counts["directory.add_password"] == 3
    assert len(world.directory.app(target.tenant_id, target.app_id).credentials) == 1, "nothing created"
    assert world.row(target).state.stage is Stage.IDLE and world.secrets.of(target) == []
    assert "policy-blocked" in world.alerter.conditions()


async def test_a_newer_secret_made_elsewhere_is_kept_reported_and_not_fought() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    ours = world.row(target).state.current_key_id
    world.clock.advance(timedelta(days=1))
    fix = world.directory.add_foreign(target.tenant_id, target.app_id, days_left=700)
    for _ in range(2):
        world.clock.advance(timedelta(days=1))
        outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
        assert (outcome.result, outcome.status) == ("foreign-credential", "foreign-credential"), outcome
    row = world.row(target)
    assert row.observed.error_code == "ForeignCredential" and fix.key_id in row.observed.error_message
    assert row.observed.days_left == 698, "the foreign secret's expiry decides"
    assert row.state.stage is Stage.IDLE and world.faults.counts["directory.add_password"] == 1
    assert {fix.key_id, ours} <= set(world.live_values(target)), "neither secret is removed"
    alert = next(a for a in world.alerter.raised if a.condition == "foreign-credential")
    assert alert.details["key_id"] == fix.key_id
    preview = await world.engine().rotate_now(target.tenant_id, target.app_id, force=True, dry_run=True)
    assert fix.key_id in preview.message
