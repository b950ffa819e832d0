"""The ConnectWise Manage desk, real over HTTPS against the stand-in: lifecycle, refusals, and what never leaks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from shared.tickets import TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute, desk
from shared.tickets.connectwise import KIND, build, reference, trim_summary
from tests.tickets import connectwise_site as site

pytestmark = pytest.mark.sandbox


@pytest.fixture
def cw(sb: Any) -> Any:
    sb.control.seed({"psa_connectwise": site.seed()})
    return sb


def make(sb: Any, **overrides: str) -> TicketDesk:
    return desk(KIND, site.desk_config(sb.endpoints["psa_connectwise"], **overrides), ca_bundle=sb.ca_file)


def draft(key: str = "tenant-1|secret-expiring", **overrides: Any) -> TicketDraft:
    fields: dict[str, Any] = {
        "key": key, "customer": site.CUSTOMER, "tenant_id": "tenant-1", "condition": "secret-expiring",
        "title": f"Sync secret expires in 7 days: {site.CUSTOMER}", "body": "The Proofpoint sync secret expires soon.",
        "route": TicketRoute(company=site.CUSTOMER_ID)}
    fields.update(overrides)
    return TicketDraft(**fields)


def tickets(sb: Any) -> list[dict[str, Any]]:
    return list(sb.control.state()["psa_connectwise"]["tickets"])


def as_a_person(sb: Any, method: str, path: str, body: Any = None) -> None:
    """A technician's change in ConnectWise (through the API, as its screens would make it)."""
    answer = requests.request(method, f"{sb.endpoints['psa_connectwise']}/v4_6_release/apis/3.0{path}", json=body,
                              headers=site.headers(), verify=sb.ca_file, timeout=10)
    assert answer.ok, answer.text


async def refused(call: Any) -> TicketError:
    with pytest.raises(TicketError) as caught:
        await call
    return caught.value


async def test_open_note_close_on_the_board_with_the_customer_and_routing(cw: Any) -> None:
    d = make(cw)
    assert d.kind == "connectwise"
    route = TicketRoute(board="Managed Services", priority="Priority 1 - Emergency Response", ticket_type="Alert",
                        status="In Progress", closed_status="Resolved", company=site.CUSTOMER_ID)
    ref = await d.open(draft(route=route))
    assert ref.id == ref.number and ref.id.isdigit()
    assert ref.url.endswith(f"service_recid={ref.id}&companyName={site.COMPANY_ID}")
    await d.add_note(ref, "Still expiring: 6 days left.")
    [ticket] = tickets(cw)
    assert (ticket["board"]["name"], ticket["status"]["name"], ticket["priority"]["name"], ticket["type"]["name"],
            ticket["company"]["name"]) == ("Managed Services", "In Progress", "Priority 1 - Emergency Response",
                                           "Alert", site.CUSTOMER)
    assert ticket["summary"] == f"Sync secret expires in 7 days: {site.CUSTOMER}"
    assert ticket["externalXRef"] == reference("tenant-1|secret-expiring")
    assert await d.find_open(draft(route=route)) == ref
    await d.close(ref, "Resolved: the secret was rotated.", route)
    [ticket] = tickets(cw)
    assert (ticket["closedFlag"], ticket["status"]["name"]) == (True, "Resolved")
    notes = [(n["text"], n["detailDescriptionFlag"], n["internalAnalysisFlag"], n["resolutionFlag"])
             for n in ticket["notes"]]
    assert notes == [("The Proofpoint sync secret expires soon.", True, False, False),
                     ("Still expiring: 6 days left.", False, True, False),
                     ("Resolved: the secret was rotated.", False, True, True)]
    assert await d.find_open(draft(route=route)) is None  # closed: a new occurrence gets a new ticket


async def test_defaults_come_from_the_configuration_and_the_board(cw: Any) -> None:
    d = make(cw, company=site.CUSTOMER_ID)
    ref = await d.open(draft(route=TicketRoute()))
    await d.close(ref, "resolved", TicketRoute())
    [ticket] = tickets(cw)
    assert (ticket["board"]["name"], ticket["company"]["identifier"]) == ("Managed Services", site.CUSTOMER_ID)
    assert ticket["priority"]["name"] == "Priority 3 - Normal Response"  # ConnectWise's default priority
    assert ticket["status"]["name"] == "Resolved"  # the board's first closed status, by its sort order
    configured = make(cw, closedStatus="Closed", status="In Progress")
    other = await configured.open(draft(key="k2"))
    await configured.close(other, "resolved", TicketRoute())
    assert [t["status"]["name"] for t in tickets(cw)] == ["Resolved", "Closed"]


