"""The product's SignInLog adapter (shared/adapters/signins.py) as bootstrap builds it, over real HTTPS against the
sandbox's Entra sign-in log: first and last sign-in per key id since a moment, many pages, the refusals of a tenant
without the permissions or the licence (available False with Graph's code), throttling retried then raised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.signins import NO_PREMIUM, PAGE_SIZE, PERMISSION_DENIED, GraphSignInLog, beta_url
from shared.bootstrap import Services
from shared.domain import Secret
from shared.errors import AppNotFound, RotationError, Throttled
from tests.rotation import conftest as rotation
from tests.rotation.conftest import ROTATOR_ROLE, Customer, World, random_secret

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

READER_ROLES = (ROTATOR_ROLE, "AuditLog.Read.All", "Directory.Read.All")


def licensed(world: World, name: str, *, roles: tuple[str, ...] = READER_ROLES, license: str = "P1") -> Customer:
    """A customer whose tenant lets the rotator read its sign-in log (unless told otherwise); the log's delay 0."""
    customer = world.seed_customer(name, 100, roles=roles)
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "entraIdLicense": license}]})
    world.sb.control.set_sign_in_delay(0)
    return customer


def add_key(world: World, customer: Customer, key_id: str, secret: str) -> None:
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "applications": [
        {"appId": customer.app_id, "passwordCredentials": [
            {"keyId": key_id, "secretText": secret, "startDateTime": "-1d", "endDateTime": "+700d"}]}]}]})


def log(svc: Services) -> GraphSignInLog:
    assert svc.sign_in_log is not None
    return svc.sign_in_log


def waiting_log(svc: Services) -> tuple[GraphSignInLog, list[float]]:
    """The adapter with its waits recorded instead of slept: a throttled read's Retry-After, seen without waiting."""
    reader = log(svc)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    reader.sleep = sleep
    return reader, waits


def test_the_beta_endpoint_sits_beside_the_configured_v1() -> None:
    assert beta_url("https://graph.microsoft.com/v1.0") == "https://graph.microsoft.com/beta"
    assert beta_url("https://127.0.0.1:4433/v1.0/") == "https://127.0.0.1:4433/beta"


async def test_first_and_last_sign_in_per_key_since_the_moment_with_address_and_resource(
    world: World, svc: Services
) -> None:
    customer = licensed(world, "Evident")
    new_key, new_secret = "d0000000-0000-4000-8000-0000000000a1", random_secret()
    add_key(world, customer, new_key, new_secret)
    control = world.sb.control
    assert control.sign_in(customer.tenant_id, customer.app_id, customer.secret, at="-3h") is None  # before since
    since = datetime.now(UTC) - timedelta(hours=2)
    assert control.sign_in(customer.tenant_id, customer.app_id, customer.secret, at="-90m",
                           ip_address="203.0.113.20") is None
    assert control.sign_in(customer.tenant_id, customer.app_id, customer.secret, at="-30m",
                           ip_address="203.0.113.21", resource="Azure Key Vault") is None
    assert control.sign_in(customer.tenant_id, customer.app_id, new_secret, at="-60m") is None
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert evidence.available and evidence.since == since and evidence.code == ""
    assert set(evidence.credentials) == {customer.key_id, new_key}
    old = evidence.credentials[customer.key_id]
    assert old.first_sign_in is not None and old.last_sign_in is not None
    assert timedelta(minutes=85) < datetime.now(UTC) - old.first_sign_in < timedelta(minutes=95)
    assert timedelta(minutes=25) < datetime.now(UTC) - old.last_sign_in < timedelta(minutes=35)
    assert (old.last_ip_address, old.last_resource) == ("203.0.113.21", "Azure Key Vault")
    new = evidence.credentials[new_key]
    assert new.first_sign_in == new.last_sign_in and new.last_ip_address == "203.0.113.7"
    assert abs((evidence.read_at - datetime.now(UTC)).total_seconds()) < 60


async def test_refused_and_other_apps_sign_ins_are_no_evidence(world: World, svc: Services) -> None:
    customer = licensed(world, "Picky")
    other = licensed(world, "Neighbour")
    control = world.sb.control
    since = datetime.now(UTC) - timedelta(hours=1)
    assert control.sign_in(customer.tenant_id, customer.app_id, random_secret())  # a wrong secret: refused
    assert control.sign_in(other.tenant_id, other.app_id, other.secret) is None  # another tenant's app
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert evidence.available and evidence.credentials == {}


