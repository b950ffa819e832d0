"""GET /api/targets/{tenantId}/{appId}/proofpoint-check and `python -m shared proofpoint-check`: the org's settings
as Proofpoint returns them and the PUT a push would send, secrets hidden, nothing changed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from shared.entrypoints.access import Role
from tests.api.conftest import Api, ids
from tests.api.test_endpoints import proofpoint
from tests.conftest import ROOT
from tests.rotation.conftest import Customer, World

KEY_IN_CLEAR = "Pp7~Key-In-Clear.0123456789abcdefghij"  # an org whose GET would show the key itself


def seed_org(world: World, customer: Customer, **org: Any) -> None:
    world.seed_accounts()
    world.sb.control.seed({"proofpoint": {"orgs": [{
        "domain": customer.domain, "stack": customer.stack, "tenantId": customer.tenant_id,
        "settings": {"application_id": customer.app_id, "ad_key": customer.secret, "add_users": "true",
                     "sync_frequency": 12},
        "extraFields": {"tenant_id": customer.tenant_id, "api_token": KEY_IN_CLEAR, "seats": 40,
                        "last_successful_sync": "-1h"}, **org}]}})


def secrets_of(world: World, customer: Customer) -> list[str]:
    return [customer.secret, world.proofpoint_password, KEY_IN_CLEAR]


async def test_the_check_shows_the_get_and_the_put_with_every_secret_hidden(
    api: Api, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = world.seed_customer("Checked", 100)
    seed_org(world, c)
    await api.put(c, {"customer": "Checked", "destinations": [proofpoint(c)]})
    reply = await api.call("proofpoint_check", "GET", ids(c))
    assert reply.status == 200, reply.text
    [entry] = reply.body["destinations"]
    assert entry["error"] is None and entry["domain"] == c.domain and entry["stack"] == c.stack
    get, put = entry["get"], entry["put"]
    # As Proofpoint returned it: its fields, in their types (a string flag stays a string), unknown ones included.
    assert get["add_users"] == "true" and get["sync_frequency"] == 12 and get["seats"] == 40
    assert get["tenant_id"] == c.tenant_id and get["application_id"] == c.app_id
    assert get["ad_key"] == "(hidden)" and get["api_token"] == "(hidden)" and entry["hidden"] == ["api_token"]
    # The PUT: the same object, only the secret changed (this org already names the target's app).
    assert list(put) == list(get) and put["ad_key"] == "(the new secret)" and entry["changes"] == ["ad_key"]
    assert {k: v for k, v in put.items() if k != "ad_key"} == {k: v for k, v in get.items() if k != "ad_key"}
    assert any("masked" in n for n in entry["notes"])
    for value in secrets_of(world, c):
        assert value not in reply.text
        for record in caplog.records:
            assert value not in record.getMessage() + repr(record.__dict__)
    state = next(o for o in world.sb.control.state()["proofpoint"]["orgs"] if o["domain"] == c.domain)
    assert state["puts"] == []  # nothing was written


async def test_the_check_says_when_a_push_would_change_the_app_and_what_the_get_omits(
    api: Api, world: World
) -> None:
    c = world.seed_customer("OtherApp", 100)
    seed_org(world, c, settings={"application_id": ""}, getOmits=["remove_deleted_users"])  # not configured yet
    await api.put(c, {"customer": "OtherApp", "destinations": [proofpoint(c)]})
    reply = await api.call("proofpoint_check", "GET", ids(c))
    [entry] = reply.body["destinations"]
    assert entry["changes"] == ["ad_key", "application_id"] and entry["put"]["application_id"] == c.app_id
    assert entry["get"]["ad_key"] == "" and "remove_deleted_users" not in entry["put"]
    assert any("remove_deleted_users" in n and "full-replace" in n for n in entry["notes"])


async def test_a_failing_org_read_is_that_destinations_error_without_the_password(api: Api, world: World) -> None:
    c = world.seed_customer("Unknown", 100)
    world.seed_accounts()
    elsewhere = proofpoint(c)
    elsewhere["options"] = {**elsewhere["options"], "domain": "no-such-org.example"}  # type: ignore[dict-item]
    await api.put(c, {"customer": "Unknown", "destinations": [elsewhere]})
    reply = await api.call("proofpoint_check", "GET", ids(c))
    assert reply.status == 200
    [entry] = reply.body["destinations"]
    assert entry["error"]["code"] == "ProofpointOrgNotFound" and entry["get"] is None and entry["put"] is None
    assert world.proofpoint_password not in reply.text


async def test_bad_input_gets_json_4xx_and_changes_nothing(api: Api, world: World) -> None:
    c = world.seed_customer("Bad", 100)
    seed_org(world, c)
    bad_path = await api.call("proofpoint_check", "GET", {"tenantId": "not-a-guid", "appId": c.app_id})
    assert bad_path.status == 400 and bad_path.code == "InvalidPath"
    unknown = await api.call("proofpoint_check", "GET", ids(c))
    assert unknown.status == 404 and unknown.code == "TargetNotFound"
    await api.put(c, {"customer": "Bad", "destinations": []})
    none = await api.call("proofpoint_check", "GET", ids(c))
    assert none.status == 404 and none.code == "DestinationNotFound"
    wrong_method = await api.call("proofpoint_check", "POST", ids(c), {})
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "GET"
    reader = await api.call("proofpoint_check", "GET", ids(c), caller=("reader@msp.example", (Role.READ.value,)))
    assert reader.status == 403 and reader.code == "Forbidden"
    anonymous = await api.call("proofpoint_check", "GET", ids(c), caller=None)
    assert anonymous.status == 401
    state = next(o for o in world.sb.control.state()["proofpoint"]["orgs"] if o["domain"] == c.domain)
    assert state["puts"] == []


async def test_the_command_line_prints_the_same_check_with_no_secret(api: Api, world: World) -> None:
    c = world.seed_customer("Cli", 100)
    seed_org(world, c)
    await api.put(c, {"customer": "Cli", "destinations": [proofpoint(c)]})
    for extra in ([], ["--json"]):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "shared", "--verbose", "--table-prefix", world.prefix,
                             "proofpoint-check", c.tenant_id, c.app_id, *extra],
            cwd=ROOT, env={**os.environ, **world.env}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr
        for value in secrets_of(world, c):
            assert value not in output
        if extra:
            [entry] = json.loads(done.stdout)["destinations"]
            assert entry["put"]["ad_key"] == "(the new secret)" and entry["get"]["tenant_id"] == c.tenant_id
        else:
            assert '"tenant_id": "' + c.tenant_id in done.stdout and "(the new secret)" in done.stdout
    bad = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "shared", "proofpoint-check", "nope", c.app_id],
        cwd=ROOT, env={**os.environ, **world.env}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'nope' is not" in bad.stderr and not bad.stdout
