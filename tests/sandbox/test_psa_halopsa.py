"""The HaloPSA stand-in answers as HaloPSA's API does: its OAuth token endpoint, scopes, tickets, actions, lookups,
errors and its rolling rate limit (sources in sandbox/README.md, "HaloPSA")."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from sandbox.psa_halopsa import like

pytestmark = pytest.mark.sandbox

APP = {"client_id": "halo-app", "client_secret": "halo-secret-1", "scopes": ["edit:tickets", "read:tickets"],
       "agent": "Rotator API"}


def url(sb: Any, path: str) -> str:
    return sb.endpoints["psa_halopsa"] + path


def token(sb: Any, *, client_id: str = "halo-app", secret: str = "halo-secret-1",
          scope: str = "edit:tickets read:tickets", tenant: str | None = None) -> requests.Response:
    return requests.post(url(sb, "/auth/token"), params={"tenant": tenant} if tenant else None, verify=sb.ca_file,
                         timeout=10, data={"grant_type": "client_credentials", "client_id": client_id,
                                           "client_secret": secret, "scope": scope})


def bearer(sb: Any, **kwargs: Any) -> dict[str, str]:
    answer = token(sb, **kwargs)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def call(sb: Any, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.request(method, url(sb, path), headers=headers, verify=sb.ca_file, timeout=10, **kwargs)


@pytest.fixture
def halo(sb: Any) -> Any:
    sb.control.seed({"psa_halopsa": {"applications": [APP, {"client_id": "human", "client_secret": "h-secret",
                                                            "scopes": "all", "agent": "Dana Desk"}]}})
    return sb


def test_token_endpoint_checks_the_client_the_scope_and_the_tenant(halo: Any) -> None:
    ok = token(halo)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 3600
    assert ok.json()["scope"] == "edit:tickets read:tickets"
    bad = token(halo, secret="wrong")
    assert (bad.status_code, bad.json()) == (401, {"error": "invalid_client"})
    assert token(halo, client_id="nobody").status_code == 401
    # A scope the application was not granted (all is not, here).
    for scope in ("all", "read:customers edit:tickets", ""):
        refused = token(halo, scope=scope)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope"), scope
    assert token(halo, client_id="human", secret="h-secret", scope="all").status_code == 200
    wrong_grant = requests.post(url(halo, "/auth/token"), data={"grant_type": "password"}, verify=halo.ca_file,
                                timeout=10)
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (400, "unsupported_grant_type")
    # A hosted instance needs its tenant named on the token request.
    halo.control.seed({"psa_halopsa": {"tenant": "contoso"}})
    assert token(halo).status_code == 400
    assert token(halo, tenant="contoso").status_code == 200


def test_the_api_wants_a_live_token_with_the_endpoints_scope(halo: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        refused = call(halo, "GET", "/api/Tickets", headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    read_only = bearer(halo, scope="read:tickets")
    assert call(halo, "GET", "/api/Team", read_only).status_code == 200
    assert call(halo, "POST", "/api/Tickets", read_only, json=[{"summary": "s", "client_id": 12}]).status_code == 403
    edit_only = bearer(halo, scope="edit:tickets")
    assert call(halo, "GET", "/api/Tickets", edit_only).status_code == 403
    assert call(halo, "GET", "/api/Client", bearer(halo)).status_code == 403  # read:customers
    # Tokens live an hour on the sandbox clock.
    headers = bearer(halo)
    halo.control.set_clock(3601)
    assert call(halo, "GET", "/api/Tickets", headers).status_code == 401


def test_tickets_are_created_validated_searched_and_deleted(halo: Any) -> None:
    headers = bearer(halo)
    created = call(halo, "POST", "/api/tickets", headers, json=[{
        "summary": "Sync secret expired - Ünïcødé GmbH (ssr-0123456789ab)", "details_html": "x", "client_id": 12,
        "team": "2nd line support", "priority_id": 2, "tickettype_id": 1, "_ignored": True}])
    assert created.status_code == 200
    ticket = created.json()
    assert isinstance(ticket, dict) and ticket["id"] == 1001 and ticket["client_name"] == "Fabrikam"
    assert ticket["status_id"] == 1 and ticket["hasbeenclosed"] is False and "_ignored" not in ticket
    for bad, message in (({"client_id": 99}, "Client"), ({"team": "Nobody"}, "Team"), ({"priority_id": 7}, "Priority"),
                         ({"tickettype_id": 77}, "Ticket type"), ({"status_id": 55}, "Status"),
                         ({"summary": " "}, "summary"), ({"summary": "x" * 256}, "truncated")):
        refused = call(halo, "POST", "/api/Tickets", headers,
                       json=[{"summary": "s", "client_id": 12, **bad}])
        assert refused.status_code == 400, bad
        assert refused.json()["ClassName"] == "System.Exception" and message in refused.json()["Message"], bad
    # 255 UTF-16 code units fit; an emoji counts two.
    assert call(halo, "POST", "/api/Tickets", headers, json=[{"summary": "x" * 255, "client_id": 12}]).ok
    assert call(halo, "POST", "/api/Tickets", headers,
                json=[{"summary": "x" * 254 + "😀", "client_id": 12}]).status_code == 400
    assert call(halo, "POST", "/api/Tickets", headers, json={"summary": "s", "client_id": 12}).status_code == 400
    # One refused entry refuses the whole array.
    assert call(halo, "POST", "/api/Tickets", headers,
                json=[{"summary": "a", "client_id": 12}, {"summary": "b", "client_id": 99}]).status_code == 400
    assert len(halo.control.state()["psa_halopsa"]["tickets"]) == 2

    found = call(halo, "GET", "/api/Tickets", headers, params={"search": "ssr-0123456789ab", "open_only": "true"})
    assert found.json()["record_count"] == 1 and found.json()["tickets"][0]["id"] == 1001
    # SQL Server LIKE: brackets are a character class, so a bracketed tag finds nothing literal.
    assert call(halo, "GET", "/api/Tickets", headers, params={"search": "[ssr-0123456789ab]"}).json()[
        "record_count"] == 0
    assert call(halo, "GET", "/api/Tickets/1001", headers).json()["summary"].startswith("Sync secret expired")
    assert call(halo, "DELETE", "/api/Tickets/1001", headers).status_code == 200
    gone = call(halo, "GET", "/api/Tickets/1001", headers)
    assert gone.status_code == 404 and "not found" in gone.json()["Message"]
    assert call(halo, "GET", "/api/Tickets", headers, params={"search": "ssr-0123456789ab"}).json()[
        "record_count"] == 0
    assert halo.control.state()["psa_halopsa"]["deleted"] == [1001]


def test_actions_need_an_outcome_and_move_the_status(halo: Any) -> None:
    headers = bearer(halo)
    ticket = call(halo, "POST", "/api/Tickets", headers, json=[{"summary": "s", "client_id": 12}]).json()
    no_outcome = call(halo, "POST", "/api/Actions", headers, json=[{"ticket_id": ticket["id"], "note": "n"}])
    assert (no_outcome.status_code, no_outcome.json()["Message"]) == (
        400, "An Outcome must be entered for this Action")
    assert call(halo, "POST", "/api/Actions", headers,
                json=[{"ticket_id": 4242, "outcome": "Private Note", "note": "n"}]).status_code == 404
    assert call(halo, "POST", "/api/Actions", headers,
                json=[{"ticket_id": ticket["id"], "outcome": "Private Note", "new_status": 77}]).status_code == 400
    note = call(halo, "POST", "/api/Actions", headers, json=[{"ticket_id": ticket["id"], "outcome": "private note",
                                                              "note_html": "still <b>expired</b>",
                                                              "hiddenfromuser": True}])
    assert note.status_code == 200 and note.json()["outcome"] == "Private Note" and note.json()["who"] == "Rotator API"
    closing = call(halo, "POST", "/api/Actions", headers,
                   json=[{"ticket_id": ticket["id"], "outcome_id": 9, "note": "fixed", "new_status": 9}])
    assert closing.status_code == 200
    state = halo.control.state()["psa_halopsa"]
    assert state["tickets"][0]["status_id"] == 9 and state["tickets"][0]["hasbeenclosed"] is True
    assert [a["note"] for a in state["actions"]] == ["still <b>expired</b>", "fixed"]
    assert call(halo, "GET", "/api/Tickets", headers, params={"open_only": "true"}).json()["record_count"] == 0


def test_lookups_answer_arrays(halo: Any) -> None:
    headers = bearer(halo)
    assert {t["name"] for t in call(halo, "GET", "/api/Team", headers).json()} == {"1st Line Support",
                                                                                   "2nd Line Support"}
    statuses = call(halo, "GET", "/api/Status", headers).json()
    assert {"id": 9, "name": "Closed"} in statuses and all("closed" not in s for s in statuses)
    assert [p["priorityid"] for p in call(halo, "GET", "/api/Priority", headers).json()] == [1, 2, 3, 4]
    human = bearer(halo, client_id="human", secret="h-secret", scope="all")
    clients = call(halo, "GET", "/api/Client", human, params={"search": "fabri"}).json()
    assert clients == {"record_count": 1, "clients": [{"id": 12, "name": "Fabrikam"}]}
    assert call(halo, "GET", "/api/NoSuchThing", headers).status_code == 404


def test_rate_limit_is_a_rolling_window_seeded_through_the_control_api(halo: Any) -> None:
    halo.control.seed({"psa_halopsa": {"rate_limit": {"requests": 3, "window_seconds": 60}}})
    headers = bearer(halo)  # 1
    assert call(halo, "GET", "/api/Team", headers).ok  # 2
    assert call(halo, "GET", "/api/Team", headers).ok  # 3
    throttled = call(halo, "GET", "/api/Team", headers)
    assert throttled.status_code == 429 and "Retry-After" not in throttled.headers
    assert throttled.json() == {"Message": "Rate Limit Reached - 3 Requests per rolling 1 minute window"}
    assert halo.control.state()["psa_halopsa"]["throttled"] == 1
    halo.control.set_clock(61)  # the window rolled on
    assert call(halo, "GET", "/api/Team", headers).ok
    # A new limit counts the requests already in its window (the one just made).
    halo.control.seed({"psa_halopsa": {"rate_limit": {"requests": 1, "window_seconds": 300, "retry_after": True}}})
    again = call(halo, "GET", "/api/Team", headers)
    assert again.status_code == 429 and 250 <= int(again.headers["Retry-After"]) <= 300
    refused = halo.control.seed  # a bad rate limit is refused by the control API
    with pytest.raises(RuntimeError):
        refused({"psa_halopsa": {"rate_limit": {"requests": 0}}})


def test_faults_answer_in_halos_error_shape(halo: Any) -> None:
    headers = bearer(halo)
    halo.control.add_fault("psa_halopsa", status=503, path="/api/Tickets")
    failed = call(halo, "GET", "/api/Tickets", headers)
    assert failed.status_code == 503 and failed.json()["ClassName"] == "System.Exception"


@pytest.mark.parametrize("term, text, found", [
    ("ssr-ab", "Expired (ssr-ab12)", True), ("SSR-AB", "expired (ssr-ab12)", True), ("ssr-ac", "ssr-ab", False),
    ("a%c", "xabbbcx", True), ("a_c", "abc", True), ("a_c", "abbc", False), ("[ab]x", "bx", True),
    ("[^ab]x", "bx", False), ("[ssr-0123]", "ssr-0123", False), ("50[%]", "50%", True), ("a.b", "axb", False),
])
def test_search_is_sql_servers_like(term: str, text: str, found: bool) -> None:
    assert bool(like(term).search(text)) is found