async def test_the_rotators_own_probe_is_logged_like_any_sign_in(world: World, svc: Services) -> None:
    """The verify step's token request is a sign-in with the new key, as Entra logs it: the evidence reader must
    tell it apart by time or address (docs/evidence.md), the log does not hide it."""
    customer = licensed(world, "Probed")
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert await svc.engine.probe.try_token(customer.tenant_id, customer.app_id, Secret(customer.secret)) is None
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert evidence.credentials[customer.key_id].last_ip_address == "127.0.0.1"


async def test_many_pages_are_read_to_the_end(world: World, svc: Services) -> None:
    customer = licensed(world, "Chatty")
    # PAGE_SIZE + a few sign-ins in the window, seeded straight into the log.
    rows = [{"appId": customer.app_id, "keyId": customer.key_id, "createdDateTime": f"-{seconds}s",
             "ipAddress": "198.51.100.25"} for seconds in range(10, 10 + PAGE_SIZE + 5)]
    rows.append({"appId": customer.app_id, "keyId": customer.key_id, "createdDateTime": "-5s",
                 "ipAddress": "203.0.113.99"})
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "signIns": rows}]})
    since = datetime.now(UTC) - timedelta(hours=1)
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    seen = evidence.credentials[customer.key_id]
    assert seen.last_ip_address == "203.0.113.99"
    assert seen.first_sign_in is not None and seen.last_sign_in is not None
    assert timedelta(seconds=PAGE_SIZE) < seen.last_sign_in - seen.first_sign_in < timedelta(seconds=PAGE_SIZE + 10)


@pytest.mark.parametrize(("roles", "license", "code"), [
    ((ROTATOR_ROLE,), "P1", PERMISSION_DENIED),
    ((ROTATOR_ROLE, "AuditLog.Read.All"), "P2", NO_PREMIUM),
    (READER_ROLES, "free", NO_PREMIUM),
])
async def test_a_tenant_that_refuses_the_read_gives_no_evidence_and_says_why(
    world: World, svc: Services, roles: tuple[str, ...], license: str, code: str
) -> None:
    customer = licensed(world, "Closed", roles=roles, license=license)
    since = datetime.now(UTC) - timedelta(hours=1)
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert not evidence.available and evidence.code == code and evidence.credentials == {}
    assert "AuditLog.Read.All" in evidence.reason
    assert ("P1" in evidence.reason) == (code == NO_PREMIUM)


async def test_throttling_is_waited_out_then_raised_as_throttled(world: World, svc: Services) -> None:
    customer = licensed(world, "Busy")
    reader, waits = waiting_log(svc)
    since = datetime.now(UTC) - timedelta(hours=1)
    world.sb.control.add_fault("graph", path="/auditLogs/signIns", status=429, retry_after=7, count=2)
    assert (await reader.credential_sign_ins(customer.tenant_id, customer.app_id, since)).available
    assert waits == [7, 7]
    world.sb.control.add_fault("graph", path="/auditLogs/signIns", status=429, retry_after=2, count=None)
    with pytest.raises(Throttled) as raised:
        await reader.credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert raised.value.retry_after == 2
    world.sb.control.clear_faults()


async def test_an_app_id_that_is_no_guid_never_reaches_the_filter(world: World, svc: Services) -> None:
    customer = licensed(world, "Guarded")
    with pytest.raises(AppNotFound):
        await log(svc).credential_sign_ins(customer.tenant_id, "x' or appId ne 'y", datetime.now(UTC))


async def test_another_refusal_is_an_error_not_missing_evidence(world: World, svc: Services) -> None:
    customer = licensed(world, "Broken")
    world.sb.control.add_fault("graph", path="/auditLogs/signIns", status=400, code="BadRequest",
                               message="Invalid filter clause")
    with pytest.raises(RotationError) as raised:
        await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, datetime.now(UTC))
    assert raised.value.code == "BadRequest" and not isinstance(raised.value, Throttled)
