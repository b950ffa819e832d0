"""Bulk onboarding end to end against the sandbox, every adapter real: the partner admin's device code sign-in, the
GDAP customers and roles (shared.adapters.partner), Partner Center's consent and Graph's app role assignments and
owners as the admin, discovery and the dry run as the rotator's own identity, Proofpoint's org list, the run state
and audit on Azurite, and the session kept in and deleted from Key Vault."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from shared.adapters.partner import CUSTOMER_DELEGATED_SCOPES
from shared.bootstrap import services
from shared.bulk_onboarding import GRAPH_APP_PERMISSIONS, release_session, session_secret_name, signed_in
from shared.ports import InstallMethod
from tests.onboarding import gdap_world
from tests.onboarding.gdap_world import CHANNEL, app_id, domain, signed_in_session, tenant_id
from tests.rotation.conftest import World

pytestmark = pytest.mark.sandbox


def tenant_state(world: World, tenant: str) -> dict[str, Any]:
    return next(t for t in world.sb.control.state()["tenants"] if t["id"] == tenant)


@pytest.mark.parametrize("method", [InstallMethod.PARTNER_CENTER, InstallMethod.GRAPH])
async def test_one_sign_in_onboards_every_gdap_customer(world: World, method: InstallMethod,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gdap_world.seed(world.sb.control, 4, missing_role_every=4)  # customer 4's relationship lacks PRA
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL)
    msp_app = settings.msp_app_client_id
    if method is InstallMethod.GRAPH:
        # The Graph method needs the MSP app consented once in the tenant (docs/partner-access.md): a consent made
        # by hand earlier, without the application permissions.
        world.sb.control.seed({"tenants": [{"id": tenant_id(n),
                                            "delegatedGrants": {msp_app: list(CUSTOMER_DELEGATED_SCOPES)}}
                                           for n in range(1, 5)]})
    async with services(settings, table_prefix=world.prefix) as svc, aiohttp.ClientSession() as http:
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        engine = svc.bulk_onboarding()
        run = await engine.start(session, None, method)
        doc = await engine.work(session, run.run_id)
        assert doc["state"] == "finished", json.dumps(doc, indent=1)
        states = {t["tenantId"]: t for t in doc["tenants"]}
        for n in (1, 2, 3):
            t = states[tenant_id(n)]
            assert t["state"] == "done", t
            assert (t["appId"], t["proofpointDomain"]) == (app_id(n), domain(n))
            target, _ = await svc.state.get_target(tenant_id(n), app_id(n))
            assert target.destinations[0].options["domain"] == domain(n)
            # in the tenant: the MSP app's service principal, its Graph permissions, owner of the Proofpoint app
            tenant = tenant_state(world, tenant_id(n))
            sp = next(s for s in tenant["servicePrincipals"] if s["appId"] == msp_app)
            app = next(a for a in tenant["applications"] if a["appId"] == app_id(n))
            assert sp["id"] in json.dumps(app.get("owners", []))
            assert set(GRAPH_APP_PERMISSIONS) <= set(json.dumps(tenant).split('"')), "permissions granted"
            events = await svc.state.events(tenant_id(n), app_id(n))
            assert {e.actor for e in events if e.step.startswith("onboarding")} == {
                "onboarding:partner-admin@msp.example"}
        refused = states[tenant_id(4)]
        assert refused["state"] == "failed" and refused["error"]["code"] == "GdapRoleMissing"
        assert "Privileged Role Administrator" in refused["error"]["fix"]
        if method is InstallMethod.PARTNER_CENTER:  # nothing was tried there (with Graph, the consent made one)
            assert not any(s["appId"] == msp_app
                           for s in tenant_state(world, tenant_id(4)).get("servicePrincipals", []))
        # a second run: the onboarded are skipped, nothing is changed again
        again = await engine.work(session, (await engine.start(session, None, method)).run_id)
        assert again["counts"]["skipped"] == 3 and again["counts"]["failed"] == 1
        token = session.sign_in.refresh_token_for_vault()
        assert token
        assert svc.onboarding_runs is not None
        stored = json.dumps(await svc.onboarding_runs.all_rows(), default=str) \
            + json.dumps(await svc.state.all_rows(), default=str)
        await session.close()
    # the admin's refresh token never reached a log record, a row, or the progress documents
    seen = caplog.text + "".join(repr(r.__dict__) for r in caplog.records) + stored + json.dumps(doc) \
        + json.dumps(again)
    assert token not in seen


async def test_a_web_run_keeps_its_session_in_key_vault_until_it_ends(world: World) -> None:
    gdap_world.seed(world.sb.control, 1)
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL)
    async with services(settings, table_prefix=world.prefix) as svc, aiohttp.ClientSession() as http:
        assert svc.partner_sessions is not None and svc.onboarding_runs is not None
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        run = await signed_in(svc.onboarding_runs, svc.partner_sessions, session, svc.engine.clock)
        name = session_secret_name(run.run_id)
        kept = world.sb.control.state()["keyvault"]["secrets"][name]
        assert kept[-1]["content_type"] == "application/x-partner-session"
        assert kept[-1]["tags"] == {"purpose": "onboarding-session"}
        engine = svc.bulk_onboarding()
        await engine.start(session, None, InstallMethod.PARTNER_CENTER, run_id=run.run_id)
        doc = await engine.work(session, run.run_id)
        assert doc["counts"]["done"] == 1
        # the next invocation opens the kept session: its refresh token works in the customer tenant
        reopened = await svc.partner_sessions.open(name)
        assert reopened.admin.user_principal_name == "partner-admin@msp.example"
        assert domain(1) in await reopened.domains(tenant_id(1))
        assert await release_session(svc.onboarding_runs, svc.partner_sessions, run.run_id)
        await reopened.close()
        assert name not in world.sb.control.state()["keyvault"]["secrets"]
        # signed in again for the same run (to resume it): the deleted name is recovered and written again
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        await signed_in(svc.onboarding_runs, svc.partner_sessions, session, svc.engine.clock, run.run_id)
        assert name in world.sb.control.state()["keyvault"]["secrets"]
        await session.close()


async def test_a_new_service_principal_not_yet_known_to_the_token_service_is_waited_for(world: World) -> None:
    """The sandbox's service-principal delay: the rotator's own token in a tenant the MSP app was just put in is
    refused (AADSTS700016) for a while; discovery waits for it and the tenant is onboarded in the same run."""
    from dataclasses import replace

    gdap_world.seed(world.sb.control, 1)
    world.sb.control.set_service_principal_delay(2)
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL)
    async with services(settings, table_prefix=world.prefix) as svc, aiohttp.ClientSession() as http:
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        engine = svc.bulk_onboarding()
        engine.config = replace(engine.config, propagation_wait=1.0)
        waits: list[float] = []
        sleep = engine.sleep

        async def counted(seconds: float) -> None:
            waits.append(seconds)
            await sleep(seconds)

        engine.sleep = counted
        doc = await engine.work(session, (await engine.start(session, None, InstallMethod.PARTNER_CENTER)).run_id)
        await session.close()
    assert doc["counts"]["done"] == 1, json.dumps(doc, indent=1)
    assert waits and set(waits) == {1.0}


async def test_a_plan_only_run_of_new_customers_plans_them_against_the_real_adapters(world: World) -> None:
    """The sandbox's Entra refuses the admin a token in a tenant the MSP app is not in (AADSTS65001), as Entra does:
    a plan-only run of new customers (the usual first plan) checks their roles, changes nothing, and says the
    Proofpoint org is matched after the install; it failed every such tenant with "resume the run later" before."""
    gdap_world.seed(world.sb.control, 2)
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL)
    async with services(settings, table_prefix=world.prefix) as svc, aiohttp.ClientSession() as http:
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        engine = svc.bulk_onboarding()
        run = await engine.start(session, None, InstallMethod.PARTNER_CENTER, plan_only=True)
        doc = await engine.work(session, run.run_id)
        await session.close()
    assert doc["state"] == "finished" and doc["counts"]["done"] == 2 and doc["counts"]["failed"] == 0, doc
    for n in (1, 2):
        t = next(t for t in doc["tenants"] if t["tenantId"] == tenant_id(n))
        assert {s["step"]: s["state"] for s in t["steps"]}["roles"] == "done"
        assert "not in this tenant yet" in next(s for s in t["steps"] if s["step"] == "register")["detail"]
        assert not any(s["appId"] == settings.msp_app_client_id
                       for s in tenant_state(world, tenant_id(n)).get("servicePrincipals", []))


async def test_a_refused_read_of_the_partners_own_relationships_names_the_partner_side_fix(world: World) -> None:
    """Graph refuses the GDAP reads to a sign-in without DelegatedAdminRelationship.Read.All (403, as the sandbox's
    Graph answers a token without the scope): the refusal's fix is about the partner tenant's consent and sign-in, not
    "add Application Administrator to the relationship with this customer" (what it said before: the customer-tenant
    fix for a read in the partner's own tenant)."""
    from sandbox.client import answer_device_code
    from shared.adapters.delegated import GRAPH
    from shared.adapters.partner_sessions import partner_session, sign_in
    from shared.errors import PartnerRefused

    gdap_world.seed(world.sb.control, 1)
    world.sb.control.set_device_code_interval(1)
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL)
    async with aiohttp.ClientSession() as http:
        signing = sign_in(settings, http, confidential=False)
        prompt = await signing.start_device_code((f"{GRAPH}/User.Read", "offline_access", "openid", "profile"))
        waiting = asyncio.ensure_future(signing.wait_device_code(prompt))
        await asyncio.to_thread(answer_device_code, world.sb.endpoints["entra"], prompt.user_code, gdap_world.ADMIN,
                                world.sb.ca_file)
        await waiting
        session = partner_session(settings, signing, http)
        with pytest.raises(PartnerRefused) as refused:
            await session.customers()
        await session.close()
    assert refused.value.code == "GdapReadDenied"
    assert "DelegatedAdminRelationship.Read.All" in refused.value.fix and "create-msp-app.sh" in refused.value.fix
    assert "Application Administrator" not in refused.value.fix


