"""The dry run checks a Proofpoint registration live (GET /me, GET /endpoints/{domain}, the settings), read-only."""

from __future__ import annotations

import json

from shared.domain import DestinationConfig
from tests.rotation.conftest import ACCOUNT_SECRET, Rotator, World


async def test_the_dry_run_checks_login_stack_and_settings_and_changes_nothing(world: World, rotator: Rotator) -> None:
    world.seed_accounts()
    good = world.seed_customer("Checked", 200)
    wrong_stack = world.seed_customer("Elsewhere", 200)
    bad_login = world.seed_customer("Locked", 200)
    world.sb.control.seed({"keyvault": {"secrets": [{"name": "pp-wrong-password", "value": json.dumps(
        {"user": world.proofpoint_user, "password": "not-the-password"})}]}})
    async with rotator() as svc:
        await svc.state.create_target(good.target((good.proofpoint(),)))
        options = {"stack": "eu1", "domain": wrong_stack.domain, "account_secret": ACCOUNT_SECRET}
        await svc.state.create_target(wrong_stack.target((DestinationConfig("proofpoint", "proofpoint", options),)))
        options = {"stack": bad_login.stack, "domain": bad_login.domain, "account_secret": "pp-wrong-password"}
        await svc.state.create_target(bad_login.target((DestinationConfig("proofpoint", "proofpoint", options),)))

        ok = await svc.engine.rotate_now(good.tenant_id, good.app_id, dry_run=True)
        assert ok.result == "would-rotate", ok
        assert "admin login ok" in ok.message and f"{good.domain} is on us1" in ok.message

        moved = await svc.engine.rotate_now(wrong_stack.tenant_id, wrong_stack.app_id, dry_run=True)
        assert (moved.result, moved.error_code) == ("would-fail", "DestinationCheckFailed")
        assert "lives on us1, not eu1" in moved.message

        locked = await svc.engine.rotate_now(bad_login.tenant_id, bad_login.app_id, dry_run=True)
        assert locked.result == "would-fail" and "admin login fails" in locked.message
        assert "not-the-password" not in locked.message and world.proofpoint_password not in locked.message
    for customer in (good, wrong_stack, bad_login):
        assert [c["keyId"] for c in world.credentials(customer)] == [customer.key_id]
    orgs = world.sb.control.state()["proofpoint"]["orgs"]
    assert all(o["puts"] == [] for o in orgs), "a dry run writes nothing to Proofpoint"
