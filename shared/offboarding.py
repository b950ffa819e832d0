"""Offboarding: remove a customer's target so the rotator stops looking after it, leaving nothing unsafe behind.

What is decided here (docs/onboarding.md, "Removing a customer"):
- The rotator stops first: the row is disabled and leased in one ETag-guarded write (passes list enabled targets only;
  a runner holding the lease makes offboarding wait: 409, nothing changed).
- A rotation in flight is compensated or kept, never left with a live credential whose value nobody holds:
  `creating` (addPassword may have run, its value maybe not stored) and `pending` (stored, not yet proven): nothing
  is pushed before `verified`, so no destination uses the new credential: it is removed (as the protocol's own
  recovery removes a credential whose value is lost) and its version tagged `retired`; the old secret stays, in use.
  `verified` and `pushed`: a destination may hold the new secret, even without its acknowledgement recorded (a push
  answered, then the process died), so both secrets stay live, both values in Key Vault.
- The Key Vault versions are kept for OFFBOARD_RETENTION_DAYS (each tagged `retain-until`), so the MSP can still
  hand the current secret to whoever takes over; after that the daily timer deletes the secret (Key Vault
  soft-delete: recoverable for the vault's own soft-delete retention, then purged by Key Vault).
- Optionally the rotator removes itself from the app's owners (Graph DELETE .../owners/{id}/$ref: the application
  permission Application.ReadWrite.OwnedBy allows it, application-delete-owners.md), and the MSP app's service
  principal is removed from the tenant: that needs an admin of the tenant (a partner admin's GDAP session, or the
  command printed for the customer's admin); never while another target of the tenant is registered.
- Every step is audited with who asked; the row is deleted last, so a crash before leaves it disabled and a second
  offboarding (once the 5-minute lease has run out) finishes the work: every step is idempotent.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared import partner_roles
from shared.domain import Actor, Stage, Target, VersionStage, actor_of, target_of_secret
from shared.errors import AppNotFound, Conflict, NotFound, PartnerRefused, RotationError
from shared.ports import Approvals, Directory, Event, PartnerSession, SecretRetention, SecretStore, StateStore
from shared.protocol.context import leased_by_other

STEP = "offboard"
LEASE = timedelta(minutes=5)  # as the engine's: a runner that dies mid-offboarding holds the target no longer


@dataclass(frozen=True)
class OffboardOptions:
    """What to remove besides the registration."""

    remove_owner: bool = False  # the rotator's service principal from the Proofpoint app's owners
    remove_app: bool = False  # the MSP app's service principal from the tenant (needs an admin of the tenant)


@dataclass(frozen=True)
class OffboardStep:
    """One step of an offboarding and how it ended: done, already (nothing to do), kept, manual (a person must run
    `command`), skipped or failed."""

    name: str
    outcome: str
    detail: str
    command: str = ""


@dataclass(frozen=True)
class Offboarded:
    """What an offboarding did (never a secret)."""

    tenant_id: str
    app_id: str
    customer: str
    actor: str
    at: datetime
    secret_name: str
    retained_until: datetime
    steps: tuple[OffboardStep, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class OffboardPorts:
    """The ports an offboarding works through; `partner` only when a partner admin signed in (GDAP)."""

    state: StateStore
    directory: Directory
    secrets: SecretStore
    retention: SecretRetention
    now: Callable[[], datetime]
    msp_app_client_id: str = ""
    partner: PartnerSession | None = None
    approvals: Approvals | None = None  # change control's book (issue 26): the target's request goes with it


class _Run:
    def __init__(self, ports: OffboardPorts, target: Target, actor: str) -> None:
        self.ports = ports
        self.target = target
        self.actor = actor
        self.steps: list[OffboardStep] = []

    async def step(self, name: str, outcome: str, detail: str, command: str = "", error_code: str = "") -> None:
        self.steps.append(OffboardStep(name, outcome, detail, command))
        await self.ports.state.record(Event(
            self.target.tenant_id, self.target.app_id, STEP, f"{name}: {outcome}", self.actor,
            rotation_id=self.target.state.rotation_id, error_code=error_code, detail=detail[:500],
            at=self.ports.now(),
        ))


async def offboard(ports: OffboardPorts, tenant_id: str, app_id: str, options: OffboardOptions, *,
                   retention_days: int, actor: str) -> Offboarded:
    """Stop rotating one target and remove it (see the module's docstring for each decision). Conflict (409) when a
    runner holds the target now; NotFound when it is not registered. A compensation that fails stops the
    offboarding with the target disabled (RotationError), so nothing is left half-known."""
    who = actor_of(Actor.MANUAL, actor)
    target, etag = await ports.state.get_target(tenant_id, app_id)
    now = ports.now()
    owner = f"offboard-{secrets.token_hex(8)}"
    if leased_by_other(target, owner, now):
        raise Conflict(f"a run holds {target.key} now (until {target.state.lease_until:%H:%M:%S} UTC); offboard it "
                       "again once it has finished", code="TargetBusy")
    if options.remove_app and ports.partner is not None and not await _other_targets(ports.state, target):
        await partner_may_remove_app(ports.partner, tenant_id)  # PartnerRefused before anything changes
    stopped = replace(target, enabled=False).with_state(lease_owner=owner, lease_until=now + LEASE)
    etag = await ports.state.replace_target(stopped, etag)  # Conflict: another writer came first; nothing changed
    run = _Run(ports, stopped, who)
    await run.step("stop", "done", "the target is disabled: no pass rotates or alerts on it any more")
    await _settle_rotation(run)
    until = now + timedelta(days=retention_days)
    tagged = await ports.retention.retain(stopped, until)
    await run.step("retain", "done", f"{tagged} Key Vault version(s) of {stopped.secret_name} kept until "
                   f"{until:%Y-%m-%d} (OFFBOARD_RETENTION_DAYS={retention_days}), then deleted (soft-delete)")
    if options.remove_owner:
        await _remove_owner(run)
    if options.remove_app:
        await _remove_app(run)
    await _withdraw_approval(run)
    await ports.state.delete_target(tenant_id, app_id, etag)
    await run.step("registry", "done", "the target is removed from the registry")
    return Offboarded(tenant_id, app_id, stopped.customer, who, now, stopped.secret_name, until, tuple(run.steps))


async def _settle_rotation(run: _Run) -> None:
    """Compensate or keep a rotation in flight (the module's docstring says which, and why)."""
    t = run.target
    s = t.state
    if s.stage is Stage.IDLE:
        await run.step("rotation", "already", "no rotation in flight")
        return
    if s.stage in (Stage.VERIFIED, Stage.PUSHED):
        held_by = sorted(name for name, ack in s.acks.items() if s.new_key_id and ack.key_id == s.new_key_id)
        told = f"confirmed by {', '.join(held_by)}" if held_by else "being pushed"
        await run.step("rotation", "kept", f"rotation {s.rotation_id} ({s.stage.value}): the new secret (key "
                       f"{s.new_key_id}) is {told}, so a destination may use it: it and the secret it replaces stay "
                       "live in Entra ID, both values in Key Vault (nothing a destination may use is removed)")
        return
    try:
        removed = await _remove_rotation_credentials(run)
    except RotationError as error:
        await run.step("rotation", "failed", f"rotation {s.rotation_id} ({s.stage.value}) could not be undone: "
                       f"{error.message}; the target stays registered and disabled, offboard it again once fixed",
                       error_code=error.code)
        await run.ports.state.record(Event(t.tenant_id, t.app_id, STEP, "stopped", run.actor, error_code=error.code,
                                           at=run.ports.now()))
        raise
    what = ", ".join(removed) if removed else "no credential of it was on the app"
    await run.step("rotation", "compensated", f"rotation {s.rotation_id} ({s.stage.value}) undone before any "
                   f"destination held its secret: removed {what}; the secret in use stays")


async def _remove_rotation_credentials(run: _Run) -> list[str]:
    """Remove the in-flight rotation's credentials from the app; tag their stored versions `retired`."""
    t, s, ports = run.target, run.target.state, run.ports
    try:
        app = await ports.directory.get_application(t.tenant_id, t.app_id)
    except AppNotFound:
        return []
    stored = await ports.secrets.find_by_rotation(t, s.rotation_id)
    ours = [c for c in app.credentials if c.rotation_id == s.rotation_id or (s.new_key_id and c.key_id == s.new_key_id)]
    removed = []
    for credential in ours:
        await ports.directory.remove_password(t.tenant_id, app.object_id, credential.key_id)
        removed.append(f"key {credential.key_id}")
    if stored is not None and stored.stage is not VersionStage.RETIRED:
        await ports.secrets.demote(t, stored, VersionStage.RETIRED)
    return removed


async def _withdraw_approval(run: _Run) -> None:
    """Remove the target's approval request (change control), audited: the book is keyed by tenant and app, so a
    decision made before offboarding (a rejection, an approval of the key still in use) would otherwise decide for the
    target when it is registered again, and a pending one would be listed and decidable again then."""
    approvals, t = run.ports.approvals, run.target
    if approvals is None:
        return
    for _ in range(3):
        held = await approvals.get(t.tenant_id, t.app_id)
        if held is None:
            return
        request, etag = held
        try:
            await approvals.remove(t.tenant_id, t.app_id, etag)
        except Conflict:
            continue  # decided on the dashboard meanwhile: read it again
        by = f" by {request.decided_by}" if request.decided_by else ""
        await run.step("approval", "done", f"approval request {request.request_id} ({request.status.value}{by}) "
                       "withdrawn with the target")
        return
    raise Conflict(f"the approval request of {t.key} keeps changing; offboard it again", code="ApprovalChanged")


def _owner_command(tenant_id: str, object_id: str, principal_id: str) -> str:
    return (f"az login --tenant {tenant_id} --allow-no-subscriptions && az rest --method DELETE --url "
            f"'https://graph.microsoft.com/v1.0/applications/{object_id}/owners/{principal_id}/$ref'")


async def _remove_owner(run: _Run) -> None:
    t, ports = run.target, run.ports
    try:
        app = await ports.directory.get_application(t.tenant_id, t.app_id)
        principal = (await ports.directory.ownership(t.tenant_id, t.app_id)).principal
    except AppNotFound:
        await run.step("owner", "already", "the app registration is gone from the tenant")
        return
    except RotationError as error:
        await run.step("owner", "failed", f"could not read the app's owners: {error.message}", error_code=error.code)
        return
    if principal is None:
        await run.step("owner", "manual", "the rotator cannot name its own service principal (no client id set): "
                       "an admin of the tenant removes it from the app's owners")
        return
    command = _owner_command(t.tenant_id, app.object_id, principal.object_id)
    try:
        removed = await ports.directory.remove_owner(t.tenant_id, app.object_id, principal.object_id)
    except RotationError as error:
        await run.step("owner", "failed", f"Graph refused to remove {principal.describe()} from the owners of "
                       f"{app.display_name} ({error.code}): an Application Administrator of the tenant runs the "
                       "command", command, error_code=error.code)
        return
    if removed:
        await run.step("owner", "done", f"{principal.describe()} removed from the owners of {app.display_name} "
                       f"(app id {app.app_id})")
    else:
        await run.step("owner", "already", f"{principal.describe()} was not an owner of {app.display_name}")


async def _other_targets(state: StateStore, t: Target) -> list[Target]:
    """The tenant's other registered targets: while there is one, the MSP app stays in the tenant."""
    return [o for o, _ in await state.list_targets() if o.tenant_id == t.tenant_id and o.app_id != t.app_id]


async def partner_may_remove_app(partner: PartnerSession, tenant_id: str) -> None:
    """PartnerRefused, naming the cause and the fix, unless the signed-in partner admin has an active GDAP
    relationship with the tenant giving a role that may delete a service principal (Cloud Application Administrator
    or Application Administrator, Global Administrator: Graph `DELETE /servicePrincipals/{id}`,
    microsoft-graph-docs-contrib api-reference/v1.0/api/serviceprincipal-delete.md; docs/partner-access.md, "Roles
    per step"). Checked before anything changes, so a refusal leaves the customer registered to try again."""
    from shared.bulk_onboarding import APP_ADMINS  # the same roles as the install's (no import cycle at load)

    customer = next((c for c in await partner.customers() if c.tenant_id.lower() == tenant_id.lower()), None)
    admin = partner.admin.user_principal_name
    if customer is None:
        raise PartnerRefused(
            f"{admin} has no active GDAP relationship with tenant {tenant_id}, so the MSP app cannot be removed "
            "through the partner; nothing was changed", code="NoGdapRelationship",
            fix="offboard without removing the app and give the customer's admin the command it answers, or sign "
                "in as a partner admin whose relationship with this customer is active (Partner Center > Customers "
                "> Admin relationships)")
    if not customer.roles & APP_ADMINS:
        held = ", ".join(sorted(partner_roles.name(r) for r in customer.roles)) or "none"
        raise PartnerRefused(
            f"the GDAP relationship with {customer.display_name or tenant_id} does not give {admin} Cloud "
            f"Application Administrator or Application Administrator (to delete the MSP app's service principal); "
            f"the roles there: {held}; nothing was changed", code="GdapRoleMissing",
            fix="add Cloud Application Administrator to the GDAP relationship with this customer and assign it to a "
                "security group the admin is a member of, then sign in again and offboard")


async def _remove_app(run: _Run) -> None:
    t, ports = run.target, run.ports
    others = await _other_targets(ports.state, t)
    if others:
        await run.step("app", "skipped", f"the MSP app stays in tenant {t.tenant_id}: {len(others)} other target(s) "
                       "of the tenant are registered and need it")
        return
    command = (f"az login --tenant {t.tenant_id} --allow-no-subscriptions && az ad sp delete --id "
               f"{ports.msp_app_client_id or '<MSP app client id>'}")
    if ports.partner is None:
        await run.step("app", "manual", "removing the MSP app's service principal needs an admin of the tenant "
                       "(Cloud Application Administrator or Application Administrator): they run the command, or a "
                       "partner admin offboards with a GDAP sign-in", command)
        return
    try:
        removed = await ports.partner.remove_app(t.tenant_id)
    except PartnerRefused as error:
        await run.step("app", "failed", f"{error.message}; {error.fix}", command, error_code=error.code)
        return
    except RotationError as error:
        await run.step("app", "failed", f"{error.message}; the tenant's admin can run the command", command,
                       error_code=error.code)
        return
    who = ports.partner.admin.user_principal_name
    await run.step("app", "done" if removed else "already",
                   f"the MSP app's service principal {'removed from' if removed else 'was not in'} tenant "
                   f"{t.tenant_id} (as {who}, through GDAP)")


async def sweep_retention(retention: SecretRetention, state: StateStore, now: datetime) -> list[str]:
    """Delete the stored secrets of offboarded targets whose retention has passed (the daily timer). A secret whose
    target is registered again is never deleted. The names deleted."""
    deleted = []
    for name in await retention.due(now):
        ids = target_of_secret(name)
        if ids is None:
            continue
        try:
            await state.get_target(*ids)
            continue  # registered again: its versions are in use
        except NotFound:
            pass
        if await retention.delete(name):
            deleted.append(name)
            await state.record(Event(ids[0], ids[1], "retention", "deleted", Actor.TIMER.value,
                                     detail=f"{name}: retention over, soft-deleted", at=now))
    return deleted


def offboarded_document(result: Offboarded) -> dict[str, object]:
    """The JSON answer of an offboarding (API and `python -m shared offboard --json`)."""
    return {
        "tenantId": result.tenant_id,
        "appId": result.app_id,
        "customer": result.customer,
        "actor": result.actor,
        "at": result.at.isoformat(),
        "secretName": result.secret_name,
        "retainedUntil": result.retained_until.isoformat(),
        "steps": [{"name": s.name, "outcome": s.outcome, "detail": s.detail, "command": s.command or None}
                  for s in result.steps],
    }