async def test_two_resumes_at_once_make_each_change_and_audit_event_once(world: World) -> None:
    """Two resumes of one run at the same time (two tabs, or the CLI beside the dashboard), every adapter real and
    the run state on Azurite: while the first is inside a tenant's owner call (held by the sandbox), the second
    leaves that tenant to it (the worker's claim on the row) and works only what nobody holds. Every change in a
    customer tenant and every audit event happens once."""
    gdap_world.seed(world.sb.control, 3)
    # One tenant at a time per resume: the first holds exactly the tenant it is in.
    settings = world.settings(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL, ONBOARDING_CONCURRENCY="1")
    async with services(settings, table_prefix=world.prefix) as svc, aiohttp.ClientSession() as http:
        session = await signed_in_session(settings, http, world.sb.control, world.sb.endpoints["entra"],
                                          world.sb.ca_file)
        run = await svc.bulk_onboarding().start(session, None, InstallMethod.PARTNER_CENTER)
        hold = world.sb.control.add_hold("graph", method="POST", path=r"/owners/\$ref$")
        first = asyncio.create_task(svc.bulk_onboarding().work(session, run.run_id))
        await asyncio.to_thread(world.sb.control.wait_held, hold, 60)
        second = await svc.bulk_onboarding().work(session, run.run_id)  # the other tab, meanwhile
        running = [t for t in second["tenants"] if t["state"] == "running"]
        assert len(running) == 1 and second["counts"]["done"] == 2, json.dumps(second, indent=1)
        world.sb.control.release(hold)
        doc = await first
        assert doc["state"] == "finished" and doc["counts"]["done"] == 3, json.dumps(doc, indent=1)
        for n in (1, 2, 3):
            events = await svc.state.events(tenant_id(n), app_id(n))
            for step, outcome in (("onboarding-owner", "added"), ("onboarding-registry", "created")):
                assert sorted(e.outcome for e in events if e.step == step) == [outcome, "started"], step
            sp_events = [e.outcome for e in await svc.state.events(tenant_id(n), settings.msp_app_client_id)
                         if e.step == "onboarding-service-principal"]
            assert len(sp_events) == 2 and sp_events.count("started") == 1, sp_events
            app = next(a for a in tenant_state(world, tenant_id(n))["applications"] if a["appId"] == app_id(n))
            assert len(app.get("owners", [])) == 1
        await session.close()
