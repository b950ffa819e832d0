"""The consent page's second click end to end over real HTTPS: Entra's admin consent (the sandbox's), the page's
link to Entra's authorize endpoint at the customer's tenant, the customer's admin signing in (authorization code +
PKCE, redeemed with the rotator's client assertion), the owner added with the admin's delegated token (Graph's owner
$ref, refused without Application Administrator as Graph refuses), the target registered from the MSP's Proofpoint
channel and destinations template, the dry run; refusals, replay, and no token or secret anywhere."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest

from sandbox.client import sign_in_as
from shared import bootstrap
from tests.api.conftest import Api, Reply
from tests.api.test_consent import HTML, JSON, answer_of, link_for, open_in_browser
from tests.rotation.conftest import Customer, World, customer_seed

pytestmark = pytest.mark.sandbox
CHANNEL = "msp-onevisit.example"
ADMIN, CLERK = "admin@{}", "clerk@{}"


class Visit:
    def __init__(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        self.api = api
        monkeypatch.setenv("PROOFPOINT_CHANNEL_DOMAIN", CHANNEL)
        monkeypatch.setenv("PROOFPOINT_CHANNEL_STACK", "us1")
        api.world.seed_accounts()
        api.world.sb.control.seed({"proofpoint": {"channels": [{"domain": CHANNEL, "stack": "us1"}]}})

    def customer(self, name: str, *, org: bool = True) -> Customer:
        """A customer without GDAP: not consented yet, the MSP app not an owner of its Proofpoint app; an admin
        holding Application Administrator and a clerk holding no role; its Proofpoint org under the MSP's channel."""
        c, seed = customer_seed(name, days_left=20, consent=False, owned=False)
        tenant = seed["tenants"][0]
        tenant["domains"] = [c.domain]
        tenant["users"] = [
            {"userPrincipalName": ADMIN.format(c.domain), "displayName": f"{name} Admin",
             "directoryRoles": ["Application Administrator"]},
            {"userPrincipalName": CLERK.format(c.domain), "displayName": f"{name} Clerk"},
        ]
        if org:
            seed["proofpoint"]["orgs"][0].update({"parent": CHANNEL, "name": f"{name} Ltd"})
        else:
            seed["proofpoint"]["orgs"] = []
        self.api.world.sb.control.seed(seed)
        return c

    async def consented(self, c: Customer) -> Reply:
        """The first click: the admin consents; the consent page (JSON) lists the app with its second click."""
        answer = answer_of(open_in_browser(self.api, (await link_for(self.api, c.tenant_id))["url"]))
        page = await self.api.call("consent", params=answer, headers=JSON)
        assert page.status == 200, page.text
        return page

    async def second_click(self, c: Customer, upn: str, accept: dict[str, str] = JSON) -> tuple[Reply, dict[str, str]]:
        page = await self.consented(c)
        [app] = page.body["applications"]
        signed = sign_in_as(app["secondClick"], upn, self.api.world.sb.ca_file)
        assert signed.redirect_uri == self.api.world.env["CONSENT_REDIRECT_URI"]
        return await self.api.call("consent", params=signed.params, headers=accept), signed.params


@pytest.fixture
def visit(api: Api, monkeypatch: pytest.MonkeyPatch) -> Visit:
    return Visit(api, monkeypatch)


def owners(world: World, c: Customer) -> list[str]:
    return list(world.application(c)["owners"])


def msp_principal(world: World, c: Customer) -> str:
    tenant = next(t for t in world.sb.control.state()["tenants"] if t["id"] == c.tenant_id)
    msp = world.sb.control.msp()["appId"]
    return str(next(s["id"] for s in tenant["servicePrincipals"] if s["appId"] == msp))


