"""A signed approval link through the local host (`python -m shared serve`: the Functions host's routing and App
Service Authentication in front of the app), as a person follows it from an alert: sent to sign in first, back to the
confirmation page, its form posted with the session; a reader's session decides nothing."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from html import unescape
from urllib.parse import urlencode, urlparse

import requests

from shared.approval_links import SignedApprovalLinks
from shared.change_control import ApprovalStatus, ChangeControl, Mode
from shared.domain import Actor, Policy
from tests.rotation.conftest import Rotator, World
from tests.rotation.conftest import rotator as rotator  # the fixture, used here
from tests.rotation.test_push_retire import destinations
from tests.serve.conftest import register_callback, serving, signed_in


async def test_a_person_follows_a_link_signs_in_and_approves(world: World, rotator: Rotator) -> None:
    world.seed_accounts()
    c = world.seed_customer("Served", 12)
    async with rotator() as svc:
        await svc.state.create_target(replace(c.target(destinations(world, c)), policy=Policy(
            change_control=ChangeControl(Mode.APPROVAL, "Europe/Berlin"))))
        await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
        held = await svc.approvals.get(c.tenant_id, c.app_id)  # type: ignore[union-attr]
        assert held is not None and held[0].status is ApprovalStatus.PENDING
        links = await SignedApprovalLinks(svc.consent_keys, "https://rotator.example", svc.engine.clock).links(held[0])
    approve = urlparse(links["approve"])
    path = f"{approve.path}?{approve.query}"
    answers = await asyncio.to_thread(follow, world, path)
    scanner, refused_page, page, refused, done, replayed = (answers[k] for k in (
        "scanner", "refused_page", "page", "refused", "done", "replayed"))
    assert scanner.status_code == 302 and scanner.headers["Location"].startswith("/.auth/login/aad?")
    assert urlencode({"post_login_redirect_uri": path}).split("=", 1)[1] in scanner.headers["Location"]
    assert refused_page.status_code == 403
    assert page.status_code == 200 and "Approve the rotation of Served" in page.text
    assert refused.status_code == 403
    assert done.status_code == 200 and "Approved" in done.text, done.text
    assert replayed.status_code == 409
    async with rotator() as svc:
        decided = await svc.approvals.get(c.tenant_id, c.app_id)  # type: ignore[union-attr]
    assert decided is not None and decided[0].status is ApprovalStatus.APPROVED
    assert decided[0].decided_by == "manual:operator@msp.example"


def follow(world: World, path: str) -> dict[str, requests.Response]:
    """What a scanner, a reader and the operator get from the link, through the served app."""
    with serving(world) as served:
        register_callback(world.sb, served.url)
        found = {"scanner": requests.get(served.url + path, allow_redirects=False, timeout=60)}
        reader = signed_in(world.sb, served.url, "reader@msp.example", then=path)
        found["refused_page"] = reader.get(served.url + path, allow_redirects=False, timeout=60)
        operator = signed_in(world.sb, served.url, "operator@msp.example", then=path)
        found["page"] = operator.get(served.url + path, allow_redirects=False, timeout=60)
        link = unescape(re.search(r'name="link" value="([^"]+)"', found["page"].text).group(1))  # type: ignore[union-attr]
        post = served.url + "/api/approval-links"
        found["refused"] = reader.post(post, data={"link": link}, allow_redirects=False, timeout=60)
        found["done"] = operator.post(post, data={"link": link}, allow_redirects=False, timeout=120)
        found["replayed"] = operator.post(post, data={"link": link}, timeout=60)
    return found