async def test_find_open_after_a_crash_finds_the_ticket_the_lost_answer_created(cw: Any) -> None:
    # The PSA creates the ticket, then the answer is lost (a 502 after the work): the caller cannot know.
    cw.control.add_fault("psa_connectwise", method="POST", path=r"/service/tickets$", status=502, when="after")
    first = make(cw)
    error = await refused(first.open(draft()))
    assert (error.code, error.retryable) == ("TicketSystemUnreachable", True)
    # A new process (a new desk, nothing in memory) asks before opening again and finds it: no second ticket.
    again = make(cw)
    found = await again.find_open(draft())
    assert found is not None and found.id == str(tickets(cw)[0]["id"])
    assert len(tickets(cw)) == 1
    # Another condition or another customer is another ticket.
    assert await again.find_open(draft(key="tenant-2|secret-expiring")) is None


async def test_a_long_title_is_trimmed_to_connectwise_s_limit_and_non_ascii_names_survive(cw: Any) -> None:
    d = make(cw)
    long_titles = [
        "Sync secret expired: " + "Ünïcödé Kundenname GmbH & Co. KG " * 6,
        "同期シークレットの期限切れ " + "株式会社テスト" * 20,
        "Expired 😀 " + "😀" * 80,  # characters beyond the BMP count two UTF-16 units each
        "Line\nbreaks\tand\x00controls " + "x" * 120,
    ]
    for n, title in enumerate(long_titles):
        await d.open(draft(key=f"long-{n}", title=title, route=TicketRoute(company="株式会社テスト")))
    summaries = [t["summary"] for t in tickets(cw)]
    assert len(summaries) == len(long_titles)  # every one accepted: none over the limit
    for summary, title in zip(summaries, long_titles, strict=True):
        assert len(summary.encode("utf-16-le")) // 2 <= 100
        assert summary.endswith("…")
        assert summary[:10] == trim_summary(title)[:10]
        assert "\n" not in summary and "\x00" not in summary
    assert {t["company"]["name"] for t in tickets(cw)} == {"株式会社テスト"}
    short = "Sync secret expired: Bäckerei Müller"
    assert trim_summary(short) == short


async def test_a_ticket_a_person_closed_is_left_closed_and_a_deleted_one_is_not_found(cw: Any) -> None:
    d = make(cw)
    closed_by_hand = await d.open(draft(key="a"))
    deleted = await d.open(draft(key="b"))
    # A technician closes one in ConnectWise and deletes the other (the stand-in's API, as the PSA's screens would).
    as_a_person(cw, "PATCH", f"/service/tickets/{closed_by_hand.id}",
                [{"op": "replace", "path": "status", "value": {"name": "Closed"}}])
    as_a_person(cw, "DELETE", f"/service/tickets/{deleted.id}")
    assert await d.find_open(draft(key="a")) is None
    await d.close(closed_by_hand, "resolved", TicketRoute())  # nothing to do: no error, no reopening, no note
    [ticket] = tickets(cw)
    assert (ticket["status"]["name"], ticket["closedBy"], len(ticket["notes"])) == ("Closed", "ssr-api", 1)
    for call in (d.add_note(deleted, "again"), d.close(deleted, "resolved", TicketRoute())):
        error = await refused(call)
        assert (error.code, error.retryable, error.status) == ("TicketNotFound", False, 404)
    # A repeat while the condition holds: a note on the closed ticket would go unseen, so it is not found either
    # (the book then opens a new ticket); the closed ticket is not reopened nor written to.
    error = await refused(d.add_note(closed_by_hand, "Still holds"))
    assert (error.code, error.retryable) == ("TicketNotFound", False)
    [ticket] = tickets(cw)
    assert (ticket["closedFlag"], len(ticket["notes"])) == (True, 1)
    assert (await refused(d.add_note(TicketRef(id="not-a-number", number="x"), "n"))).code == "TicketNotFound"