async def test_one_visit_consents_adds_the_owner_registers_and_dry_runs(
    visit: Visit, svc: bootstrap.Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = visit.api.world
    c = visit.customer("Onevisit")
    page = await visit.consented(c)
    [app] = page.body["applications"]
    link = urlparse(app["secondClick"])
    query = dict(parse_qsl(link.query))
    assert link.path == f"/{c.tenant_id}/oauth2/v2.0/authorize" and query["code_challenge_method"] == "S256"
    assert owners(world, c) == []

    signed = sign_in_as(app["secondClick"], ADMIN.format(c.domain), world.sb.ca_file)
    reply = await visit.api.call("consent", params=signed.params, headers=JSON)

    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.body
    assert body["ok"] is True and body["admin"] == ADMIN.format(c.domain)
    assert [(s["name"], s["outcome"]) for s in body["steps"]] == [
        ("sign-in", "done"), ("owner", "done"), ("register", "done"), ("dry-run", "done")]
    owner = body["steps"][1]["detail"]
    assert "Proofpoint Essentials" in owner and c.app_id in owner and msp_principal(world, c) in owner
    assert owners(world, c) == [msp_principal(world, c)]
    target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert target.customer == "Onevisit Ltd"
    assert [(d.kind, d.options["domain"], d.options["stack"]) for d in target.destinations] == [
        ("proofpoint", c.domain, c.stack)]
    assert "would-rotate" in body["steps"][3]["detail"]  # 20 days left: due
    events = await svc.state.events(c.tenant_id, c.app_id)
    mine = [e for e in events if e.step == "onevisit"]
    assert {e.outcome for e in mine} == {"owner adding", "owner added", "registered"}
    assert {e.actor for e in mine} == {f"manual:{ADMIN.format(c.domain)}"}
    # Never the code, the token or a secret: not in the answer, not in the logs.
    said = reply.text + caplog.text + json.dumps([e.detail for e in events])
    assert signed.params["code"] not in said and c.secret not in said
    assert not re.search(r"eyJ[\w-]*\.eyJ", said)  # no JWT (the admin's access or ID token: header.payload)

    # The page a browser gets says the same, with the app's name and id.
    again = await visit.api.call("consent", params=signed.params, headers=HTML)
    assert again.status == 409  # the answer is good once


async def test_an_admin_without_application_administrator_is_told_and_nothing_changes(
    visit: Visit, svc: bootstrap.Services
) -> None:
    world = visit.api.world
    c = visit.customer("Clerkco")
    reply, _ = await visit.second_click(c, CLERK.format(c.domain), HTML)
    assert reply.status == 200
    assert "Not completed" in reply.text and "Application Administrator" in reply.text
    assert "<script" not in reply.text and "script-src" not in reply.headers["Content-Security-Policy"]
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Referrer-Policy"] == "no-referrer"
    assert "Proofpoint Essentials" in reply.text and c.app_id in reply.text
    assert "Sign in again and retry" in reply.text
    assert owners(world, c) == []
    assert [t for t, _ in await svc.state.list_targets() if t.tenant_id == c.tenant_id] == []


async def test_a_failed_visit_offers_a_fresh_link_and_the_right_admin_completes_it(visit: Visit) -> None:
    world = visit.api.world
    c = visit.customer("Retryco")
    failed, spent = await visit.second_click(c, CLERK.format(c.domain))
    assert failed.body["ok"] is False and failed.body["retry"]
    assert dict(parse_qsl(urlparse(failed.body["retry"]).query))["state"] != spent["state"]
    signed = sign_in_as(failed.body["retry"], ADMIN.format(c.domain), world.sb.ca_file)
    done = await visit.api.call("consent", params=signed.params, headers=JSON)
    assert done.body["ok"] is True and done.body["retry"] is None
    assert owners(world, c) == [msp_principal(world, c)]


async def test_a_replayed_answer_changes_nothing(visit: Visit, svc: bootstrap.Services) -> None:
    world = visit.api.world
    c = visit.customer("Replayvisit")
    first, params = await visit.second_click(c, ADMIN.format(c.domain))
    assert first.body["ok"] is True
    await svc.state.delete_target(c.tenant_id, c.app_id)  # an operator removed it since: a replay must not re-add
    replay = await visit.api.call("consent", params=params, headers=JSON)
    assert (replay.status, replay.body["error"]["code"]) == (409, "StateReplayed")
    assert [t for t, _ in await svc.state.list_targets() if t.tenant_id == c.tenant_id] == []
    assert owners(world, c) == [msp_principal(world, c)]


async def test_a_forged_or_altered_answer_is_refused_before_anything_reaches_entra(visit: Visit) -> None:
    c = visit.customer("Forgeco")
    page = await visit.consented(c)
    state = dict(parse_qsl(urlparse(page.body["applications"][0]["secondClick"]).query))["state"]
    version, payload, signature = state.split(".")
    for forged in (f"{version}.{payload}.{signature[:-2]}AA", f"{version}.{payload[:-2]}AA.{signature}", "o1.e30.e30"):
        reply = await visit.api.call("consent", params={"code": "x" * 40, "state": forged}, headers=JSON)
        assert (reply.status, reply.body["error"]["code"]) == (400, "InvalidState")
    assert owners(visit.api.world, c) == []


async def test_entra_refusing_the_sign_in_shows_only_its_code(visit: Visit) -> None:
    c = visit.customer("Declineco")
    page = await visit.consented(c)
    state = dict(parse_qsl(urlparse(page.body["applications"][0]["secondClick"]).query))["state"]
    reply = await visit.api.call("consent", headers=HTML, params={
        "state": state, "error": "access_denied", "error_description": "AADSTS65004: go to https://evil.example"})
    assert reply.status == 400 and "AADSTS65004" in reply.text and "evil" not in reply.text


async def test_no_proofpoint_org_for_the_tenant_leaves_the_owner_and_says_the_msp_registers(visit: Visit) -> None:
    c = visit.customer("Orgless", org=False)
    reply, _ = await visit.second_click(c, ADMIN.format(c.domain))
    steps = {s["name"]: s for s in reply.body["steps"]}
    assert steps["owner"]["outcome"] == "done" and steps["register"]["outcome"] == "failed"
    assert steps["register"]["code"] == "ProofpointOrgNotFound" and "MSP registers" in steps["register"]["fix"]
    assert reply.body["retry"] is None  # another sign-in would not help: the MSP registers it
    assert owners(visit.api.world, c) == [msp_principal(visit.api.world, c)]


async def test_a_visit_cut_off_after_the_owner_is_finished_by_signing_in_again(
        visit: Visit, svc: bootstrap.Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after the owner was added, before the registration (Azure Tables keeps the spent state,
    unfinished): the browser's reload gets the page it never showed, a failed sign-in step VisitInterrupted with a
    fresh link for the same app, never an action; the admin signs in with it and the visit finishes, the owner
    kept, registered once."""
    from shared import onevisit
    from tests.fakes import Crash

    world = visit.api.world
    c = visit.customer("Crashvisit")
    page = await visit.consented(c)
    [app] = page.body["applications"]
    signed = sign_in_as(app["secondClick"], ADMIN.format(c.domain), world.sb.ca_file)
    real = onevisit.TemplateRegistrar.__call__

    async def die(*args: Any, **kwargs: Any) -> Any:
        raise Crash("the process died during the registration")

    monkeypatch.setattr(onevisit.TemplateRegistrar, "__call__", die)
    with pytest.raises(Crash):
        await visit.api.call("consent", params=signed.params, headers=JSON)
    monkeypatch.setattr(onevisit.TemplateRegistrar, "__call__", real)  # the next process
    assert owners(world, c) == [msp_principal(world, c)]  # the owner step happened, audited
    assert sorted(e.outcome for e in await svc.state.events(c.tenant_id, c.app_id) if e.step == "onevisit") == [
        "owner added", "owner adding"]

    reload = await visit.api.call("consent", params=signed.params, headers=JSON)  # the answer never shown
    assert reload.status == 200 and reload.body["ok"] is False, reload.text
    assert [(s["name"], s["outcome"], s["code"]) for s in reload.body["steps"]] == [
        ("sign-in", "failed", "VisitInterrupted")]
    assert (reload.body["tenantId"], reload.body["appId"]) == (c.tenant_id, c.app_id)
    assert [t for t, _ in await svc.state.list_targets() if t.tenant_id == c.tenant_id] == []  # no action
    retry = reload.body["retry"]
    assert urlparse(retry).path == f"/{c.tenant_id}/oauth2/v2.0/authorize"
    assert dict(parse_qsl(urlparse(retry).query))["state"] != signed.params["state"]  # a fresh state
    html_reload = await visit.api.call("consent", params=signed.params, headers=HTML)
    assert html_reload.status == 200 and "Sign in again and retry" in html_reload.text
    assert "interrupted" in html_reload.text

    again = sign_in_as(retry, ADMIN.format(c.domain), world.sb.ca_file)
    done = await visit.api.call("consent", params=again.params, headers=JSON)
    assert done.status == 200 and done.body["ok"] is True, done.text
    assert [(s["name"], s["outcome"]) for s in done.body["steps"]] == [
        ("sign-in", "done"), ("owner", "already"), ("register", "done"), ("dry-run", "done")]
    assert owners(world, c) == [msp_principal(world, c)]
    assert sorted(e.outcome for e in await svc.state.events(c.tenant_id, c.app_id) if e.step == "onevisit") == [
        "owner added", "owner adding", "registered"]  # each change once
    finished = await visit.api.call("consent", params=again.params, headers=JSON)  # finished: a replay, as before
    assert (finished.status, finished.body["error"]["code"]) == (409, "StateReplayed")
    cut_off = await visit.api.call("consent", params=signed.params, headers=JSON)
    assert cut_off.body["steps"][0]["code"] == "VisitInterrupted"  # still only a link, never an action
