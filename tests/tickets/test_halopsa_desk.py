"""The HaloPSA desk, over real HTTPS against the sandbox's HaloPSA stand-in: the lifecycle (open, note, close,
find_open after a crash, check), the PSA's refusals (credentials, scopes, unknown routing, throttling, outages), the
defects the field shows (long titles, non-ASCII names, a ticket closed or deleted by a person in Halo) and no secret
in any log or exception."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import requests

from shared.tickets import TicketDraft, TicketError, TicketRef, TicketRoute, desk
from shared.tickets.halopsa import SUMMARY_LIMIT, HaloDesk, build, summary, tag

pytestmark = pytest.mark.sandbox

SECRET = "halo-client-secret-7f3a9c"  # the stand-in's seeded application secret
HUMAN = {"client_id": "dana", "client_secret": "dana-secret", "scopes": "all", "agent": "Dana Desk"}
TENANT = "b7a5c0de-0000-4000-8000-000000000026"


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.fixture
def halo(sb: Any) -> Any:
    sb.control.seed({"psa_halopsa": {
        "applications": [{"client_id": "rotator", "client_secret": SECRET,
                          "scopes": ["edit:tickets", "read:tickets"], "agent": "Secret Rotator"}, HUMAN],
        "clients": [{"id": 12, "name": "Fabrikam"}, {"id": 31, "name": "Société Générale \u2013 Zürich 東京"}],
        "teams": [{"id": 1, "name": "Service Desk"}, {"id": 5, "name": "Security"}],
    }})
    return sb


@pytest.fixture
def config(halo: Any) -> dict[str, str]:
    return {"url": halo.endpoints["psa_halopsa"], "client_id": "rotator", "client_secret": SECRET, "client": "12",
            "team": "Service Desk"}


@pytest.fixture
def make(halo: Any, config: dict[str, str]) -> Callable[..., HaloDesk]:
    """A desk as a fresh process would build it (no token, nothing cached)."""
    def made(**changes: str) -> HaloDesk:
        return build({**config, **changes}, ca_bundle=halo.ca_file)
    return made


def draft(key: str = "t1|expired", *, title: str = "Sync secret expired for Fabrikam", customer: str = "Fabrikam",
          route: TicketRoute | None = None) -> TicketDraft:
    return TicketDraft(key=key, customer=customer, tenant_id=TENANT, condition="expired", title=title,
                       body="The Proofpoint sync secret expired on 2026-12-01.\nRotate it now.",
                       route=route or TicketRoute())


def halo_state(sb: Any) -> dict[str, Any]:
    state: dict[str, Any] = sb.control.state()["psa_halopsa"]
    return state


def human(sb: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    """Someone at the MSP working in Halo (another agent of the same instance)."""
    token = requests.post(sb.endpoints["psa_halopsa"] + "/auth/token", verify=sb.ca_file, timeout=10, data={
        "grant_type": "client_credentials", "client_id": HUMAN["client_id"], "client_secret": HUMAN["client_secret"],
        "scope": "all"}).json()["access_token"]
    return requests.request(method, sb.endpoints["psa_halopsa"] + path, headers={"Authorization": f"Bearer {token}"},
                            verify=sb.ca_file, timeout=10, **kwargs)


async def test_open_note_close_the_lifecycle(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make()
    ticket = await halo_desk.open(draft(route=TicketRoute(priority="High", ticket_type="Incident")))
    assert ticket.id == ticket.number and ticket.number.isdigit()
    assert ticket.url == f"{halo.endpoints['psa_halopsa']}/ticket?id={ticket.number}"
    [stored] = halo_state(halo)["tickets"]
    assert stored["id"] == int(ticket.id) and stored["client_id"] == 12 and stored["team"] == "Service Desk"
    assert stored["priority_id"] == 2 and stored["tickettype_id"] == 1 and stored["status_id"] == 1
    assert stored["summary"] == f"Sync secret expired for Fabrikam ({tag('t1|expired')})"
    assert stored["donotapplytemplateintheapi"] is True
    assert "Rotate it now." in stored["details_html"] and TENANT in stored["details_html"]

    await halo_desk.add_note(ticket, "Still expired on day 2 <see runbook>")
    await halo_desk.close(ticket, "Resolved: a new secret reached Proofpoint.", TicketRoute())
    state = halo_state(halo)
    assert [(a["outcome"], a["hiddenfromuser"], a["new_status"], a["who"]) for a in state["actions"]] == [
        ("Private Note", True, None, "Secret Rotator"), ("Private Note", True, 9, "Secret Rotator")]
    assert state["actions"][0]["note"] == "Still expired on day 2 &lt;see runbook&gt;"
    assert state["tickets"][0]["status_id"] == 9 and state["tickets"][0]["hasbeenclosed"] is True
    assert await halo_desk.find_open(draft()) is None  # closed tickets are not found


async def test_configured_outcomes_visibility_and_closed_status(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make(note_outcome="Note", close_outcome="Resolved", notes_visible="true", closed_status="Resolved")
    ticket = await halo_desk.open(draft(route=TicketRoute(board="security", status="In Progress")))
    await halo_desk.add_note(ticket, "n")
    await halo_desk.close(ticket, "fixed", TicketRoute(closed_status="Closed"))  # the route's status wins
    state = halo_state(halo)
    assert state["tickets"][0]["team"] == "Security"
    assert [(a["outcome"], a["hiddenfromuser"], a["new_status"]) for a in state["actions"]] == [
        ("Note", False, None), ("Resolved", False, 9)]
    other = await halo_desk.open(draft("t2|expired"))
    await make(close_outcome="7", closed_status="Resolved").close(other, "fixed", TicketRoute())  # an outcome by id
    state = halo_state(halo)
    assert state["tickets"][1]["status_id"] == 10  # the configured "Resolved"
    assert (state["actions"][-1]["outcome"], state["actions"][-1]["new_status"]) == ("Private Note", 10)


async def test_find_open_after_a_crash_finds_the_one_ticket(halo: Any, make: Callable[..., HaloDesk]) -> None:
    # The create reached Halo, the process died before the book recorded it: a new process finds it by the key.
    halo.control.add_fault("psa_halopsa", method="POST", path="^/api/Tickets$", when="after", drop=True)
    with pytest.raises(TicketError) as lost:
        await make().open(draft())
    assert lost.value.code == "TicketSystemUnreachable" and lost.value.retryable
    assert len(halo_state(halo)["tickets"]) == 1
    found = await make().find_open(draft())
    assert found is not None and found.number == str(halo_state(halo)["tickets"][0]["id"])
    assert await make().find_open(draft("t1|expiring-7d")) is None  # another condition of the same tenant
    assert await make().find_open(draft("t2|expired")) is None  # another tenant
    # A person's ticket that merely mentions the customer is never taken for ours.
    human(halo, "POST", "/api/Tickets", json=[{"summary": "Fabrikam: expired printer toner", "client_id": 12}])
    assert (await make().find_open(draft())) == found


async def test_check_proves_credentials_and_routing(halo: Any, make: Callable[..., HaloDesk]) -> None:
    await make().check(TicketRoute(board="Security", priority="4", ticket_type="Service Request",
                                   closed_status="Resolved"))
    for route, what in ((TicketRoute(board="Night Shift"), "team"), (TicketRoute(priority="Urgent"), "priority"),
                        (TicketRoute(ticket_type="Change"), "ticket type"), (TicketRoute(status="Parked"), "status"),
                        (TicketRoute(closed_status="Done"), "status")):
        with pytest.raises(TicketError) as unknown:
            await make().check(route)
        assert unknown.value.code == "TicketRouteUnknown" and not unknown.value.retryable, route
        assert what in unknown.value.message
    assert halo_state(halo)["tickets"] == []  # check opens nothing


async def test_unknown_routing_opens_nothing(halo: Any, make: Callable[..., HaloDesk]) -> None:
    for route in (TicketRoute(board="Night Shift"), TicketRoute(priority="P0"), TicketRoute(status="Parked")):
        with pytest.raises(TicketError) as unknown:
            await make().open(draft(route=route))
        assert unknown.value.code == "TicketRouteUnknown", route
    with pytest.raises(TicketError) as no_client:  # an unknown client id: Halo itself refuses it
        await make().open(draft(route=TicketRoute(company="404")))
    assert no_client.value.code == "TicketRequestRefused" and "Client" in no_client.value.message
    assert halo_state(halo)["tickets"] == []


async def test_a_client_named_needs_read_customers(halo: Any, make: Callable[..., HaloDesk]) -> None:
    with pytest.raises(TicketError) as refused:
        await make(client="Fabrikam").open(draft())
    assert refused.value.code == "TicketAuthRefused"
    halo.control.seed({"psa_halopsa": {"applications": [{
        "client_id": "rotator", "client_secret": SECRET, "scopes": "edit:tickets read:tickets read:customers"}]}})
    wider = make(client="Fabrikam", scope="edit:tickets read:tickets read:customers")
    ticket = await wider.open(draft())
    assert halo_state(halo)["tickets"][0]["id"] == int(ticket.id)
    with pytest.raises(TicketError) as unknown:
        await wider.open(draft("t3|expired", route=TicketRoute(company="Contoso")))
    assert unknown.value.code == "TicketRouteUnknown"


async def test_bad_credentials_and_scopes_are_refused_for_a_person_to_fix(
        halo: Any, make: Callable[..., HaloDesk]) -> None:
    for changes in ({"client_secret": "wrong"}, {"client_id": "nobody"}, {"scope": "all"}):
        with pytest.raises(TicketError) as refused:
            await make(**changes).check(TicketRoute())
        assert refused.value.code == "TicketAuthRefused" and not refused.value.retryable, changes
    halo.control.seed({"psa_halopsa": {"applications": [{"client_id": "reader", "client_secret": SECRET,
                                                         "scopes": "read:tickets"}]}})
    with pytest.raises(TicketError) as read_only:
        await make(client_id="reader", scope="read:tickets").check(TicketRoute())
    assert read_only.value.code == "TicketAuthRefused" and "edit:tickets" in read_only.value.message
    with pytest.raises(TicketError) as forbidden:
        await make(client_id="reader", scope="read:tickets").open(draft())
    assert (forbidden.value.code, forbidden.value.status) == ("TicketAuthRefused", 403)


async def test_a_hosted_instance_names_its_tenant(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo.control.seed({"psa_halopsa": {"tenant": "fabrikammsp"}})
    await make(tenant="fabrikammsp").check(TicketRoute())
    with pytest.raises(TicketError) as refused:
        await make().check(TicketRoute())
    assert refused.value.code == "TicketRequestRefused"


async def test_throttling_says_how_long_to_wait(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo.control.seed({"psa_halopsa": {"rate_limit": {"requests": 2, "window_seconds": 120, "retry_after": True}}})
    halo_desk = make(team="")
    await halo_desk.open(draft())  # token + create
    with pytest.raises(TicketError) as throttled:
        await halo_desk.open(draft("t2|expired"))
    assert throttled.value.code == "TicketThrottled" and throttled.value.retryable
    assert throttled.value.retry_after is not None and 100 <= throttled.value.retry_after <= 120
    assert "Rate Limit Reached" in throttled.value.message
    # Without Retry-After (Halo is not known to send one) the whole rolling window is waited.
    halo.control.seed({"psa_halopsa": {"rate_limit": {"requests": 2, "window_seconds": 120}}})
    with pytest.raises(TicketError) as silent:
        await halo_desk.open(draft("t2|expired"))
    assert silent.value.retry_after == 300
    halo.control.set_clock(121)
    await halo_desk.open(draft("t2|expired"))  # the window rolled on
    assert len(halo_state(halo)["tickets"]) == 2


async def test_an_outage_then_recovery_loses_and_duplicates_nothing(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make()
    ticket = await halo_desk.open(draft())
    for status in (500, 502, 503):
        halo.control.add_fault("psa_halopsa", status=status, path="^/api/", count=None)
        for call in (halo_desk.add_note(ticket, "n"), halo_desk.find_open(draft()),
                     halo_desk.close(ticket, "c", TicketRoute()), halo_desk.open(draft("t2|expired"))):
            with pytest.raises(TicketError) as down:
                await call
            assert down.value.code == "TicketSystemUnreachable" and down.value.retryable
        halo.control.clear_faults()
    halo.control.add_fault("psa_halopsa", drop=True, count=None)
    with pytest.raises(TicketError) as dropped:
        await make().check(TicketRoute())
    assert dropped.value.code == "TicketSystemUnreachable"
    halo.control.clear_faults()
    assert await halo_desk.find_open(draft()) == ticket
    await halo_desk.close(ticket, "fixed", TicketRoute())
    state = halo_state(halo)
    assert len(state["tickets"]) == 1 and [a["new_status"] for a in state["actions"]] == [9]


async def test_a_redirect_is_never_followed(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo.control.add_fault("psa_halopsa", status=302, path="^/auth/token$")
    with pytest.raises(TicketError) as moved:
        await make().check(TicketRoute())
    assert moved.value.code == "TicketConfigInvalid"


@pytest.mark.parametrize("length", [0, 1, 200, 230, 241, 242, 243, 254, 255, 256, 1000])
@pytest.mark.parametrize("filler", ["x", "é", "東", "😀", "e\u0301"])
def test_summary_fits_halos_limit_and_keeps_the_tag(length: int, filler: str) -> None:
    title = (filler * length)[:length] if len(filler) == 1 else filler * (length // 2)
    text = summary(title, "t|c")
    assert utf16(text) <= SUMMARY_LIMIT and text.endswith(f"({tag('t|c')})") and text == text.strip()
    head = text[: -len(f"({tag('t|c')})")].rstrip()
    head.encode("utf-8")  # strict: a character cut in two (a lone surrogate) would raise here
    if utf16(title) + len(tag("t|c")) + 3 <= SUMMARY_LIMIT:
        assert head == " ".join(title.split())  # short titles are kept whole
    else:
        assert head.endswith("…") and title.startswith(head[:-1].rstrip())


async def test_long_titles_are_trimmed_and_open(halo: Any, make: Callable[..., HaloDesk]) -> None:
    title = "Sync secret expires in 7 days for " + "Contoso Holdings 😀 " * 30
    ticket = await make().open(draft(title=title))
    stored = halo_state(halo)["tickets"][0]
    assert utf16(stored["summary"]) <= SUMMARY_LIMIT and stored["summary"].endswith(f"({tag('t1|expired')})")
    assert await make().find_open(draft(title=title)) == ticket


async def test_non_ascii_customers_arrive_intact_and_markup_stays_text(
        halo: Any, make: Callable[..., HaloDesk]) -> None:
    customer = "Société Générale \u2013 Zürich 東京 <b>&Co</b>"
    key = "e5f0c1a2-0000-4000-8000-00000000abcd|expired"
    ticket = await make().open(draft(key, title=f"Sync secret expired for {customer}", customer=customer,
                                     route=TicketRoute(company="31")))
    stored = halo_state(halo)["tickets"][0]
    assert stored["client_name"] == "Société Générale \u2013 Zürich 東京"
    assert stored["summary"].startswith(f"Sync secret expired for {customer}")  # a summary is plain text in Halo
    assert "Société Générale \u2013 Zürich 東京 &lt;b&gt;&amp;Co&lt;/b&gt;" in stored["details_html"]
    assert "<b>" not in stored["details_html"]
    assert await make().find_open(draft(key, customer=customer)) == ticket


async def test_a_ticket_closed_by_a_person_first(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make()
    ticket = await halo_desk.open(draft())
    assert human(halo, "POST", "/api/Tickets", json=[{"id": int(ticket.id), "status_id": 10}]).ok  # "Resolved"
    # A repeat cannot go onto a ticket nobody looks at any more: the book is told to open a new one.
    with pytest.raises(TicketError) as closed:
        await halo_desk.add_note(ticket, "still expired")
    assert closed.value.code == "TicketNotFound"
    assert await halo_desk.find_open(draft()) is None
    # Resolving it writes nothing into the closed ticket: the person's status stands (no reopen, no second close).
    await halo_desk.close(ticket, "Resolved: new secret in place.", TicketRoute())
    await halo_desk.close(ticket, "again", TicketRoute(closed_status="Archived"))  # its status is not even asked
    state = halo_state(halo)
    assert state["tickets"][0]["status_id"] == 10 and state["actions"] == []


async def test_a_deleted_ticket_is_not_found(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make()
    ticket = await halo_desk.open(draft())
    assert human(halo, "DELETE", f"/api/Tickets/{ticket.id}").ok
    for call in (halo_desk.add_note(ticket, "n"), halo_desk.close(ticket, "c", TicketRoute())):
        with pytest.raises(TicketError) as gone:
            await call
        assert gone.value.code == "TicketNotFound" and not gone.value.retryable
    assert await halo_desk.find_open(draft()) is None
    with pytest.raises(TicketError) as never:
        await halo_desk.add_note(TicketRef(id="../Team", number="x"), "n")
    assert never.value.code == "TicketNotFound"
    assert halo_state(halo)["actions"] == []


@pytest.mark.parametrize("changes, field", [
    ({"url": ""}, "url"), ({"client_secret": ""}, "client_secret"), ({"client_id": ""}, "client_id"),
    ({"url": "http://halo.example"}, "url"), ({"url": "https://user:pw@halo.example"}, "url"),
    ({"auth_url": "https://halo.example/auth?x=1"}, "auth_url"), ({"notes_visible": "maybe"}, "notes_visible"),
    ({"url": "https://[::1"}, "url"), ({"url": "https://halo.example:99999"}, "url"),
])
def test_bad_configuration_names_the_field_never_the_secret(changes: dict[str, str], field: str) -> None:
    config = {"url": "https://fabrikam.halopsa.com", "client_id": "rotator", "client_secret": SECRET, **changes}
    with pytest.raises(TicketError) as bad:
        build(config, ca_bundle="")
    assert bad.value.code == "TicketConfigInvalid" and field in bad.value.message
    assert SECRET not in str(bad.value) and "pw@" not in str(bad.value)


async def test_the_desk_is_found_by_its_system_name(halo: Any, config: dict[str, str]) -> None:
    found = desk("halopsa", config, ca_bundle=halo.ca_file)
    assert found.kind == "halopsa"
    await found.check(TicketRoute())
    with pytest.raises(TicketError) as no_client:
        await desk("halopsa", {**config, "client": ""}, ca_bundle=halo.ca_file).open(draft())
    assert no_client.value.code == "TicketConfigInvalid"


async def test_no_secret_in_logs_or_errors(halo: Any, make: Callable[..., HaloDesk],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    halo_desk = make()
    errors: list[TicketError] = []
    ticket = await halo_desk.open(draft())
    await halo_desk.add_note(ticket, "n")
    token = halo_desk._token.reveal() if halo_desk._token else ""  # the value to look for
    assert token
    # Every failure path, with a server that echoes what it was sent.
    halo.control.add_fault("psa_halopsa", status=400, path="^/api/Actions$", message=f"bad request {token}")
    halo.control.add_fault("psa_halopsa", status=500, path="^/auth/token$", message=f"oops {SECRET}")
    for call in (halo_desk.add_note(ticket, "n"), make().check(TicketRoute()),
                 make(client_secret="wrong").check(TicketRoute()), make(team="Nope").open(draft("t9|x"))):
        with pytest.raises(TicketError) as failed:
            await call
        errors.append(failed.value)
    assert [e.code for e in errors] == ["TicketRequestRefused", "TicketSystemUnreachable", "TicketAuthRefused",
                                        "TicketRouteUnknown"]
    assert "***" in errors[0].message and "***" in errors[1].message
    seen = [str(e) for e in errors] + [repr(e.args) for e in errors] + [repr(halo_desk.config), repr(halo_desk)]
    seen += [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    for text in seen:
        assert SECRET not in text and token not in text


async def test_a_kept_token_refused_is_retryable_and_renewed(halo: Any, make: Callable[..., HaloDesk]) -> None:
    halo_desk = make()
    ticket = await halo_desk.open(draft())
    halo.control.set_clock(3700)  # Halo's clock says the kept token expired; the desk's own clock does not
    with pytest.raises(TicketError) as stale:
        await halo_desk.add_note(ticket, "n")
    assert stale.value.code == "TicketSystemUnreachable" and stale.value.retryable
    await halo_desk.add_note(ticket, "n")  # the book's retry: a new token
    assert len(halo_state(halo)["actions"]) == 1


@pytest.mark.parametrize("header, expected", [("17", 17.0), (None, 300.0), ("soon", 300.0),
                                              ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0)])
def test_retry_after_reads_seconds_or_a_date(header: str | None, expected: float) -> None:
    from shared.tickets.halopsa import _retry_after

    assert _retry_after(header) == expected
