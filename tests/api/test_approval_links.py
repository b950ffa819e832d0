"""The signed approval links in an alert (sandbox + Azurite): GET shows a confirmation page and changes nothing
(scanners fetch links), only the page's POST decides, as the signed-in operator, once; an expired, reused, tampered,
wrong-action or cross-site link decides nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from shared import bootstrap, sealed
from shared.clock import SystemClock
from shared.domain import Actor
from tests.api.conftest import Api
from tests.api.test_approvals import APPROVAL, READER, register
from tests.rotation.conftest import Customer, World

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
AS_JSON = {"Accept": "application/json"}


async def links_of(api: Api, world: World, c: Customer) -> dict[str, str]:
    """The link states of the approval-requested alert the timer's assessment raised."""
    world.seed_accounts()
    async with bootstrap.services() as svc:
        await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
    alert = next(a for a in api.alerter.raised if a.condition == "approval-requested" and a.tenant_id == c.tenant_id)
    found = {}
    for action in ("approve", "postpone", "reject"):
        url = urlparse(alert.details[f"{action}Link"])
        assert url.path == "/api/approval-links"
        found[action] = parse_qs(url.query)["link"][0]
    return found


async def post(api: Api, link: str, **fields: str) -> tuple[int, dict[str, object] | None, str]:
    reply = await api.call("approval_link", "POST", raw=urlencode({"link": link, **fields}).encode(),
                           headers={**FORM, **AS_JSON})
    return reply.status, reply.body, reply.code or ""


async def pending(api: Api) -> list[str]:
    return [a["requestId"] for a in (await api.call("approvals", params={"status": "pending"})).body["approvals"]]


async def test_get_only_shows_a_confirmation_and_the_page_post_decides_once(api: Api, world: World) -> None:
    c = world.seed_customer("Linked", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    request_id = (await pending(api))[0]
    # A scanner (no session) is sent to sign in; a reader may not decide; neither changes anything.
    scanner = await api.call("approval_link", params={"link": links["approve"]}, headers={}, caller=None)
    assert scanner.status == 302 and scanner.headers["Location"].startswith("/.auth/login/aad?")
    assert "approval-links" in scanner.headers["Location"]
    reader = await api.call("approval_link", params={"link": links["approve"]}, headers={}, caller=READER)
    assert reader.status == 403
    page = await api.call("approval_link", params={"link": links["approve"]}, headers={})
    assert page.status == 200 and "<form method=\"post\"" in page.text and "Approve" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer" and "form-action 'self'" in \
        page.headers["Content-Security-Policy"]
    for _ in range(3):
        again = await api.call("approval_link", params={"link": links["approve"]}, headers=AS_JSON)
        assert again.status == 200 and again.body["action"] == "approve"
    assert await pending(api) == [request_id], "GET decided nothing"
    # The page's POST decides, as the signed-in operator.
    status, body, _ = await post(api, links["approve"])
    assert status == 200 and body is not None
    assert body["approval"]["status"] == "approved"  # type: ignore[index]
    assert body["approval"]["decidedBy"] == "manual:operator@msp.example"  # type: ignore[index]
    async with bootstrap.services() as svc:
        events = await svc.state.events(c.tenant_id, c.app_id)
    assert any(e.step == "approval" and "signed link" in e.detail for e in events)
    # Reused, or another action's link of the same request: nothing more is decided.
    for link in (links["approve"], links["reject"]):
        status, _, code = await post(api, link)
        assert (status, code) == (409, "NotPending")


async def test_a_spent_link_is_refused_even_while_the_request_is_pending(api: Api, world: World) -> None:
    c = world.seed_customer("Spent", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    async with bootstrap.services() as svc:
        claims = json.loads(sealed.unb64(links["approve"].split(".")[1]))
        await svc.approvals.use_link(claims["n"], datetime.now(UTC) + timedelta(days=1))  # type: ignore[union-attr]
    status, _, code = await post(api, links["approve"])
    assert (status, code) == (409, "LinkUsed")
    assert len(await pending(api)) == 1


async def test_tampered_and_wrong_action_links_decide_nothing(api: Api, world: World) -> None:
    c = world.seed_customer("Tampered", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    version, payload, signature = links["approve"].split(".")
    claims = json.loads(sealed.unb64(payload))
    rejecting = sealed.b64(json.dumps({**claims, "x": "reject"}, separators=(",", ":")).encode())
    reject_signature = links["reject"].split(".")[2]
    forged = [
        f"{version}.{rejecting}.{signature}",  # the action changed, the approve link's signature kept
        f"{version}.{payload}.{reject_signature}",  # another link's signature
        f"{version}.{payload}.{signature[:-2]}AA",
        f"v1.{payload}.{signature}",  # presented as another flow's state
        "a1.not-base64!.x",
        "",
    ]
    for link in forged:
        status, _, code = await post(api, link)
        assert status == 400 and code in ("InvalidLink", "MissingLink"), (link, status, code)
        shown = await api.call("approval_link", params={"link": link}, headers=AS_JSON)
        assert shown.status == 400
    assert len(await pending(api)) == 1, "nothing was decided"


async def test_an_expired_link_decides_nothing(api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    c = world.seed_customer("Expired", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(days=7, minutes=1)))
    status, _, code = await post(api, links["approve"])
    assert (status, code) == (400, "LinkExpired")
    assert len(await pending(api)) == 1


async def test_postpone_needs_a_date_and_a_typo_does_not_spend_the_link(api: Api, world: World) -> None:
    c = world.seed_customer("Postponer", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    status, _, code = await post(api, links["postpone"])
    assert (status, code) == (400, "InvalidUntil")
    status, _, code = await post(api, links["postpone"], until="2020-01-01")
    assert (status, code) == (400, "InvalidUntil")
    until = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    status, body, _ = await post(api, links["postpone"], until=until)
    assert status == 200 and body["approval"]["status"] == "postponed"  # type: ignore[index]
    assert body["approval"]["until"].startswith(until)  # type: ignore[index]


async def test_a_cross_site_post_is_refused(api: Api, world: World) -> None:
    c = world.seed_customer("Cross", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://attacker.example"}):
        reply = await api.call("approval_link", "POST", raw=urlencode({"link": links["approve"]}).encode(),
                               headers={**FORM, **AS_JSON, **headers})
        assert (reply.status, reply.code) == (403, "CrossSite")
    same = await api.call("approval_link", "POST", raw=urlencode({"link": links["approve"]}).encode(),
                          headers={**FORM, **AS_JSON, "Sec-Fetch-Site": "same-origin", "Origin": "null"})
    assert same.status == 200
    assert (await api.call("approval_link", "POST", raw=b"{}", headers={"Content-Type": "application/json"})
            ).status == 415


async def test_a_malformed_form_is_refused(api: Api, world: World) -> None:
    c = world.seed_customer("Malformed", 12)
    await register(api, c, APPROVAL)
    links = await links_of(api, world, c)
    extra = await api.call("approval_link", "POST", raw=urlencode({"link": links["approve"], "who": "x"}).encode(),
                           headers={**FORM, **AS_JSON})
    assert (extra.status, extra.code) == (422, "InvalidRequest")
    twice = await api.call("approval_link", "POST", raw=f"link={links['approve']}&link=x".encode(),
                           headers={**FORM, **AS_JSON})
    assert (twice.status, twice.code) == (400, "MalformedForm")
    assert len(await pending(api)) == 1
