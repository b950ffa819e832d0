"""The Autotask desk over real HTTPS against the sandbox's Autotask stand-in: the lifecycle, a crash between the
PSA's create and our record, what a person does in Autotask meanwhile, and every refusal mapped to the port's codes
with no credential in a log or an error."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from shared import tickets
from shared.tickets import TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tickets.autotask import (
    DEFAULT_RETRY_AFTER,
    AutotaskConfig,
    AutotaskDesk,
    _retry_after,
    api_base,
    external_id,
    trimmed,
    utf16_length,
)

pytestmark = pytest.mark.sandbox

USER = "rotator-api@msp.example"
SECRET = "at-" + secrets.token_urlsafe(24)  # made at run time: nothing secret-shaped is committed
CODE = "IC" + secrets.token_hex(12).upper()
CONTOSO, MULLER = 310, 311
CUSTOMER = "Bäckerei Müller, Zürich 東京"


@pytest.fixture
def at(sb: Any) -> Any:
    sb.control.seed({"psa_autotask": {"users": [{"userName": USER, "secret": SECRET, "integrationCode": CODE}],
                                  "companies": [{"id": CONTOSO, "companyName": "Contoso Ltd"},
                                                {"id": MULLER, "companyName": CUSTOMER}]}})
    return sb


def config(sb: Any, **changes: Any) -> dict[str, Any]:
    return {"userName": USER, "secret": SECRET, "integrationCode": CODE, "queue": "Monitoring Alert",
            "zoneInformationUrl": f"{sb.endpoints['psa_autotask']}/atservicesrest/v1.0/zoneInformation", **changes}


def desk(sb: Any, **changes: Any) -> TicketDesk:
    return tickets.desk("autotask", config(sb, **changes), ca_bundle=sb.ca_file)


def draft(condition: str = "secret-expired", *, customer: str = "Contoso Ltd", company: int = CONTOSO,
          title: str = "", route: TicketRoute | None = None) -> TicketDraft:
    tenant = "6f1c2a8e-0000-4000-8000-00000000c0de"
    return TicketDraft(key=f"ssr:{tenant}/{condition}", customer=customer, tenant_id=tenant, condition=condition,
                       title=title or f"Sync-secret rotator: {condition} ({customer})",
                       body=f"{customer}: {condition}.", route=route or TicketRoute(company=str(company)))


async def refused(call: Any) -> TicketError:
    with pytest.raises(TicketError) as caught:
        await call
    return caught.value


async def test_open_note_close_and_nothing_open_after(at: Any) -> None:
    atd = desk(at)
    ref = await atd.open(draft())
    state = at.control.autotask()
    [ticket] = state["tickets"]
    assert (ref.id, ref.number) == (str(ticket["id"]), ticket["ticketNumber"])
    assert ref.url == (f"{at.endpoints['psa_autotask']}/Autotask/AutotaskExtend/ExecuteCommand.aspx"
                       f"?Code=OpenTicketDetail&TicketID={ticket['id']}")
    assert (ticket["companyID"], ticket["queueID"], ticket["priority"], ticket["status"]) == (CONTOSO, 8, 2, 1)
    assert ticket["externalID"] == external_id(draft().key) and len(ticket["externalID"]) <= 50
    await atd.add_note(ref, "Still holds on 2026-12-07 (UTC):\nProofpoint refused the key")
    await atd.close(ref, "Resolved: secret-expired no longer holds", TicketRoute())
    state = at.control.autotask()
    assert state["tickets"][0]["status"] == 5 and state["tickets"][0]["completedDate"]
    assert [n["description"] for n in state["notes"]] == [
        "Still holds on 2026-12-07 (UTC):\nProofpoint refused the key", "Resolved: secret-expired no longer holds"]
    assert await desk(at).find_open(draft()) is None


async def test_the_routing_names_labels_or_values_and_the_closed_status(at: Any) -> None:
    route = TicketRoute(board="level i support", priority="4", ticket_type="Alert", status="In Progress",
                        closed_status="Waiting Customer", company=str(MULLER))
    atd = desk(at)
    ref = await atd.open(draft(route=route, company=MULLER))
    ticket = at.control.autotask()["tickets"][0]
    assert (ticket["queueID"], ticket["priority"], ticket["ticketType"], ticket["status"], ticket["companyID"]) == (
        29682833, 4, 5, 8, MULLER)
    await atd.close(ref, "resolved", route)
    assert at.control.autotask()["tickets"][0]["status"] == 7
    # Moved to the route's closed status: no longer open for this condition.
    assert await desk(at).find_open(draft(route=route, company=MULLER)) is None


async def converge(sb: Any, book: dict[str, TicketRef], holding: set[str], day: str) -> None:
    """One pass of the ticket book's contract (shared/tickets/book.py), with a fresh desk as after a restart: find
    before opening, a note on a repeat, close on clearing; a retryable refusal waits for the next pass."""
    atd = desk(sb)
    for condition in sorted(holding | set(book)):
        try:
            if condition in holding and condition not in book:
                book[condition] = await atd.find_open(draft(condition)) or await atd.open(draft(condition))
            elif condition in holding:
                await atd.add_note(book[condition], f"Still holds on {day}")
            else:
                await atd.close(book[condition], f"Resolved on {day}", TicketRoute())
                del book[condition]
        except TicketError as error:
            if error.code == "TicketNotFound":
                del book[condition]
            elif not error.retryable:
                raise


async def test_passes_and_restarts_through_an_outage_keep_one_ticket_per_condition(at: Any) -> None:
    book: dict[str, TicketRef] = {}
    passes: list[tuple[set[str], dict[str, Any]]] = [
        ({"expired"}, {}),
        ({"expired", "drift"}, {"status": 503, "count": 2}),  # Autotask down for this pass's two calls
        ({"expired", "drift"}, {"method": "POST", "path": "/Tickets$", "when": "after", "drop": True}),  # made, lost
        ({"expired", "drift"}, {}),
        ({"drift"}, {}),
        ({"expired"}, {}),  # expired is back: a new ticket; drift clears
    ]
    for day, (holding, fault) in enumerate(passes, start=1):
        if fault:
            at.control.add_fault("psa_autotask", **fault)
        await converge(at, book, holding, f"day {day}")
        at.control.clear_faults()
        state = at.control.autotask()
        for condition in holding:
            mine = [t for t in state["tickets"] if t["externalID"] == external_id(draft(condition).key)]
            assert sum(t["status"] != 5 for t in mine) <= 1, (day, condition)
    tickets_now = at.control.autotask()
    by_condition = {c: sorted((t for t in tickets_now["tickets"] if t["externalID"] == external_id(draft(c).key)),
                              key=lambda t: t["id"]) for c in ("expired", "drift")}
    assert [t["status"] for t in by_condition["expired"]] == [5, 1]  # closed on day 5, a new one on day 6
    assert [t["status"] for t in by_condition["drift"]] == [5]  # one ticket though its create's answer was lost
    notes = {t["id"]: [n["description"] for n in tickets_now["notes"] if n["ticketID"] == t["id"]]
             for c in by_condition.values() for t in c}
    assert notes[by_condition["expired"][0]["id"]] == ["Still holds on day 3", "Still holds on day 4",
                                                        "Resolved on day 5"]
    assert notes[by_condition["drift"][0]["id"]] == ["Still holds on day 5", "Resolved on day 6"]
    assert notes[by_condition["expired"][1]["id"]] == []
    assert book.keys() == {"expired"} and book["expired"].id == str(by_condition["expired"][1]["id"])


async def test_a_route_names_the_customer_s_company_by_id_or_exact_name(at: Any) -> None:
    at.control.seed({"psa_autotask": {"companies": [{"id": 320, "companyName": "Northwind"},
                                                {"id": 321, "companyName": "northwind"}]}})
    ref = await desk(at).open(draft(customer=CUSTOMER, route=TicketRoute(company=CUSTOMER.upper())))
    assert at.control.autotask()["tickets"][0]["companyID"] == MULLER and ref.number
    await desk(at).check(TicketRoute(company=CUSTOMER))
    # Two companies answer to the name: the desk will not guess.
    error = await refused(desk(at).open(draft("other", route=TicketRoute(company="Northwind"))))
    assert error.code == "TicketRouteUnknown" and "more than one" in error.message
    assert len(at.control.autotask()["tickets"]) == 1


async def test_find_open_after_a_crash_finds_the_ticket_made_before_it(at: Any) -> None:
    # The create happens, its answer is lost (the rotator died or the line dropped): the book asks before opening.
    at.control.add_fault("psa_autotask", method="POST", path="/Tickets$", when="after", drop=True)
    error = await refused(desk(at).open(draft()))
    assert error.code == "TicketSystemUnreachable" and error.retryable
    [made] = at.control.autotask()["tickets"]
    found = await desk(at).find_open(draft())  # a fresh desk, as after a restart
    assert found is not None and (found.id, found.number) == (str(made["id"]), made["ticketNumber"])
    assert await desk(at).find_open(draft("another-condition")) is None
    other_customer = TicketDraft(**{**draft().__dict__, "key": "ssr:another-tenant/secret-expired"})
    assert await desk(at).find_open(other_customer) is None


async def test_long_titles_are_trimmed_to_autotask_s_limit_and_non_ascii_names_kept(at: Any) -> None:
    long_title = f"Sync-secret rotator: {CUSTOMER}: " + "é 東" * 200
    atd = desk(at)
    ref = await atd.open(draft(customer=CUSTOMER, company=MULLER, title=long_title))
    ticket = at.control.autotask()["tickets"][0]
    assert len(ticket["title"]) == 255 and ticket["title"].endswith("…")
    assert ticket["title"].startswith(f"Sync-secret rotator: {CUSTOMER}: é 東")
    assert ticket["description"] == f"{CUSTOMER}: secret-expired."
    await atd.add_note(ref, f"{CUSTOMER}\n" + "ü" * 40_000)
    [note] = at.control.autotask()["notes"]
    assert len(note["description"]) == 32_000 and note["description"].startswith(CUSTOMER)
    assert len(note["title"]) <= 250 and CUSTOMER in note["title"]
    # Counted as Autotask counts: UTF-16 code units (an emoji is two); never half a surrogate pair.
    emoji = await atd.open(draft("emoji", title="🔑 Schlüssel " * 40))
    stored = next(t for t in at.control.autotask()["tickets"] if str(t["id"]) == emoji.id)["title"]
    assert utf16_length(stored) <= 255 and stored.endswith("…") and stored.encode("utf-8")
    assert trimmed("🔑" * 200, 255) == "🔑" * 127 + "…"
    assert trimmed("a" + "🔑" * 200, 255) == "a" + "🔑" * 126 + "…"  # 254 units: no half emoji in the last one
    huge = TicketDraft(**{**draft("huge").__dict__, "body": "x" * 9000, "title": "t\n" * 300})
    await atd.open(huge)
    big = at.control.autotask()["tickets"][2]
    assert len(big["description"]) == 8000 and len(big["title"]) <= 255 and "\n" not in big["title"]


async def test_a_ticket_completed_by_a_person_is_not_written_into_again(at: Any) -> None:
    atd = desk(at)
    ref = await atd.open(draft())
    at.control.autotask_person_updates(ref.id, {"status": 5})
    error = await refused(atd.add_note(ref, "still holds"))
    assert error.code == "TicketNotFound" and not error.retryable  # the book opens a new ticket
    await atd.close(ref, "resolved", TicketRoute())  # already complete: nothing written, no error
    await atd.close(ref, "resolved", TicketRoute(closed_status="A status renamed since"))  # not even looked up
    state = at.control.autotask()
    assert state["notes"] == [] and state["tickets"][0]["status"] == 5
    assert await atd.find_open(draft()) is None
    again = await atd.open(draft())
    assert again.id != ref.id and (await atd.find_open(draft())) == again


async def test_a_deleted_ticket_is_ticket_not_found(at: Any) -> None:
    atd = desk(at)
    ref = await atd.open(draft())
    at.control.autotask_person_deletes(ref.id)
    for call in (atd.add_note(ref, "still holds"), atd.close(ref, "resolved", TicketRoute())):
        error = await refused(call)
        assert (error.code, error.retryable) == ("TicketNotFound", False)
    assert at.control.autotask()["notes"] == []


@pytest.mark.parametrize("changes", [{"secret": "at-not-the-secret"}, {"integrationCode": "WRONGCODE"},
                                     {"userName": "nobody@msp.example"}])
async def test_bad_credentials_are_auth_refused_and_change_nothing(at: Any, changes: dict[str, str]) -> None:
    for call in (desk(at, **changes).open(draft()), desk(at, **changes).check(TicketRoute())):
        error = await refused(call)
        assert (error.code, error.retryable) == ("TicketAuthRefused", False)
    assert at.control.autotask()["tickets"] == []


async def test_unknown_routing_names_are_route_unknown_and_open_nothing(at: Any) -> None:
    for route in (TicketRoute(board="No Such Queue"), TicketRoute(priority="Urgent"), TicketRoute(status="Triage"),
                  TicketRoute(closed_status="Archived"), TicketRoute(ticket_type="Escalation"),
                  TicketRoute(board="424242"), TicketRoute(company="999"), TicketRoute(company="Fabrikam")):
        error = await refused(desk(at).check(route))
        assert (error.code, error.retryable) == ("TicketRouteUnknown", False), route
    error = await refused(desk(at).open(draft(route=TicketRoute(board="No Such Queue", company=str(CONTOSO)))))
    assert error.code == "TicketRouteUnknown" and "No Such Queue" in error.message
    # A company Autotask does not have: its own refusal (HTTP 500 with its reasons), kept and not retried.
    error = await refused(desk(at).open(draft(company=999)))
    assert (error.code, error.retryable) == ("TicketRequestRefused", False) and "companyID" in error.message
    assert at.control.autotask()["tickets"] == []
    await desk(at).check(TicketRoute(company=str(MULLER)))  # the good configuration passes


async def test_the_threshold_is_throttled_with_retry_after(at: Any) -> None:
    at.control.add_fault("psa_autotask", path="/Tickets/query$", status=429, retry_after=7)
    error = await refused(desk(at).find_open(draft()))
    assert (error.code, error.retryable, error.retry_after) == ("TicketThrottled", True, 7)
    at.control.seed({"psa_autotask": {"rateLimit": {"requestsPerHour": 3, "latencySeconds": [0, 0]}}})
    atd = desk(at)
    await atd.open(draft())  # picklists, create, read back: the hour's 3 requests
    error = await refused(atd.add_note(tickets.TicketRef("7001", "T1"), "more"))
    # Autotask's own 429 carries no Retry-After: the desk names a wait of its own.
    assert (error.code, error.retry_after) == ("TicketThrottled", DEFAULT_RETRY_AFTER)
    assert at.control.autotask()["notes"] == []
    # A thread-limit refusal may come with another status; its words say what it is.
    at.control.add_fault("psa_autotask", path="/Tickets/query$", status=500,
                         message="Itgenatr005: the thread threshold of 3 for this endpoint was exceeded")
    error = await refused(desk(at).find_open(draft()))
    assert (error.code, error.retryable, error.retry_after) == ("TicketThrottled", True, DEFAULT_RETRY_AFTER)


async def test_one_desk_keeps_within_autotask_s_thread_limit(at: Any) -> None:
    # The ticket book converges several conditions at once through one desk.
    at.control.seed({"psa_autotask": {"rateLimit": {"serviceSeconds": 0.3}}})
    atd = desk(at)
    refs = await asyncio.gather(*(atd.open(draft(f"condition-{n}")) for n in range(6)))
    assert len({r.id for r in refs}) == 6
    state = at.control.autotask()
    assert len(state["tickets"]) == 6 and state["threadRefusals"] == 0


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0", 0.0), (None, DEFAULT_RETRY_AFTER),
                                                 ("soon", DEFAULT_RETRY_AFTER), ("-5", 0.0)])
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float) -> None:
    assert _retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 110 <= _retry_after(later) <= 121


@pytest.mark.parametrize("fault", [{"status": 503, "message": "Service Unavailable"}, {"status": 502},
                                   {"drop": True}])
async def test_an_outage_is_unreachable_and_retryable(at: Any, fault: dict[str, Any]) -> None:
    at.control.add_fault("psa_autotask", count=None, **fault)
    for call in (desk(at).open(draft()), desk(at).find_open(draft()), desk(at).check(TicketRoute())):
        error = await refused(call)
        assert (error.code, error.retryable) == ("TicketSystemUnreachable", True)
    at.control.clear_faults()
    assert await desk(at).find_open(draft()) is None and at.control.autotask()["tickets"] == []


async def test_no_credential_in_logs_or_errors(at: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[TicketError] = []
    for changes in ({"secret": SECRET + "x"}, {"integrationCode": CODE + "x"}, {"userName": "x" + USER}, {}):
        try:
            await desk(at, **changes).open(draft(route=TicketRoute(board="No Such Queue")))
        except TicketError as error:
            errors.append(error)
    at.control.add_fault("psa_autotask", status=500, message=f"echo {SECRET} {CODE}")
    errors.append(await refused(desk(at).check(TicketRoute())))
    at.control.add_fault("psa_autotask", method="POST", path="/Tickets$", drop=True)  # a POST is never resent
    errors.append(await refused(desk(at).open(draft())))
    assert len(errors) == 6
    said = caplog.text + "\n".join(f"{e} {e.message!r}" for e in errors)
    for credential in (SECRET, CODE, USER, USER.replace("@", "%40")):
        assert credential not in said


def test_the_configuration_is_checked_and_names_the_field_never_the_value() -> None:
    good = {"userName": USER, "secret": SECRET, "integrationCode": CODE, "queue": "Monitoring Alert"}
    assert isinstance(tickets.desk("autotask", good), AutotaskDesk)
    for broken in ({k: v for k, v in good.items() if k != "secret"}, {**good, "userName": " "},
                   {**good, "companyId": "Contoso"}, {**good, "zoneInformationUrl": "http://example.com/zone"},
                   {**good, "noteType": "first"}, {**good, "apiUrl": "ftp://webservices3.autotask.net"}):
        with pytest.raises(TicketError) as caught:
            tickets.desk("autotask", broken)
        assert caught.value.code == "TicketConfigInvalid" and SECRET not in str(caught.value)


def test_the_configuration_shows_no_credential_in_its_repr() -> None:
    parsed = AutotaskConfig.parse({"userName": USER, "secret": SECRET, "integrationCode": CODE})
    shown = repr(parsed) + repr(AutotaskDesk(parsed))
    assert SECRET not in shown and CODE not in shown and USER not in shown


@pytest.mark.parametrize("url", ["https://webservices3.autotask.net/ATServicesRest/",
                                 "https://webservices3.autotask.net//ATServicesRest/",
                                 "https://webservices3.autotask.net/ATServicesRest"])
def test_the_api_base_of_a_zone_url(url: str) -> None:
    assert api_base(url) == "https://webservices3.autotask.net/ATServicesRest/V1.0"


def test_credentials_go_only_to_autotask_or_the_discovery_host() -> None:
    atd = AutotaskDesk(AutotaskConfig.parse({"userName": USER, "secret": SECRET, "integrationCode": CODE}))
    assert atd._trusted("https://webservices14.autotask.net/ATServicesRest/")
    for untrusted in ("http://webservices14.autotask.net/ATServicesRest/", "https://autotask.net.evil.example/",
                      "https://evil.example/ATServicesRest/", "https://webservices.autotask.net@evil.example/"):
        assert not atd._trusted(untrusted), untrusted
