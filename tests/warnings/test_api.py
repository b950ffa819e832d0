"""The fleet over HTTP: GET /api/inventory's filters, pages and CSV; exclusions and snoozes (a snooze without an end
refused, nothing stored; audited; excluded rows still listed with the reason); per customer thresholds. Every answer
is checked against the OpenAPI document by the Api helper."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

from shared import bootstrap
from shared.clock import SystemClock
from shared.inventory import CredentialKind, InventoryCredential, ObjectKind
from tests.api.conftest import Api
from tests.rotation.conftest import World
from tests.rotation.test_entrypoints import register

READER = ("reader@msp.example", ("Rotator.Read",))


def row(tenant: str, customer: str, object_id: str, key: str, days: float | None, *, kind: CredentialKind =
        CredentialKind.PASSWORD, app_id: str | None = None, name: str = "Backup", managed: bool = False,
        object_kind: ObjectKind = ObjectKind.APPLICATION) -> InventoryCredential:
    now = SystemClock().now()
    return InventoryCredential(
        tenant_id=tenant, customer=customer, object_kind=object_kind, object_id=object_id,
        app_id=app_id or str(uuid.uuid5(uuid.NAMESPACE_URL, object_id)), display_name=name, owners=("Ann",),
        credential_kind=kind, usage="Verify" if kind is CredentialKind.CERTIFICATE else "", key_id=key, hint="Ab1",
        credential_name="", start=now - timedelta(days=400),
        end=None if days is None else now + timedelta(days=days, hours=1), managed=managed)


async def fleet(api: Api, world: World) -> tuple[str, str, list[InventoryCredential]]:
    one, two = world.seed_customer("Fabrikam", 200), world.seed_customer("Tailspin", 200)
    world.seed_accounts()
    await register(api, one, two)
    k = [str(uuid.UUID(int=i + 1)) for i in range(6)]
    rows = [row(one.tenant_id, "Fabrikam", "o-backup", k[0], 10, name='=HYPERLINK("http://x")'),
            row(one.tenant_id, "Fabrikam", "o-backup", k[1], -40),
            row(one.tenant_id, "Fabrikam", "o-sso", k[2], 100, kind=CredentialKind.CERTIFICATE,
                object_kind=ObjectKind.SERVICE_PRINCIPAL),
            row(one.tenant_id, "Fabrikam", "o-ppe", k[3], 25, app_id=one.app_id, managed=True),
            row(two.tenant_id, "Tailspin", "o-rmm", k[4], 5),
            row(two.tenant_id, "Tailspin", "o-never", k[5], None)]
    async with bootstrap.services() as svc:
        assert svc.inventory is not None
        for r in rows:
            await svc.inventory.put_objects(r.tenant_id, r.object_kind, {r.object_id: [x for x in rows if
                                            (x.tenant_id, x.object_id) == (r.tenant_id, r.object_id)]})
    return one.tenant_id, two.tenant_id, rows


async def keys(api: Api, **params: str) -> list[str]:
    reply = await api.call("inventory", params=params, caller=READER)
    assert reply.status == 200, reply.body
    return sorted(r["keyId"][-1] for r in reply.body["credentials"])


async def test_inventory_filters(api: Api, world: World) -> None:
    _, two, _ = await fleet(api, world)
    reply = await api.call("inventory", caller=READER)
    assert reply.status == 200 and reply.body["next"] is None and "Link" not in reply.headers
    docs = {d["keyId"][-1]: d for d in reply.body["credentials"]}
    assert sorted(docs) == ["1", "2", "3", "4", "5", "6"]
    assert (docs["1"]["daysLeft"], docs["1"]["warningThreshold"], docs["1"]["excluded"]) == (10, 14, None)
    assert docs["2"]["daysLeft"] < 0 and docs["6"]["end"] is None and docs["6"]["warningThreshold"] is None
    assert docs["3"]["objectKind"] == "servicePrincipal" and docs["3"]["credentialKind"] == "certificate"
    assert await keys(api, tenantId=two) == ["5", "6"]
    assert await keys(api, customer="fabri") == ["1", "2", "3", "4"]
    assert await keys(api, daysLeft="10") == ["1", "2", "5"]
    assert await keys(api, daysLeft="0") == ["2"]
    assert await keys(api, kind="certificate") == ["3"]
    assert await keys(api, managed="true") == ["4"]
    assert await keys(api, managed="false", daysLeft="30", customer="Fabrikam") == ["1", "2"]
    assert await keys(api, excluded="true") == []
    # the report's states: an expired secret whose object holds a newer one is "expired, renewed", not expired
    assert (docs["2"]["state"], docs["2"]["stateText"]) == ("expired-renewed", "expired, renewed")
    assert await keys(api, state="expired-renewed") == ["2"] and await keys(api, state="expired") == []
    assert await keys(api, state="due,expired") == ["1", "5"] and await keys(api, state="rotated") == ["4"]
    assert await keys(api, state="healthy", customer="Tailspin") == ["6"]
    for bad in ({"state": "late"}, {"state": "due,,"}, {"state": "Due"}, {"daysLeft": "soon"}, {"daysLeft": "-1"},
                {"daysLeft": "\u0663"}, {"daysLeft": " 7"}, {"limit": "1_0"}, {"limit": "\uff15"},
                {"kind": "key"}, {"managed": "yes"}, {"tenantId": "x"},
                {"format": "xml"}, {"limit": "0"}, {"limit": "5001"}, {"cursor": "nonsense"}, {"colour": "red"}):
        reply = await api.call("inventory", params=bad, caller=READER)
        assert (reply.status, reply.code) == (400, "InvalidQuery"), bad
    assert (await api.call("inventory", caller=None)).status == 401
    assert (await api.call("inventory", caller=("nobody", ()))).status == 403


async def test_inventory_pages_follow_the_cursor_to_the_end_and_csv_is_safe_for_spreadsheets(api: Api, world: World
                                                                                              ) -> None:
    await fleet(api, world)
    seen: list[str] = []
    params = {"limit": "2"}
    for _ in range(10):
        reply = await api.call("inventory", params=params, caller=READER)
        seen += [d["keyId"] for d in reply.body["credentials"]]
        if reply.body["next"] is None:
            assert "Link" not in reply.headers
            break
        assert 'rel="next"' in reply.headers["Link"] and reply.body["next"] in reply.headers["Link"]
        params = {"limit": "2", "cursor": reply.body["next"]}
    assert len(seen) == 6 == len(set(seen))
    everything = (await api.call("inventory", caller=READER)).body["credentials"]
    assert seen == [d["keyId"] for d in everything]

    reply = await api.call("inventory", params={"format": "csv", "daysLeft": "14"}, caller=READER)
    assert reply.status == 200 and "credentials.csv" in reply.headers["Content-Disposition"]
    assert reply.text.startswith("tenantId,customer,objectKind,")  # the Api helper checked the media type
    table = list(csv.DictReader(io.StringIO(reply.text)))
    assert sorted(r["keyId"][-1] for r in table) == ["1", "2", "5"]
    backup = next(r for r in table if r["keyId"].endswith("1"))
    assert backup["displayName"].startswith("'=")  # not a formula in a spreadsheet
    assert backup["daysLeft"] == "10" and backup["excluded"] == "false" and backup["owners"] == "Ann"
    expired = next(r for r in table if r["keyId"].endswith("2"))
    assert expired["daysLeft"].startswith("-")  # numbers stay numbers


async def test_exclusions_and_snoozes_are_kept_with_who_why_until_audited_and_rows_stay_listed(api: Api, world: World
                                                                                               ) -> None:
    one, two, rows = await fleet(api, world)
    backup_app = rows[0].app_id
    before = (await api.call("exclusions", caller=READER)).body
    # A snooze without an end is refused, and nothing is stored.
    reply = await api.call("exclusions", "POST", body={"tenantId": one, "scope": "app", "appId": backup_app,
                                                       "kind": "snooze", "why": "vendor renews in January"})
    assert (reply.status, reply.code) == (422, "SnoozeNeedsEnd") and "until" in reply.body["error"]["message"]
    for bad in ({"tenantId": one, "scope": "app", "why": "x"},  # no appId
                {"tenantId": one, "scope": "customer"},  # no why
                {"tenantId": one, "scope": "customer", "why": "x", "until": "tomorrow"},
                {"tenantId": one, "scope": "customer", "why": "x", "until": "2020-01-01T00:00:00Z"},
                {"tenantId": one, "scope": "customer", "why": "x", "by": "someone else"}):
        reply = await api.call("exclusions", "POST", body=bad)
        assert reply.status == 422, bad
    assert (await api.call("exclusions", "POST", body={"tenantId": one, "scope": "customer", "why": "x"},
                           caller=READER)).status == 403
    stranger = str(uuid.uuid4())  # no target registered there: the exclusion would silently do nothing
    reply = await api.call("exclusions", "POST", body={"tenantId": stranger, "scope": "customer", "why": "x"})
    assert (reply.status, reply.code) == (404, "TenantNotFound")
    assert (await api.call("exclusions", caller=READER)).body == before == {"exclusions": []}

    until = (SystemClock().now() + timedelta(days=20)).isoformat()
    snooze = await api.call("exclusions", "POST", body={"tenantId": one, "scope": "app", "appId": backup_app.upper(),
                                                        "kind": "snooze", "until": until, "why": "change window 12/20"})
    assert snooze.status == 201 and snooze.body["by"] == "operator@msp.example" and snooze.body["kind"] == "snooze"
    excluded = await api.call("exclusions", "POST", body={"tenantId": two, "scope": "customer",
                                                          "why": "customer offboarding"})
    assert excluded.status == 201 and excluded.body["until"] is None and excluded.body["kind"] == "exclusion"
    listed = (await api.call("exclusions", caller=READER)).body["exclusions"]
    assert [e["id"] for e in listed] == [snooze.body["id"], excluded.body["id"]] and all(e["active"] for e in listed)
    assert [e["id"] for e in (await api.call("exclusions", params={"tenantId": two}, caller=READER)).body[
        "exclusions"]] == [excluded.body["id"]]
    for bad in ({"tenant": two}, {"tenantId": "x"}):  # a misspelt filter is refused, not ignored (all listed)
        reply = await api.call("exclusions", params=bad, caller=READER)
        assert (reply.status, reply.code) == (400, "InvalidQuery"), bad

    assert await keys(api, excluded="true") == ["1", "2", "5", "6"]
    assert await keys(api, excluded="false") == ["3", "4"]
    listing = (await api.call("inventory", caller=READER)).body["credentials"]
    doc = next(d for d in listing if d["keyId"] == rows[0].key_id)
    assert doc["excluded"] == {"id": snooze.body["id"], "kind": "snooze", "scope": "app", "by": "operator@msp.example",
                               "why": "change window 12/20", "until": snooze.body["until"]}

    lifted = await api.call("exclusion", "DELETE", route={"exclusionId": snooze.body["id"]})
    assert lifted.status == 200 and lifted.body["id"] == snooze.body["id"]
    assert lifted.body["liftedBy"] == "operator@msp.example" and lifted.body["active"] is False
    again = await api.call("exclusion", "DELETE", route={"exclusionId": snooze.body["id"]})
    assert (again.status, again.code) == (409, "AlreadyLifted")
    unknown = await api.call("exclusion", "DELETE", route={"exclusionId": str(uuid.uuid4())})
    assert (unknown.status, unknown.code) == (404, "NotFound")
    assert await keys(api, excluded="true") == ["5", "6"]
    # The lifted snooze stays listed, inactive, with who made and who lifted it.
    [kept] = [e for e in (await api.call("exclusions", caller=READER)).body["exclusions"]
              if e["id"] == snooze.body["id"]]
    assert (kept["active"], kept["by"], kept["liftedBy"]) == (False, "operator@msp.example", "operator@msp.example")
    async with bootstrap.services() as svc:
        trail = await svc.state.events(one, backup_app)
    assert [(e.step, e.outcome, e.actor) for e in trail] == [
        ("warnings", "exclusion-lifted", "manual:operator@msp.example"),
        ("warnings", "snoozed", "manual:operator@msp.example")]
    assert "change window 12/20" in trail[1].detail and until[:10] in trail[1].detail


async def test_a_customer_s_thresholds(api: Api, world: World) -> None:
    one, _, rows = await fleet(api, world)
    reply = await api.call("warning_thresholds", route={"tenantId": one}, caller=READER)
    assert reply.body == {"tenantId": one, "days": [60, 30, 14, 7, 1], "default": True}
    for bad in ({"days": []}, {"days": [0]}, {"days": [30, 30]}, {"days": "60,30"}, {}, {"days": [30], "x": 1}):
        reply = await api.call("warning_thresholds", "PUT", route={"tenantId": one}, body=bad)
        assert reply.status == 422, bad
    assert (await api.call("warning_thresholds", "PUT", route={"tenantId": one}, body={"days": [9]},
                           caller=READER)).status == 403
    reply = await api.call("warning_thresholds", "PUT", route={"tenantId": str(uuid.uuid4())}, body={"days": [7]})
    assert (reply.status, reply.code) == (404, "TenantNotFound")
    reply = await api.call("warning_thresholds", route={"tenantId": str(uuid.uuid4())}, caller=READER)
    assert (reply.status, reply.code) == (404, "TenantNotFound")  # not the defaults, as if it were a customer
    reply = await api.call("warning_thresholds", "PUT", route={"tenantId": one}, body={"days": [7, 45]})
    assert reply.status == 200 and reply.body == {"tenantId": one, "days": [45, 7], "default": False}
    assert (await api.call("warning_thresholds", route={"tenantId": one}, caller=READER)).body["days"] == [45, 7]
    docs = {d["keyId"]: d for d in (await api.call("inventory", params={"tenantId": one}, caller=READER)).body[
        "credentials"]}
    assert docs[rows[0].key_id]["warningThreshold"] == 45 and docs[rows[3].key_id]["warningThreshold"] == 45
    async with bootstrap.services() as svc:
        [event] = await svc.state.events(one, "")
    assert (event.outcome, event.detail) == ("thresholds-set", "45,7")


async def test_no_secret_reaches_the_listing_the_export_or_an_exclusion(api: Api, world: World) -> None:
    from shared.inventory_pass import take_inventory

    customer = world.seed_customer("Northwind", 12)
    world.seed_accounts()
    await register(api, customer)
    async with bootstrap.services() as svc:
        summary = await take_inventory(svc)
    assert summary.failed == {} and summary.credentials >= 1
    listing = await api.call("inventory", params={"tenantId": customer.tenant_id}, caller=READER)
    exported = await api.call("inventory", params={"tenantId": customer.tenant_id, "format": "csv"}, caller=READER)
    [mine] = [d for d in listing.body["credentials"] if d["keyId"] == customer.key_id]
    assert mine["managed"] and mine["hint"] == customer.secret[:3] and mine["daysLeft"] in (11, 12)
    for text in (listing.text, exported.text):
        assert customer.secret not in text and customer.secret[3:12] not in text
    reply = await api.call("exclusions", "POST", body={"tenantId": customer.tenant_id, "scope": "customer",
                                                       "why": f"old secret {customer.secret}"})
    assert reply.status == 422 and customer.secret not in reply.text
    assert (await api.call("exclusions", caller=READER)).body == {"exclusions": []}


async def test_thousands_of_rows_come_in_pages_that_resume_exactly(api: Api, world: World) -> None:
    customer = world.seed_customer("Contoso", 200)
    world.seed_accounts()
    await register(api, customer)
    many = {f"o-{i:04d}": [row(customer.tenant_id, "Contoso", f"o-{i:04d}", str(uuid.UUID(int=i * 8 + j)), i % 90)
                           for j in range(5)] for i in range(500)}
    async with bootstrap.services() as svc:
        assert svc.inventory is not None
        await svc.inventory.put_objects(customer.tenant_id, ObjectKind.APPLICATION, many,
                                        stored={object_id: [] for object_id in many})
    seen: list[str] = []
    params = {"limit": "1000"}
    pages = 0
    while True:
        reply = await api.call("inventory", params=params, caller=READER)
        pages += 1
        seen += [d["keyId"] for d in reply.body["credentials"]]
        if reply.body["next"] is None:
            break
        params = {"limit": "1000", "cursor": reply.body["next"]}
    assert pages == 3 and len(seen) == len(set(seen)) == 2500
    reply = await api.call("inventory", params={"daysLeft": "9", "format": "csv", "limit": "5000"}, caller=READER)
    assert reply.text.count("\r\n") == 1 + 5 * sum(1 for i in range(500) if i % 90 <= 9)
