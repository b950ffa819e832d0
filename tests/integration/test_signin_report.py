"""The SignInLog adapter's credential activity report (beta /reports/appCredentialSignInActivities) over real HTTPS
against the sandbox: the last sign-in day per key of one app, beyond the log's 30 days, every page; refused without
a permission or the licence (available False with Graph's code), one of the two permissions enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.signins import NO_PREMIUM, PERMISSION_DENIED
from shared.bootstrap import Services
from shared.errors import Throttled
from tests.integration.test_signin_log import READER_ROLES, licensed, log, waiting_log
from tests.rotation import conftest as rotation
from tests.rotation.conftest import ROTATOR_ROLE, World

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


def midnight(days_ago: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days_ago)).replace(hour=0, minute=0, second=0, microsecond=0)


async def test_the_last_sign_in_day_per_key_of_the_app_beyond_the_logs_thirty_days(world: World, svc: Services) -> None:
    customer = licensed(world, "Reported")
    other = licensed(world, "Elsewhere")
    world.sb.control.seed({"tenants": [
        {"id": customer.tenant_id, "signIns": [
            {"appId": customer.app_id, "keyId": customer.key_id, "createdDateTime": "-45d"},
            {"appId": customer.app_id, "keyId": customer.key_id, "createdDateTime": "-40d"}]},
        {"id": other.tenant_id, "signIns": [
            {"appId": other.app_id, "keyId": other.key_id, "createdDateTime": "-2d"}]}]})
    report = await log(svc).credential_report(customer.tenant_id, customer.app_id)
    assert report.available and report.code == ""
    assert dict(report.last) == {customer.key_id: midnight(40)}
    evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id,
                                                  datetime.now(UTC) - timedelta(days=30))
    assert customer.key_id not in evidence.credentials, "the log keeps 30 days: only the report knows"


async def test_every_page_is_read(world: World, svc: Services) -> None:
    customer = licensed(world, "Many keys")
    keys = [f"d0000000-0000-4000-8000-{n:012d}" for n in range(1, 106)]  # more than the report's page of 100
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "applications": [
        {"appId": customer.app_id, "passwordCredentials": [
            {"keyId": k, "secretText": f"s{n:03d}~" + "x" * 30, "endDateTime": "+100d"} for n, k in enumerate(keys)]}],
        "signIns": [{"appId": customer.app_id, "keyId": keys[-1], "createdDateTime": "-3d"}]}]})
    report = await log(svc).credential_report(customer.tenant_id, customer.app_id)
    assert report.last.get(keys[-1]) == midnight(3)


@pytest.mark.parametrize(("roles", "license", "code"), [
    ((ROTATOR_ROLE,), "P1", PERMISSION_DENIED),
    (READER_ROLES, "free", NO_PREMIUM),
    ((ROTATOR_ROLE, "AuditLog.Read.All"), "P2", ""),  # the log refuses this tenant (the known issue); the report not
])
async def test_refusals(world: World, svc: Services, roles: tuple[str, ...], license: str, code: str) -> None:
    customer = licensed(world, "Gated", roles=roles, license=license)
    report = await log(svc).credential_report(customer.tenant_id, customer.app_id)
    assert report.available == (code == "") and report.code == code
    if not code:
        evidence = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, datetime.now(UTC))
        assert not evidence.available and evidence.code == NO_PREMIUM


async def test_throttling_is_retried_then_raised(world: World, svc: Services) -> None:
    customer = licensed(world, "Throttled")
    reader, waits = waiting_log(svc)
    path = "/reports/appCredentialSignInActivities"
    world.sb.control.add_fault("graph", path=path, status=429, retry_after=3, count=1)
    assert (await reader.credential_report(customer.tenant_id, customer.app_id)).available and waits == [3]
    world.sb.control.add_fault("graph", path=path, status=429, retry_after=1, count=None)
    with pytest.raises(Throttled):
        await reader.credential_report(customer.tenant_id, customer.app_id)
    world.sb.control.clear_faults()


@pytest.mark.parametrize("zone", ["-8:00", "+5:30", "-08:00"])
async def test_a_day_written_as_the_docs_examples_write_it(world: World, svc: Services, zone: str) -> None:
    """The report's documented examples write a day as '2021-03-18T00:00:00-8:00' (the offset's hour unpadded), which
    datetime.fromisoformat refuses: before, the ValueError escaped the read and the pass."""
    customer = licensed(world, "Zoned")
    world.sb.control.set_report_zone(zone)
    try:
        world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "signIns": [
            {"appId": customer.app_id, "keyId": customer.key_id, "createdDateTime": "-3d"}]}]})
        report = await log(svc).credential_report(customer.tenant_id, customer.app_id)
    finally:
        world.sb.control.set_report_zone("Z")
    sign, hours, minutes = zone[0], *zone[1:].split(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1)
    day = report.last[customer.key_id]
    assert day.utcoffset() == offset and (day.hour, day.minute) == (0, 0)
    signed_in = datetime.now(UTC) - timedelta(days=3)
    assert day <= signed_in < day + timedelta(days=1), "the day (in its zone) holds the sign-in"
