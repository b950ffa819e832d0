"""Offboarding on the fakes (shared/offboarding.py): each option, a rotation in flight at every stage (compensated or
kept, never a live credential whose value nobody holds), the lease, retention and its sweep, audit with who, and no
secret in anything it says."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from shared import partner_roles
from shared.domain import Actor, Stage, Target, VersionStage
from shared.errors import Conflict, NotFound, PartnerRefused, Unreachable
from shared.offboarding import Offboarded, OffboardOptions, OffboardPorts, offboard, sweep_retention
from shared.ports import GdapCustomer, PartnerAdmin
from tests.fakes import ROTATOR, Crash, FakeRetention, FakeWorld

ADMIN = PartnerAdmin("5a1d0000-0000-4000-8000-000000000001", "5a1d0000-0000-4000-8000-000000000040",
                     "partner-admin@msp.example", "Partner Admin")


@dataclass
class FakePartner:
    """A partner admin's GDAP session, as far as offboarding uses it: its GDAP customers (the tenants in
    `relationships`, the installed ones by default, each with `roles`) and remove_app."""

    installed: set[str]
    refuse: PartnerRefused | None = None
    admin: PartnerAdmin = ADMIN
    roles: frozenset[str] = frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR})
    relationships: set[str] | None = None

    async def customers(self) -> list[GdapCustomer]:
        tenants = self.installed if self.relationships is None else self.relationships
        return [GdapCustomer(t, "Contoso", ("rel-1",), self.roles) for t in sorted(tenants)]

    async def remove_app(self, tenant_id: str) -> bool:
        if self.refuse is not None:
            raise self.refuse
        if tenant_id not in self.installed:
            return False
        self.installed.discard(tenant_id)
        return True


def ports(world: FakeWorld, partner: FakePartner | None = None) -> tuple[OffboardPorts, FakeRetention]:
    retention = getattr(world, "retention", None) or FakeRetention(world.faults, world.secrets)
    world.retention = retention  # type: ignore[attr-defined]
    return OffboardPorts(world.state, world.directory, world.secrets, retention, world.clock.now,
                         "c11e0000-0000-4000-8000-000000000001", partner), retention  # type: ignore[arg-type]


async def go(world: FakeWorld, target: Target, options: OffboardOptions | None = None,
             partner: FakePartner | None = None, who: str = "alice@msp.example") -> Offboarded:
    p, _ = ports(world, partner)
    return await offboard(p, target.tenant_id, target.app_id, options or OffboardOptions(), retention_days=90,
                          actor=who)


def unsafe_credentials(world: FakeWorld, target: Target) -> list[str]:
    """Live credentials the rotator made whose value is not in Key Vault (invariant 1)."""
    stored = {v.key_id: v.value for v in world.secrets.of(target)}
    return [c.key_id for c in world.directory.live(target.tenant_id, target.app_id)
            if c.rotation_id and stored.get(c.key_id) != world.directory.values[c.key_id].secret]


def said(world: FakeWorld, result: object) -> str:
    return repr(result) + repr(world.state.events_)


async def test_idle_target_is_removed_retained_and_audited_with_who() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)  # one rotation: versions exist
    before = {c.key_id for c in world.directory.live(target.tenant_id, target.app_id)}

    result = await go(world, target)

    with pytest.raises(NotFound):
        await world.state.get_target(target.tenant_id, target.app_id)
    assert [(s.name, s.outcome) for s in result.steps] == [
        ("stop", "done"), ("rotation", "already"), ("retain", "done"), ("registry", "done")]
    assert result.retained_until == world.clock.now() + timedelta(days=90)
    assert world.retention.until[target.secret_name] == result.retained_until  # type: ignore[attr-defined]
    # Nothing else changed: the secrets stay live (Proofpoint keeps syncing), the rotator still owns the app.
    assert {c.key_id for c in world.directory.live(target.tenant_id, target.app_id)} == before
    assert (target.tenant_id, target.app_id) not in world.directory.unowned
    offboard_events = [e for e in world.state.events_ if e.step == "offboard"]
    assert offboard_events and all(e.actor == "manual:alice@msp.example" for e in offboard_events)
    assert [e.outcome for e in offboard_events][-1] == "registry: done"


async def test_remove_owner_takes_the_rotator_off_the_app_and_a_second_time_says_already() -> None:
    world = FakeWorld()
    first, second = world.seed(), world.seed()
    world.directory.unowned.add((second.tenant_id, second.app_id))

    done = await go(world, first, OffboardOptions(remove_owner=True))
    already = await go(world, second, OffboardOptions(remove_owner=True))

    owner = {s.name: s for s in done.steps}["owner"]
    assert owner.outcome == "done" and ROTATOR.object_id in owner.detail and "Proofpoint Essentials" in owner.detail
    assert (first.tenant_id, first.app_id) in world.directory.unowned
    assert {s.name: s.outcome for s in already.steps}["owner"] == "already"


async def test_remove_owner_refused_gives_the_command_and_still_offboards() -> None:
    world = FakeWorld()
    target = world.seed()
    world.faults.add("directory.remove_owner", lambda: Unreachable("Insufficient privileges",
                                                                    code="Authorization_RequestDenied"))
    result = await go(world, target, OffboardOptions(remove_owner=True))
    owner = {s.name: s for s in result.steps}["owner"]
    app = world.directory.app(target.tenant_id, target.app_id)
    assert owner.outcome == "failed" and "Authorization_RequestDenied" in owner.detail
    assert f"/applications/{app.object_id}/owners/{ROTATOR.object_id}/$ref" in owner.command
    with pytest.raises(NotFound):
        await world.state.get_target(target.tenant_id, target.app_id)


async def test_remove_app_without_an_admin_session_prints_the_admins_command() -> None:
    world = FakeWorld()
    target = world.seed()
    result = await go(world, target, OffboardOptions(remove_app=True))
    app = {s.name: s for s in result.steps}["app"]
    assert app.outcome == "manual"
    assert f"az login --tenant {target.tenant_id}" in app.command
    assert "az ad sp delete --id c11e0000-0000-4000-8000-000000000001" in app.command


async def test_remove_app_through_a_partner_session_is_audited_with_the_admin() -> None:
    world = FakeWorld()
    target = world.seed()
    partner = FakePartner({target.tenant_id})
    result = await go(world, target, OffboardOptions(remove_app=True), partner)
    assert {s.name: s.outcome for s in result.steps}["app"] == "done"
    assert partner.installed == set()
    app_event = next(e for e in world.state.events_ if e.outcome.startswith("app:"))
    assert "partner-admin@msp.example" in app_event.detail and app_event.actor == "manual:alice@msp.example"


async def test_remove_app_refused_by_gdap_names_the_fix() -> None:
    world = FakeWorld()
    target = world.seed()
    partner = FakePartner({target.tenant_id}, PartnerRefused(
        "Graph refused DELETE /servicePrincipals", code="Authorization_RequestDenied",
        fix="add Cloud Application Administrator to the GDAP relationship"))
    result = await go(world, target, OffboardOptions(remove_app=True), partner)
    app = {s.name: s for s in result.steps}["app"]
    assert app.outcome == "failed" and "Cloud Application Administrator" in app.detail and app.command


@pytest.mark.parametrize(("relationships", "roles", "code"), [
    (set(), frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}), "NoGdapRelationship"),
    (None, frozenset({partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR}), "GdapRoleMissing"),
    (None, frozenset(), "GdapRoleMissing"),
])
async def test_a_partner_session_that_cannot_remove_the_app_is_refused_before_anything_changes(
        relationships: set[str] | None, roles: frozenset[str], code: str) -> None:
    """No active relationship with the tenant, or one giving neither Cloud Application Administrator nor
    Application Administrator: refused with the cause and the fix, the target still registered, enabled, unaudited."""
    world = FakeWorld()
    target = world.seed(days_left=10)
    before = world.state.events_[:]
    partner = FakePartner({target.tenant_id}, roles=roles, relationships=relationships)
    with pytest.raises(PartnerRefused) as refused:
        await go(world, target, OffboardOptions(remove_owner=True, remove_app=True), partner)
    assert refused.value.code == code and refused.value.fix and ADMIN.user_principal_name in refused.value.message
    stored, _ = await world.state.get_target(target.tenant_id, target.app_id)
    assert stored.enabled and stored.state.lease_owner == target.state.lease_owner
    assert partner.installed == {target.tenant_id} and world.state.events_ == before


@pytest.mark.parametrize("role", [partner_roles.APPLICATION_ADMINISTRATOR,
                                  partner_roles.CLOUD_APPLICATION_ADMINISTRATOR, partner_roles.GLOBAL_ADMINISTRATOR])
async def test_any_role_that_may_delete_a_service_principal_is_enough(role: str) -> None:
    world = FakeWorld()
    target = world.seed()
    partner = FakePartner({target.tenant_id}, roles=frozenset({role, partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR}))
    result = await go(world, target, OffboardOptions(remove_app=True), partner)
    assert {s.name: s.outcome for s in result.steps}["app"] == "done" and not partner.installed


async def test_the_msp_app_stays_while_another_target_of_the_tenant_is_registered() -> None:
    world = FakeWorld()
    target = world.seed()
    other_app = "0a0a0000-0000-4000-8000-00000000abcd"
    world.directory.add_app(target.tenant_id, other_app, 100)
    world.state._write(Target(target.tenant_id, other_app, "Contoso (second app)"))
    partner = FakePartner({target.tenant_id})
    result = await go(world, target, OffboardOptions(remove_app=True), partner)
    assert {s.name: s.outcome for s in result.steps}["app"] == "skipped"
    assert partner.installed == {target.tenant_id}


async def test_a_target_leased_by_a_running_rotation_is_refused_and_nothing_changes() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    hold = world.faults.hold("probe.try_token")
    import asyncio
    running = asyncio.create_task(world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER))
    await hold.reached.wait()
    events = len(world.state.events_)
    with pytest.raises(Conflict) as refused:
        await go(world, target)
    assert refused.value.code == "TargetBusy"
    assert world.row(target).enabled and len(world.state.events_) == events
    hold.released.set()
    await running


async def in_flight(world: FakeWorld, stage: Stage) -> Target:
    """A target whose rotation stopped (the process died) in `stage`, its lease run out."""
    target = world.seed(days_left=10)
    crash_at = {
        Stage.CREATING: ("secrets.store_pending", "before"),  # addPassword ran: its value only in the dead process
        Stage.PENDING: ("probe.try_token", "before"),
        Stage.VERIFIED: ("destination.portal", "before"),  # proofpoint holds the new secret, the portal not yet
        Stage.PUSHED: ("secrets.promote", "before"),
    }[stage]
    world.faults.crash(crash_at[0], when=crash_at[1])
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    world.faults.revive()
    world.clock.advance(world.config.lease + timedelta(seconds=1))
    assert world.row(target).state.stage is stage
    return target


@pytest.mark.parametrize("stage", [Stage.CREATING, Stage.PENDING])
async def test_a_rotation_before_any_destination_is_compensated(stage: Stage) -> None:
    world = FakeWorld()
    target = await in_flight(world, stage)
    new = [c for c in world.directory.live(target.tenant_id, target.app_id) if c.rotation_id]
    assert len(new) == 1
    if stage is Stage.CREATING:
        assert unsafe_credentials(world, target) == new_ids(new)  # the lost value: what must not stay

    result = await go(world, target)

    rotation = {s.name: s for s in result.steps}["rotation"]
    assert rotation.outcome == "compensated" and new[0].key_id in rotation.detail
    live = world.directory.live(target.tenant_id, target.app_id)
    assert [c.rotation_id for c in live] == [None]  # only the secret the destinations use
    assert unsafe_credentials(world, target) == []
    assert all(v.stage is VersionStage.RETIRED for v in world.secrets.of(target))
    assert world.destination.held["proofpoint"] == world.directory.values[live[0].key_id].secret


def new_ids(credentials: list) -> list[str]:  # type: ignore[type-arg]
    return [c.key_id for c in credentials]


async def verified_pushed_but_not_acknowledged(world: FakeWorld) -> Target:
    """The push to proofpoint answered, then the process died before the acknowledgement was written."""
    target = world.seed(days_left=10)
    world.faults.crash("destination.proofpoint", when="after")
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    world.faults.revive()
    world.clock.advance(world.config.lease + timedelta(seconds=1))
    row = world.row(target)
    assert row.state.stage is Stage.VERIFIED and row.state.acks == {}
    assert world.destination.held["proofpoint"] == world.directory.values[row.state.new_key_id].secret
    return target


@pytest.mark.parametrize("stage", [Stage.VERIFIED, Stage.PUSHED, "unacknowledged"])
async def test_a_rotation_a_destination_may_hold_is_kept_with_both_values_in_key_vault(stage: Stage | str) -> None:
    world = FakeWorld()
    target = await (verified_pushed_but_not_acknowledged(world) if stage == "unacknowledged"
                    else in_flight(world, stage))  # type: ignore[arg-type]
    live_before = {c.key_id for c in world.directory.live(target.tenant_id, target.app_id)}

    result = await go(world, target)

    assert {s.name: s.outcome for s in result.steps}["rotation"] == "kept"
    assert {c.key_id for c in world.directory.live(target.tenant_id, target.app_id)} == live_before
    assert len(live_before) == 2 and unsafe_credentials(world, target) == []
    # Every destination can still sign in with what it holds.
    assert set(world.destination.held.values()) <= set(world.live_values(target).values())


async def test_a_failed_compensation_stops_with_the_target_disabled_and_a_second_run_finishes() -> None:
    world = FakeWorld()
    target = await in_flight(world, Stage.PENDING)
    world.faults.add("directory.remove_password", lambda: Unreachable("token refused", code="AADSTS7000112"))
    with pytest.raises(Unreachable):
        await go(world, target)
    row = world.row(target)
    assert not row.enabled and row.state.stage is Stage.PENDING
    assert any(e.outcome == "rotation: failed" and e.error_code == "AADSTS7000112" for e in world.state.events_)
    # No pass takes it up again: the passes list enabled targets only.
    await world.engine().run_pass()
    assert world.row(target).state.stage is Stage.PENDING

    world.clock.advance(timedelta(minutes=6))  # the first offboarding's lease has run out
    result = await go(world, target)
    assert {s.name: s.outcome for s in result.steps}["rotation"] == "compensated"
    assert unsafe_credentials(world, target) == []


@pytest.mark.parametrize("call", ["retention.retain", "state.delete_target", "directory.remove_owner"])
async def test_a_crash_mid_offboarding_is_finished_by_a_second_one(call: str) -> None:
    world = FakeWorld()
    target = await in_flight(world, Stage.CREATING)
    world.faults.crash(call)
    with pytest.raises(Crash):
        await go(world, target, OffboardOptions(remove_owner=True))
    world.faults.revive()
    assert not world.row(target).enabled and unsafe_credentials(world, target) == []
    world.clock.advance(timedelta(minutes=6))
    await go(world, target, OffboardOptions(remove_owner=True))
    with pytest.raises(NotFound):
        await world.state.get_target(target.tenant_id, target.app_id)
    assert unsafe_credentials(world, target) == []
    assert (target.tenant_id, target.app_id) in world.directory.unowned


async def test_no_secret_in_the_result_or_the_audit_trail() -> None:
    world = FakeWorld()
    target = await in_flight(world, Stage.CREATING)
    result = await go(world, target, OffboardOptions(remove_owner=True, remove_app=True))
    text = said(world, result)
    values = [c.secret for c in world.directory.values.values()]
    assert len(values) == 2 and not any(v in text for v in values)


async def test_retention_sweep_deletes_only_after_the_retention_and_never_a_target_registered_again() -> None:
    world = FakeWorld()
    gone, back = world.seed(days_left=10), world.seed(days_left=10)
    for t in (gone, back):
        await world.engine().advance(t.tenant_id, t.app_id, Actor.TIMER)
        await go(world, t)
    retention = world.retention  # type: ignore[attr-defined]
    world.state._write(replace(back, state=replace(back.state, stage=Stage.IDLE)))  # registered again

    world.clock.advance(timedelta(days=89))
    assert await sweep_retention(retention, world.state, world.clock.now()) == []
    world.clock.advance(timedelta(days=2))
    assert await sweep_retention(retention, world.state, world.clock.now()) == [gone.secret_name]
    assert retention.deleted == [gone.secret_name]
    assert any(e.step == "retention" and e.tenant_id == gone.tenant_id for e in world.state.events_)
    assert await sweep_retention(retention, world.state, world.clock.now()) == []  # once


@pytest.mark.parametrize("status", ["pending", "rejected", "approved", "postponed"])
async def test_the_targets_approval_request_goes_with_it(status: str) -> None:
    """The approvals book is keyed by tenant and app: a decision made before offboarding (a rejection, an approval of
    the key still in use) would decide for the target registered again, a pending request would be listed and
    decidable again. Offboarding withdraws it, audited with who; a decision landing meanwhile (ETag) is read again;
    a second offboarding after a crash finds nothing to do."""
    from shared.change_control import ApprovalRequest, ApprovalStatus
    from tests.fakes import FakeApprovals

    world = FakeWorld()
    target = world.seed(days_left=10)
    approvals = FakeApprovals(world.faults)
    request = ApprovalRequest(target.tenant_id, target.app_id, "1" * 32, "key-1", ApprovalStatus(status),
                              world.clock.now(), decided_by="" if status == "pending" else "bob@msp.example")
    await approvals.put(request, None)
    other = world.seed(days_left=10)  # another target's request stays
    await approvals.put(replace(request, tenant_id=other.tenant_id, app_id=other.app_id), None)
    racing = replace(request, status=ApprovalStatus.APPROVED, decided_by="carol@msp.example")

    async def decided_meanwhile() -> None:  # a decision lands between offboarding's read and its remove
        held = approvals.rows[(target.tenant_id, target.app_id)]
        await approvals.put(racing, held[1])

    p, _ = ports(world)
    original_remove = approvals.remove
    calls = 0

    async def remove(tenant_id: str, app_id: str, etag: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await decided_meanwhile()
        await original_remove(tenant_id, app_id, etag)

    approvals.remove = remove  # type: ignore[method-assign]
    result = await offboard(replace(p, approvals=approvals), target.tenant_id, target.app_id, OffboardOptions(),
                            retention_days=90, actor="alice@msp.example")
    assert await approvals.get(target.tenant_id, target.app_id) is None
    assert await approvals.get(other.tenant_id, other.app_id) is not None
    step = next(s for s in result.steps if s.name == "approval")
    assert step.outcome == "done" and "1" * 32 in step.detail and "approved by carol@msp.example" in step.detail
    assert [s.name for s in result.steps][-2:] == ["approval", "registry"]
    [event] = [e for e in world.state.events_ if e.step == "offboard" and e.outcome == "approval: done"]
    assert event.actor == "manual:alice@msp.example"
    # registered again: no old decision is there to decide for it
    await world.state.create_target(replace(target, enabled=True))
    assert await approvals.get(target.tenant_id, target.app_id) is None