@pytest.mark.parametrize("config", [
    {"privateKey": "wrong-private-key"},
    {"publicKey": "wrong-public-key"},
    {"companyId": "someone_else"},
    {"clientId": "00000000-1111-2222-3333-444444444444"},
])
async def test_bad_credentials_are_auth_refused_and_never_repeated(cw: Any, config: dict[str, str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = make(cw, **config)
    for call in (d.open(draft()), d.check(TicketRoute()), d.find_open(draft())):
        error = await refused(call)
        assert (error.code, error.retryable, error.status) == ("TicketAuthRefused", False, 401)
        shown = f"{error} {error!r} {error.args} {error.message}"
        for secret in (*site.SECRETS, *config.values()):
            assert secret not in shown
    for secret in (*site.SECRETS, *config.values()):
        assert secret not in caplog.text
    assert tickets(cw) == []


async def test_a_member_without_the_rights_is_auth_refused(cw: Any) -> None:
    d = make(cw, publicKey=site.READ_ONLY_PUBLIC, privateKey=site.READ_ONLY_PRIVATE)
    await d.check(TicketRoute())  # reading is allowed
    error = await refused(d.open(draft()))
    assert (error.code, error.status) == ("TicketAuthRefused", 403)
    assert "security permission" in error.message


@pytest.mark.parametrize("route", [
    TicketRoute(board="No Such Board"),
    TicketRoute(board="424242"),
    TicketRoute(company="NobodyInc"),
    TicketRoute(status="Completed"),  # a status of another board
    TicketRoute(priority="Priority 9 - Never"),
    TicketRoute(ticket_type="Maintenance Window"),
])
async def test_unknown_routing_names_are_route_unknown_on_open_and_on_check(cw: Any, route: TicketRoute) -> None:
    d = make(cw)
    chosen = TicketRoute(**{**vars(route), "company": route.company or site.CUSTOMER_ID})
    error = await refused(d.open(draft(route=chosen)))
    assert (error.code, error.retryable) == ("TicketRouteUnknown", False)
    assert (await refused(d.check(chosen))).code == "TicketRouteUnknown"
    assert tickets(cw) == []


async def test_an_inactive_board_is_refused_like_an_unknown_one(cw: Any) -> None:
    old = {"name": "Old Board", "inactive": True,
           "statuses": [{"name": "New", "default": True}, {"name": "Done", "closed": True}]}
    boards = [*site.seed()["boards"], old]
    cw.control.seed({"psa_connectwise": {"boards": boards}})
    d = make(cw)
    route = TicketRoute(board="Old Board", company=site.CUSTOMER_ID)
    assert (await refused(d.check(route))).code == "TicketRouteUnknown"
    assert (await refused(d.open(draft(route=route)))).code == "TicketRouteUnknown"
    await d.check(TicketRoute(board="Managed Services"))


async def test_check_proves_the_configuration_and_the_closed_status(cw: Any) -> None:
    d = make(cw)
    await d.check(TicketRoute(board="Help Desk", status="New", closed_status="Completed", company=site.CUSTOMER_ID,
                              priority="Priority 1 - Emergency Response"))
    await d.check(TicketRoute(ticket_type="alert", company="株式会社テスト"))
    error = await refused(d.check(TicketRoute(closed_status="In Progress")))  # not a closed status
    assert error.code == "TicketRouteUnknown"
    requests = cw.control.state()["psa_connectwise"]["requests"]
    assert {r["method"] for r in requests} == {"GET"}  # check opens nothing
    assert tickets(cw) == []


async def test_a_ticket_a_person_moved_to_another_board_closes_with_that_board_s_closed_status(cw: Any) -> None:
    d = make(cw)
    route = TicketRoute(closed_status="Resolved")  # a status of the routed board, Managed Services
    ref = await d.open(draft(route=route))
    as_a_person(cw, "PATCH", f"/service/tickets/{ref.id}", [
        {"op": "replace", "path": "board", "value": {"name": "Help Desk"}},
        {"op": "replace", "path": "status", "value": {"name": "New"}}])
    await d.close(ref, "Resolved.", route)
    [ticket] = tickets(cw)
    assert (ticket["board"]["name"], ticket["status"]["name"], ticket["closedFlag"]) == ("Help Desk", "Completed",
                                                                                         True)


async def test_a_closed_status_gone_from_the_board_is_route_unknown(cw: Any) -> None:
    d = make(cw)
    ref = await d.open(draft())
    error = await refused(d.close(ref, "resolved", TicketRoute(closed_status="Archived")))
    assert error.code == "TicketRouteUnknown"
    assert tickets(cw)[0]["closedFlag"] is False


async def test_rate_limit_is_throttled_with_retry_after(cw: Any) -> None:
    cw.control.seed({"psa_connectwise": {"rateLimit": {"requests": 2, "seconds": 30}}})
    d = make(cw)
    await d.find_open(draft())
    await d.find_open(draft())
    error = await refused(d.open(draft()))
    assert (error.code, error.retryable, error.status) == ("TicketThrottled", True, 429)
    assert error.retry_after is not None and 1 <= error.retry_after <= 30
    assert tickets(cw) == []


@pytest.mark.parametrize(("fault", "code", "retry_after"), [
    ({"status": 500}, "TicketSystemUnreachable", None),
    ({"status": 503, "retry_after": 7}, "TicketSystemUnreachable", 7.0),
    ({"status": 429, "retry_after": 12}, "TicketThrottled", 12.0),
    ({"drop": True}, "TicketSystemUnreachable", None),
    ({"latency_ms": 25_000}, "TicketSystemUnreachable", None),  # past the desk's 20 s timeout
    ({"status": 302}, "TicketRequestRefused", None),  # a redirect is never followed
    ({"status": 409}, "TicketRequestRefused", None),
])
async def test_faults_map_to_ticket_errors(cw: Any, fault: dict[str, Any], code: str, retry_after: float | None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.tickets.connectwise.TIMEOUT_SECONDS", 1)
    cw.control.add_fault("psa_connectwise", method="POST", path=r"/service/tickets$", **fault)
    error = await refused(make(cw).open(draft()))
    assert (error.code, error.retry_after) == (code, retry_after)
    assert site.PRIVATE_KEY not in str(error)


@pytest.mark.parametrize("config", [
    {"site": ""}, {"site": "http://api-na.myconnectwise.net"}, {"site": "https://user:pw@host"},
    {"site": "https://host/path"}, {"board": ""}, {"company": ""}, {"privateKey": ""}, {"clientId": ""},
    {"codebase": "../x"}, {"board": 12},  # type: ignore[dict-item]
    {"clientId": "ünïcode-id"}, {"clientId": "two words"},
])
def test_a_bad_configuration_is_config_invalid_without_its_secrets(config: dict[str, str]) -> None:
    full = {**site.desk_config("api-na.myconnectwise.net"), **config}
    with pytest.raises(TicketError) as caught:
        build(full)
    assert caught.value.code == "TicketConfigInvalid"
    for secret in site.SECRETS:
        assert secret not in str(caught.value)


def test_the_desk_and_its_references_show_no_secret() -> None:
    built = build(site.desk_config("api-na.myconnectwise.net"))
    for secret in site.SECRETS:
        assert secret not in repr(built) and secret not in repr(vars(built))
    assert build(site.desk_config("https://cw.example.com/", codebase="v2025_1")).find_open is not None
    assert reference("k") == reference("k") != reference("k2")
    assert len(reference("x" * 10_000)) <= 100


async def test_passes_and_restarts_keep_one_ticket_per_condition_through_an_outage(
        cw: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The book's use of the desk, pass after pass, each pass a new process: find the open ticket, else open one;
    a repeat adds a note; a PSA outage fails the pass without a second ticket; the condition clearing closes it;
    its return opens a new one. Nothing on the way logs a key."""
    caplog.set_level(logging.DEBUG)
    cw.control.add_fault("psa_connectwise", method="POST", path=r"/service/tickets$", status=503, count=2)
    conditions = [draft(key=f"tenant-1|{c}", condition=c) for c in ("secret-expiring", "sync-failing")]
    outcomes = []
    for n in range(6):
        d = make(cw)  # a restart: nothing kept in memory between passes
        for each in conditions:
            try:
                found = await d.find_open(each)
                if found is None:
                    await d.open(each)
                    outcomes.append("opened")
                else:
                    await d.add_note(found, f"Still holds (pass {n}).")
                    outcomes.append("noted")
            except TicketError as error:
                assert error.retryable
                outcomes.append(error.code)
    assert outcomes[:2] == ["TicketSystemUnreachable", "TicketSystemUnreachable"]  # the outage: nothing opened
    assert outcomes[2:4] == ["opened", "opened"] and set(outcomes[4:]) == {"noted"}
    assert [len(t["notes"]) for t in tickets(cw)] == [1 + 4, 1 + 4]
    d = make(cw)
    first = await d.find_open(conditions[0])
    assert first is not None
    await d.close(first, "Resolved.", TicketRoute())
    assert await d.find_open(conditions[0]) is None
    again = await d.open(conditions[0])  # it comes back: a new ticket, the closed one untouched
    assert again.id != first.id and len(tickets(cw)) == 3
    for secret in site.SECRETS:
        assert secret not in caplog.text


async def test_a_key_connectwise_echoes_at_the_message_s_length_limit_leaves_nothing_of_itself(cw: Any) -> None:
    """ConnectWise's words are cut to a length: the cut comes after the keys are scrubbed, or a key straddling it
    would keep its first characters in the error (and so in the ticket row, GET /api/tickets and the logs)."""
    said = "x" * 470 + " member key " + site.PRIVATE_KEY
    cw.control.add_fault("psa_connectwise", method="POST", path=r"/service/tickets$", status=400, message=said)
    error = await refused(make(cw).open(draft()))
    text = f"{error} {error.message} {error!r}"
    secret = site.PRIVATE_KEY
    assert not any(secret[i:i + 6] in text for i in range(len(secret) - 5)), text
