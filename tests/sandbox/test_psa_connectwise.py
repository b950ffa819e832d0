"""The ConnectWise Manage stand-in answers as ConnectWise's REST API does: its authentication, routing names, errors,
conditions and rate limit (sources in sandbox/README.md, "ConnectWise Manage")."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from sandbox.psa_connectwise import parse_conditions, utf16_length
from tests.tickets import connectwise_site as site

pytestmark = pytest.mark.sandbox
API = "/v4_6_release/apis/3.0"


def call(sb: Any, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
         ) -> requests.Response:
    return requests.request(method, f"{sb.endpoints['psa_connectwise']}{API}{path}", verify=sb.ca_file, timeout=10,
                            headers=site.headers() if headers is None else headers, **kwargs)


@pytest.fixture
def cw(sb: Any) -> Any:
    sb.control.seed({"psa_connectwise": site.seed()})
    return sb


def ticket(**overrides: Any) -> dict[str, Any]:
    body = {"summary": "Sync secret expires in 7 days", "board": {"name": "Managed Services"},
            "company": {"identifier": site.CUSTOMER_ID}, "externalXRef": "ssr:abc", "initialDescription": "first"}
    body.update(overrides)
    return body


def test_authentication_needs_the_keys_of_a_member_of_the_login_company_and_a_client_id(cw: Any) -> None:
    assert call(cw, "GET", "/service/boards").status_code == 200
    wrong = [
        site.headers(private="not-the-key"),
        site.headers(public="unknown"),
        site.headers(company="other_company"),
        {"Authorization": site.authorization()},  # no clientId
        {"Authorization": site.authorization(), "clientId": "00000000-0000-0000-0000-000000000000"},
        {"clientId": site.CLIENT_ID},  # no Authorization
        {"Authorization": "Bearer " + site.PRIVATE_KEY, "clientId": site.CLIENT_ID},
        {"Authorization": "Basic !!!not-base64", "clientId": site.CLIENT_ID},
        site.headers(company="Bäckerei", private="schlüssel"),  # non-ASCII credentials are refused, not a 500
    ]
    for headers in wrong:
        answer = call(cw, "GET", "/service/tickets", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["code"] == "Unauthorized"
        assert site.PRIVATE_KEY not in answer.text
    # Nothing that failed authentication was counted or recorded.
    assert [r["path"] for r in cw.control.state()["psa_connectwise"]["requests"]] == [f"{API}/service/boards"]


def test_a_ticket_is_created_with_its_routing_names_and_read_back(cw: Any) -> None:
    answer = call(cw, "POST", "/service/tickets", json=ticket(type={"name": "alert"}))
    assert answer.status_code == 201
    created = answer.json()
    assert created["board"]["name"] == "Managed Services"
    assert created["status"]["name"] == "New (Automation)"  # the board's default status
    assert created["priority"]["name"] == "Priority 3 - Normal Response"  # the default priority
    assert created["company"]["name"] == site.CUSTOMER
    assert created["type"]["name"] == "Alert"  # names match without regard to case, as SQL Server compares
    assert "initialDescription" not in created  # only available for POST
    assert call(cw, "GET", f"/service/tickets/{created['id']}").json() == created
    stored = cw.control.state()["psa_connectwise"]["tickets"]
    assert [t["notes"][0]["text"] for t in stored] == ["first"]
    assert stored[0]["notes"][0]["detailDescriptionFlag"] is True


@pytest.mark.parametrize(("overrides", "field", "code"), [
    ({"board": {"name": "No Such Board"}}, "board", "NotFound"),
    ({"board": {"id": 999999}}, "board", "NotFound"),
    ({"company": {"identifier": "Nobody"}}, "company", "NotFound"),
    ({"status": {"name": "Completed"}}, "status/name", "NotFound"),  # a status of another board
    ({"priority": {"name": "Priority 9"}}, "priority/name", "NotFound"),
    ({"type": {"name": "Maintenance Window"}}, "type/name", "NotFound"),
    ({"summary": "x" * 101}, "summary", "MaxLengthField"),
    ({"summary": "é" * 100}, None, None),  # 100 characters of the BMP: accepted
    ({"summary": "😀" * 50}, None, None),  # 50 emoji are 100 UTF-16 code units: accepted
    ({"summary": "😀" * 50 + "x"}, "summary", "MaxLengthField"),  # 101 code units: refused
    ({"externalXRef": "k" * 101}, "externalXRef", "MaxLengthField"),
])
def test_unknown_routing_names_and_long_fields_are_refused_as_connectwise_does(
        cw: Any, overrides: dict[str, Any], field: str | None, code: str | None) -> None:
    answer = call(cw, "POST", "/service/tickets", json=ticket(**overrides))
    if field is None:
        assert answer.status_code == 201
        return
    assert answer.status_code == 400
    body = answer.json()
    assert (body["code"], body["message"]) == ("InvalidObject", "ticket object is invalid")
    assert [(e["code"], e["field"], e["resource"]) for e in body["errors"]] == [(code, field, "ticket")]
    assert cw.control.state()["psa_connectwise"]["tickets"] == []


def test_conditions_find_the_open_ticket_by_its_external_reference(cw: Any) -> None:
    first = call(cw, "POST", "/service/tickets", json=ticket()).json()
    call(cw, "POST", "/service/tickets", json=ticket(externalXRef="ssr:other"))
    closed = call(cw, "POST", "/service/tickets", json=ticket(status={"name": "Closed"})).json()
    assert closed["closedFlag"] is True
    query = {"conditions": 'externalXRef="ssr:abc" and closedFlag=false', "orderBy": "id asc"}
    assert [t["id"] for t in call(cw, "GET", "/service/tickets", params=query).json()] == [first["id"]]
    like = {"conditions": 'summary like "sync secret%" and (board/name = "Managed Services" or id < 0)'}
    assert len(call(cw, "GET", "/service/tickets", params=like).json()) == 3
    assert len(call(cw, "GET", "/service/tickets", params={"pageSize": 2}).json()) == 2
    for bad in ('nosuchfield = 1', 'summary = ', 'summary ~ "x"', '(summary = "x"'):
        answer = call(cw, "GET", "/service/tickets", params={"conditions": bad})
        assert answer.status_code == 400, bad
    assert call(cw, "GET", "/service/tickets", params={"pageSize": 1001}).status_code == 400


def test_patch_closes_and_reopens_by_status_and_notes_need_a_flag(cw: Any) -> None:
    created = call(cw, "POST", "/service/tickets", json=ticket()).json()
    path = f"/service/tickets/{created['id']}"
    note = call(cw, "POST", path + "/notes", json={"text": "again", "internalAnalysisFlag": True})
    assert note.status_code == 201
    assert call(cw, "POST", path + "/notes", json={"text": "no tab"}).status_code == 400
    assert call(cw, "POST", path + "/notes", json={"internalAnalysisFlag": True}).status_code == 400
    closed = call(cw, "PATCH", path, json=[{"op": "replace", "path": "status", "value": {"name": "Resolved"}}])
    assert closed.status_code == 200
    assert (closed.json()["closedFlag"], closed.json()["closedBy"]) == (True, "ssr-api")
    unknown = call(cw, "PATCH", path, json=[{"op": "replace", "path": "status", "value": {"name": "Completed"}}])
    assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (400, "status/name")
    assert call(cw, "PATCH", path, json={"op": "replace", "path": "status"}).status_code == 400  # not an array
    moved_alone = call(cw, "PATCH", path, json=[{"op": "replace", "path": "board", "value": {"name": "Help Desk"}}])
    assert (moved_alone.status_code, moved_alone.json()["errors"][0]["field"]) == (400, "status/id")
    reopened = call(cw, "PATCH", path, json=[{"op": "replace", "path": "status", "value": {"name": "In Progress"}}])
    assert reopened.json()["closedFlag"] is False
    texts = [n["text"] for n in call(cw, "GET", path + "/notes").json()]
    assert texts == ["first", "again"]


def test_a_deleted_ticket_is_404_not_found(cw: Any) -> None:
    created = call(cw, "POST", "/service/tickets", json=ticket()).json()
    path = f"/service/tickets/{created['id']}"
    assert call(cw, "DELETE", path).status_code == 204
    for method, suffix, body in (("GET", "", None), ("PATCH", "", [{"op": "replace", "path": "summary",
                                                                     "value": "x"}]),
                                 ("POST", "/notes", {"text": "x", "internalAnalysisFlag": True})):
        answer = call(cw, method, path + suffix, json=body)
        assert (answer.status_code, answer.json()["code"]) == (404, "NotFound"), method
    assert cw.control.state()["psa_connectwise"]["deleted"] == [created["id"]]


def test_a_read_only_member_is_refused_writes_with_security(cw: Any) -> None:
    viewer = site.headers(public=site.READ_ONLY_PUBLIC, private=site.READ_ONLY_PRIVATE)
    assert call(cw, "GET", "/service/boards", headers=viewer).status_code == 200
    answer = call(cw, "POST", "/service/tickets", headers=viewer, json=ticket())
    assert (answer.status_code, answer.json()["code"]) == (403, "Security")


def test_setup_lookups_boards_statuses_priorities_companies(cw: Any) -> None:
    boards = call(cw, "GET", "/service/boards", params={"conditions": 'name="Managed Services"'}).json()
    assert [b["name"] for b in boards] == ["Managed Services"]
    statuses = call(cw, "GET", f"/service/boards/{boards[0]['id']}/statuses",
                    params={"conditions": "closedStatus=true", "orderBy": "sortOrder asc"}).json()
    assert [s["name"] for s in statuses] == ["Resolved", "Closed"]
    assert call(cw, "GET", "/service/boards/999999/statuses").status_code == 404
    companies = call(cw, "GET", "/company/companies", params={"conditions": 'identifier="株式会社テスト"'}).json()
    assert [c["name"] for c in companies] == ["株式会社テスト"]
    priorities = call(cw, "GET", "/service/priorities", params={"conditions": 'name="Priority 1 - Emergency Response"'})
    assert len(priorities.json()) == 1


def test_the_rate_limit_answers_429_with_retry_after_seconds(cw: Any) -> None:
    cw.control.seed({"psa_connectwise": {"rateLimit": {"requests": 3, "seconds": 60}}})
    answers = [call(cw, "GET", "/service/boards") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json()["code"] == "TooManyRequests"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    cw.control.set_clock(61)  # the window passes
    assert call(cw, "GET", "/service/boards").status_code == 200


def test_the_conditions_parser_on_plain_rows() -> None:
    rows = [{"id": 1, "summary": 'say "hi"', "board": {"name": "A"}, "closedFlag": False},
            {"id": 2, "summary": "other", "board": {"name": "B"}, "closedFlag": True}]
    fields = frozenset({"id", "summary", "board", "closedFlag"})

    def ids(text: str) -> list[int]:
        predicate = parse_conditions(text, fields)
        return [r["id"] for r in rows if predicate(r)]

    assert ids(r'summary = "say \"hi\""') == [1]
    assert ids('board/name != "a"') == [2]
    assert ids('summary contains "THE"') == [2]
    assert ids('summary not like "say%"') == [2]
    assert ids('id >= 2 or closedFlag = false') == [1, 2]
    assert ids('board/missing = null') == [1, 2]
    assert utf16_length("a😀é") == 4
