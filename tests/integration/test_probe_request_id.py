"""The verify probe known by its request id (shared/verify_probe.py), over real HTTPS against the sandbox: the
product's token probe (azure-identity's ClientSecretCredential) sends `client-request-id`, the sandbox's Entra keeps
it as the sign-in's correlationId (a server-made GUID without it), and the product's sign-in reader sets the probe's
sign-ins aside by that id, whatever their time, while every other sign-in with the key still counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared import verify_probe
from shared.bootstrap import Services
from shared.domain import Secret
from tests.integration.test_signin_log import licensed, log
from tests.rotation import conftest as rotation
from tests.rotation.conftest import World

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


def correlation_ids(world: World, tenant_id: str) -> list[str]:
    return [row["correlationId"] for row in world.sb.control.sign_ins(tenant_id)]


async def test_the_probe_sends_its_request_id_and_entra_logs_it_as_the_correlation_id(
    world: World, svc: Services
) -> None:
    customer = licensed(world, "Tagged")
    probe_id = verify_probe.request_id("rotation-1", customer.key_id)
    assert await svc.engine.probe.try_token(customer.tenant_id, customer.app_id, Secret(customer.secret),
                                            probe_id) is None
    assert correlation_ids(world, customer.tenant_id)[-1] == probe_id


async def test_without_a_request_id_entra_makes_up_a_fresh_guid_per_sign_in(world: World, svc: Services) -> None:
    customer = licensed(world, "Untagged")
    for _ in range(2):
        assert await svc.engine.probe.try_token(customer.tenant_id, customer.app_id, Secret(customer.secret)) is None
    assert world.sb.control.sign_in(customer.tenant_id, customer.app_id, customer.secret) is None
    ids = correlation_ids(world, customer.tenant_id)[-3:]
    assert len(set(ids)) == 3 and all(str(uuid.UUID(i)) == i for i in ids)


async def test_the_reader_sets_the_probe_aside_by_id_and_counts_everyone_else(world: World, svc: Services) -> None:
    customer = licensed(world, "Apart")
    since = datetime.now(UTC) - timedelta(minutes=5)
    probe_id = verify_probe.request_id("rotation-2", customer.key_id)
    for _ in range(2):  # a probe re-run (a crash resume) sends the same id
        assert await svc.engine.probe.try_token(customer.tenant_id, customer.app_id, Secret(customer.secret),
                                                probe_id) is None
    only_probe = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since,
                                                    verify_probe.recorded({customer.key_id: probe_id}))
    seen = only_probe.credentials[customer.key_id]
    assert (seen.first_sign_in, seen.last_sign_in) == (None, None) and seen.probe_sign_in is not None
    # Another client with the same key (Proofpoint's sync, a script) is someone's use: counted.
    assert world.sb.control.sign_in(customer.tenant_id, customer.app_id, customer.secret,
                                    ip_address="198.51.100.25") is None
    both = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since,
                                              verify_probe.recorded({customer.key_id: probe_id}))
    seen = both.credentials[customer.key_id]
    assert seen.last_sign_in is not None and seen.last_ip_address == "198.51.100.25"
    assert seen.probe_sign_in is not None and seen.probe_sign_in <= seen.last_sign_in
    # Without the recorded id (a row from before probe ids) the probe is a sign-in like any: the time rule applies.
    plain = await log(svc).credential_sign_ins(customer.tenant_id, customer.app_id, since)
    assert plain.credentials[customer.key_id].probe_sign_in is None
    assert plain.credentials[customer.key_id].first_sign_in == seen.probe_sign_in
