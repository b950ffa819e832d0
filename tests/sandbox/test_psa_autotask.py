"""The Autotask stand-in answers as Autotask's REST API does: zone discovery, header credentials, tickets, notes,
picklists, Autotask's error bodies and its hourly threshold (sources in sandbox/README.md, "Autotask PSA")."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.sandbox

USER = "rotator-api@msp.example"
SECRET = "at-" + secrets.token_urlsafe(24)  # made at run time: nothing secret-shaped is committed
CODE = "IC" + secrets.token_hex(12).upper()


@pytest.fixture
def at(sb: Any) -> Any:
    sb.control.seed({"psa_autotask": {"users": [{"userName": USER, "secret": SECRET, "integrationCode": CODE}],
                                  "companies": [{"id": 310, "companyName": "Contoso Ltd"}]}})
    return sb


def api(sb: Any, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    sent = {"ApiIntegrationCode": CODE, "UserName": USER, "Secret": SECRET} if headers is None else headers
    return requests.request(method, f"{sb.endpoints['psa_autotask']}/ATServicesRest/V1.0/{path}", headers=sent,
                            verify=sb.ca_file, timeout=10, **kwargs)


def new_ticket(**fields: Any) -> dict[str, Any]:
    return {"companyID": 310, "title": "Sync secret expired", "status": 1, "priority": 2, "queueID": 8, **fields}


def test_zone_discovery_needs_no_credentials_and_names_the_api_and_web_urls(at: Any) -> None:
    base = at.endpoints["psa_autotask"]
    zone = requests.get(f"{base}/atservicesrest/v1.0/zoneInformation", params={"user": USER.upper()},
                        verify=at.ca_file, timeout=10)
    assert zone.status_code == 200
    assert zone.json() == {"zoneName": "Sandbox", "url": f"{base}/ATServicesRest/", "webUrl": f"{base}/", "ci": 1}
    unknown = requests.get(f"{base}/atservicesrest/v1.0/zoneInformation", params={"user": "nobody@msp.example"},
                           verify=at.ca_file, timeout=10)
    assert (unknown.status_code, unknown.json()) == (500, {"errors": ["Zone information could not be determined"]})


def test_credentials_are_three_headers_checked_on_every_call(at: Any) -> None:
    good = {"ApiIntegrationCode": CODE, "UserName": USER, "Secret": SECRET}
    assert api(at, "GET", "Tickets/entityInformation/fields").status_code == 200
    for wrong in ({**good, "Secret": "not-it"}, {**good, "UserName": "other@msp.example"},
                  {k: v for k, v in good.items() if k != "Secret"}, {}):
        answer = api(at, "GET", "Tickets/entityInformation/fields", headers=wrong)
        assert answer.status_code == 401 and answer.json()["errors"], wrong
    bad_code = api(at, "GET", "Tickets/entityInformation/fields", headers={**good, "ApiIntegrationCode": "WRONG"})
    assert (bad_code.status_code, bad_code.json()) == (500, {"errors": ["IntegrationCode is invalid."]})
    assert at.control.autotask()["tickets"] == []


def test_repeated_wrong_secrets_lock_the_api_user_until_a_person_unlocks_it(at: Any) -> None:
    at.control.seed({"psa_autotask": {"lockoutAfter": 3}})
    good = {"ApiIntegrationCode": CODE, "UserName": USER, "Secret": SECRET}
    for _ in range(2):
        assert api(at, "GET", "Companies/310", headers={**good, "Secret": "wrong"}).status_code == 401
    assert api(at, "GET", "Companies/310").status_code == 200  # a success clears the count
    for _ in range(3):
        assert api(at, "GET", "Companies/310", headers={**good, "Secret": "wrong"}).status_code == 401
    locked = api(at, "GET", "Companies/310")
    assert locked.status_code == 401  # the right secret, refused alike
    assert at.control.autotask()["users"][0]["locked"] is True
    at.control.autotask_person_unlocks(USER)
    assert api(at, "GET", "Companies/310").status_code == 200


def test_a_ticket_is_created_read_queried_noted_and_completed(at: Any) -> None:
    created = api(at, "POST", "Tickets",
                  json=new_ticket(title="Contoso: Proofpoint a refusé la clé", externalID="ssr:1"))
    assert created.status_code == 200
    ticket_id = created.json()["itemId"]
    item = api(at, "GET", f"Tickets/{ticket_id}").json()["item"]
    assert item["title"] == "Contoso: Proofpoint a refusé la clé"
    assert item["ticketNumber"].startswith("T") and item["completedDate"] is None
    # Field names and string values compare without regard to case, as Autotask's SQL collation does.
    found = api(at, "POST", "Tickets/query", json={"filter": [
        {"op": "and", "items": [{"op": "eq", "field": "EXTERNALID", "value": "SSR:1"},
                                {"op": "noteq", "field": "status", "value": 5}]}]}).json()
    assert [t["id"] for t in found["items"]] == [ticket_id] and found["pageDetails"]["count"] == 1
    note = api(at, "POST", f"Tickets/{ticket_id}/Notes",
               json={"ticketID": ticket_id, "title": "Seen again", "description": "still failing", "noteType": 1,
                     "publish": 1})
    assert note.status_code == 200 and note.json()["itemId"]
    done = api(at, "PATCH", "Tickets", json={"id": ticket_id, "status": 5})
    assert done.json() == {"itemId": ticket_id}
    state = at.control.autotask()
    assert state["tickets"][0]["status"] == 5 and state["tickets"][0]["completedDate"]
    assert [(n["ticketID"], n["description"]) for n in state["notes"]] == [(ticket_id, "still failing")]
    none_open = api(at, "POST", "Tickets/query", json={"filter": [
        {"op": "eq", "field": "externalID", "value": "ssr:1"}, {"op": "noteq", "field": "status", "value": 5}]})
    assert none_open.json()["items"] == []


def test_the_query_language(at: Any) -> None:
    ids = [api(at, "POST", "Tickets", json=new_ticket(title=title, externalID=ext, priority=priority)).json()["itemId"]
           for title, ext, priority in (("Contoso expired", "ssr:a", 1), ("Fabrikam drift", "ssr:b", 2),
                                        ("Contoso drift", None, 3))]

    def query(*filters: Any, **extra: Any) -> list[int]:
        answer = api(at, "POST", "Tickets/query", json={"filter": list(filters), **extra})
        assert answer.status_code == 200, answer.text
        return [t["id"] for t in answer.json()["items"]]

    assert query({"op": "beginsWith", "field": "title", "value": "contoso"}) == [ids[0], ids[2]]
    assert query({"op": "contains", "field": "title", "value": "DRIFT"}) == [ids[1], ids[2]]
    assert query({"op": "in", "field": "priority", "value": [1, 3]}) == [ids[0], ids[2]]
    assert query({"op": "notExist", "field": "externalID"}) == [ids[2]]
    assert query({"op": "or", "items": [{"op": "eq", "field": "externalID", "value": "ssr:b"},
                                        {"op": "gt", "field": "priority", "value": 2}]}) == [ids[1], ids[2]]
    assert query({"op": "exist", "field": "id"}, maxRecords=1) == [ids[0]]
    narrow = api(at, "POST", "Tickets/query", json={"filter": [{"op": "eq", "field": "id", "value": ids[0]}],
                                                    "includeFields": ["ticketNumber"]}).json()["items"]
    assert narrow == [{"id": ids[0], "ticketNumber": narrow[0]["ticketNumber"]}]
    for bad in ({"filter": []}, {}, {"filter": [{"op": "like", "field": "title", "value": "x"}]},
                {"filter": [{"op": "eq", "field": "nonsense", "value": 1}]},
                {"filter": [{"op": "eq", "field": "title"}]}, {"filter": [{"op": "exist", "field": "id"}],
                                                               "maxRecords": 501}):
        refused = api(at, "POST", "Tickets/query", json=bad)
        assert refused.status_code == 500 and refused.json()["errors"], bad


def test_picklists_come_from_the_field_definitions_and_unknown_values_are_refused(at: Any) -> None:
    fields = {f["name"]: f for f in api(at, "GET", "Tickets/entityInformation/fields").json()["fields"]}
    assert {p["label"] for p in fields["queueID"]["picklistValues"]} >= {"Monitoring Alert", "Level I Support"}
    assert {p["label"]: p["value"] for p in fields["status"]["picklistValues"]}["Complete"] == "5"
    assert fields["title"]["length"] == 255 and fields["title"]["isRequired"]
    for field, value in (("queueID", 424242), ("priority", 9), ("status", 77), ("ticketType", 99)):
        refused = api(at, "POST", "Tickets", json=new_ticket(**{field: value}))
        assert refused.status_code == 500 and field in refused.json()["errors"][0], field
    missing = api(at, "POST", "Tickets", json={"companyID": 310, "title": "t", "status": 1, "priority": 2})
    assert missing.status_code == 500 and "queueID" in missing.json()["errors"][0]
    assert api(at, "POST", "Tickets", json=new_ticket(companyID=999)).status_code == 500
    assert at.control.autotask()["tickets"] == []


def test_companies_are_read_by_id_and_queried_by_name(at: Any) -> None:
    assert api(at, "GET", "Companies/310").json()["item"]["companyName"] == "Contoso Ltd"
    assert api(at, "GET", "Companies/999").status_code == 404
    found = api(at, "POST", "Companies/query", json={"filter": [{"op": "eq", "field": "CompanyName",
                                                               "value": "contoso ltd"}]}).json()
    assert [c["id"] for c in found["items"]] == [310]
    assert api(at, "POST", "Companies/query", json={"filter": [{"op": "eq", "field": "taxID", "value": 1}]}
               ).status_code == 500


def test_strings_over_their_length_are_refused_not_trimmed(at: Any) -> None:
    for field, length in (("title", 255), ("description", 8000), ("externalID", 50)):
        assert api(at, "POST", "Tickets", json=new_ticket(**{field: "é" * length})).status_code == 200
        refused = api(at, "POST", "Tickets", json=new_ticket(**{field: "é" * (length + 1)}))
        assert refused.status_code == 500 and field in refused.json()["errors"][0]
    # Autotask counts UTF-16 code units (.NET strings, nvarchar): a key emoji counts two.
    assert api(at, "POST", "Tickets", json=new_ticket(title="🔑" * 127 + "x")).status_code == 200
    assert api(at, "POST", "Tickets", json=new_ticket(title="🔑" * 128)).status_code == 500
    assert len(at.control.autotask()["tickets"]) == 4


def test_a_note_on_a_deleted_ticket_and_a_read_of_it_are_404(at: Any) -> None:
    ticket_id = api(at, "POST", "Tickets", json=new_ticket()).json()["itemId"]
    at.control.autotask_person_deletes(ticket_id)
    assert api(at, "GET", f"Tickets/{ticket_id}").status_code == 404
    note = api(at, "POST", f"Tickets/{ticket_id}/Notes",
               json={"title": "t", "description": "d", "noteType": 1, "publish": 1})
    assert note.status_code == 404 and note.json()["errors"]
    assert at.control.autotask()["deletedTicketIds"] == [ticket_id]


def test_a_person_completing_a_ticket_in_the_ui_is_seen_by_the_api(at: Any) -> None:
    ticket_id = api(at, "POST", "Tickets", json=new_ticket()).json()["itemId"]
    after = at.control.autotask_person_updates(ticket_id, {"status": 5})
    assert after["status"] == 5 and after["completedDate"]
    assert api(at, "GET", f"Tickets/{ticket_id}").json()["item"]["status"] == 5


def test_the_hourly_threshold_adds_latency_then_refuses_with_429(at: Any) -> None:
    at.control.seed({"psa_autotask": {"rateLimit": {"requestsPerHour": 8, "latencySeconds": [0.3, 0.6]}}})
    took = []
    for _ in range(8):
        started = time.monotonic()
        assert api(at, "GET", "ThresholdInformation").status_code == 200
        took.append(time.monotonic() - started)
    assert max(took[:4]) < 0.3 <= min(took[4:6]) and min(took[6:]) >= 0.6  # past 50 %, then past 75 %
    refused = api(at, "POST", "Tickets", json=new_ticket())
    assert refused.status_code == 429 and refused.json()["errors"]
    assert "Retry-After" not in refused.headers  # Autotask documents none
    assert at.control.autotask()["threshold"] == {"externalRequestThreshold": 8, "requestThresholdTimeframe": 60,
                                                  "currentTimeframeRequestCount": 8}
    at.control.set_clock(3601)  # the rolling hour has passed
    assert api(at, "POST", "Tickets", json=new_ticket()).status_code == 200


def test_more_than_three_concurrent_requests_of_one_integration_on_one_endpoint_are_refused(at: Any) -> None:
    at.control.seed({"psa_autotask": {"rateLimit": {"serviceSeconds": 0.5}}})
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: api(at, "POST", "Tickets/query", json={
            "filter": [{"op": "exist", "field": "id"}]}), range(5)))
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) == 2 and all(a.status_code == 500 and "thread threshold" in a.json()["errors"][0]
                                     for a in refused)
    assert at.control.autotask()["threadRefusals"] == 2
    # Another endpoint is counted apart.
    with ThreadPoolExecutor(4) as pool:
        mixed = list(pool.map(lambda path: api(at, "GET", path), ["Tickets/entityInformation/fields"] * 3
                              + ["Companies/310"]))
    assert [a.status_code for a in mixed] == [200, 200, 200, 200]


def test_an_injected_fault_answers_in_autotask_s_error_format(at: Any) -> None:
    at.control.add_fault("psa_autotask", method="POST", path="/Tickets$", status=503, message="Service Unavailable")
    answer = api(at, "POST", "Tickets", json=new_ticket())
    assert (answer.status_code, answer.json()) == (503, {"errors": ["Service Unavailable"]})
    assert at.control.autotask()["tickets"] == []
