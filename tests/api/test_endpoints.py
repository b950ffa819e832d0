"""Every endpoint through its function, against the real adapters (sandbox + Azurite)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from shared import bootstrap
from shared.clock import SystemClock
from shared.domain import Stage
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import ACCOUNT_SECRET, World


def proofpoint(customer) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"name": "proofpoint", "kind": "proofpoint",
            "options": {"stack": customer.stack, "domain": customer.domain, "account_secret": ACCOUNT_SECRET}}


async def test_put_get_list_and_delete_a_target(api: Api, world: World) -> None:
    c = world.seed_customer("Fabrikam", 100)
    doc = {"customer": "Fabrikam", "policy": {"renewBeforeDays": 20}, "destinations": [proofpoint(c)]}
    created = await api.put(c, doc)
    assert created.status == 201, created.text
    assert created.body["tenantId"] == c.tenant_id and created.body["policy"] == {"renewBeforeDays": 20}
    again = await api.put(c, {**doc, "customer": "Fabrikam Ltd", "enabled": False})
    assert again.status == 200 and again.body["customer"] == "Fabrikam Ltd" and again.body["enabled"] is False

    got = await api.call("target", "GET", ids(c))
    assert got.status == 200 and got.body == again.body
    listed = await api.call("targets")
    assert listed.status == 200 and listed.body["targets"] == [again.body]

    gone = await api.call("target", "DELETE", ids(c))
    assert gone.status == 204 and gone.text == ""
    assert (await api.call("target", "GET", ids(c))).code == "TargetNotFound"
    assert (await api.call("target", "DELETE", ids(c))).status == 404
    assert (await api.call("targets")).body == {"targets": []}


async def test_delete_is_refused_while_a_rotation_is_in_flight(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Busy", 100)
    await api.put(c)
    target, etag = await svc.state.get_target(c.tenant_id, c.app_id)
    await svc.state.replace_target(target.with_state(stage=Stage.CREATING, rotation_id="ab" * 16), etag)
    reply = await api.call("target", "DELETE", ids(c))
    assert (reply.status, reply.code) == (409, "RotationInFlight")
    assert (await api.call("target", "GET", ids(c))).status == 200


async def test_status_shows_each_target_and_filters(api: Api, world: World) -> None:
    due = world.seed_customer("Due", 10)
    healthy = world.seed_customer("Healthy", 300)
    expired = world.seed_customer("Expired", -2)
    for c in (due, healthy, expired):
        await api.put(c)
    # A pass records what each target's secret looks like (the status endpoint only reads the registry).
    async with bootstrap.services() as svc:
        for c in (due, healthy, expired):
            await svc.engine.rotate_now(c.tenant_id, c.app_id, dry_run=True)
        await svc.engine.run_pass()
    everything = await api.call("status")
    assert everything.status == 200
    by_customer = {d["customer"]: d for d in everything.body["targets"]}
    assert set(by_customer) == {"Due", "Healthy", "Expired"}
    assert by_customer["Healthy"]["status"] == "healthy" and by_customer["Healthy"]["daysLeft"] in (299, 300)
    # The pass rotated the due and expired ones: last rotation time and outcome are shown.
    assert by_customer["Due"]["lastOutcome"] == "rotated" and by_customer["Due"]["lastRotationAt"]
    assert by_customer["Due"]["stage"] == "idle" and by_customer["Due"]["currentKeyId"]

    healthy_only = await api.call("status", params={"status": "healthy"})
    assert len(healthy_only.body["targets"]) == 3
    none = await api.call("status", params={"status": "due,expired"})
    assert none.status == 200 and none.body["targets"] == []


async def test_status_filter_keeps_only_the_asked_statuses(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    due = world.seed_customer("Due", 10)
    healthy = world.seed_customer("Healthy", 300)
    gone = world.seed_customer("Gone", 300)
    for c in (due, healthy, gone):
        await api.put(c)
    # Record observations without rotating: set them as a check would.
    for c, status in ((due, "due"), (healthy, "healthy"), (gone, "app-not-found")):
        target, etag = await svc.state.get_target(c.tenant_id, c.app_id)
        await svc.state.replace_target(target.with_observed(status=status, days_left=10), etag)
    reply = await api.call("status", params={"status": "due,app-not-found"})
    assert sorted(d["customer"] for d in reply.body["targets"]) == ["Due", "Gone"]


async def test_manual_rotation_dry_run_cooldown_force_and_in_flight(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    world.seed_accounts()
    c = world.seed_customer("Contoso", 200)
    await api.put(c, {"customer": "Contoso", "destinations": [proofpoint(c)]})
    request = {"tenantId": c.tenant_id, "appId": c.app_id}

    dry = await api.call("rotations", "POST", body={**request, "dryRun": True})
    assert dry.status == 200 and dry.body["result"] == "would-rotate" and dry.body["status"] == "healthy"
    assert [x["keyId"] for x in world.credentials(c)] == [c.key_id], "a dry run changes nothing"

    rotated = await api.call("rotations", "POST", body=request, params=WAIT)
    assert rotated.status == 200, rotated.text
    assert rotated.body["result"] == "rotated" and rotated.body["stage"] == "idle"
    made = [x for x in world.credentials(c) if x["keyId"] != c.key_id]
    assert len(made) == 1
    assert made[0]["secretText"] not in rotated.text, "the answer never carries the secret"

    repeat = await api.call("rotations", "POST", body=request)
    assert (repeat.status, repeat.code) == (409, "CoolDown")
    assert len(world.credentials(c)) == 2, "a refused repeat changes nothing"
    forced = await api.call("rotations", "POST", body={**request, "force": True}, params=WAIT)
    assert forced.status == 200 and forced.body["result"] == "rotated"

    target, etag = await svc.state.get_target(c.tenant_id, c.app_id)
    await svc.state.replace_target(target.with_state(stage=Stage.PENDING, rotation_id="cd" * 16), etag)
    busy = await api.call("rotations", "POST", body={**request, "force": True})
    assert (busy.status, busy.code) == (409, "RotationInFlight")

    unknown = await api.call("rotations", "POST", body={"tenantId": c.tenant_id, "appId": str(uuid.uuid4())})
    assert (unknown.status, unknown.code) == (404, "TargetNotFound")


async def test_cooldown_ends(api: Api, world: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Later", 200)
    await api.put(c)
    request = {"tenantId": c.tenant_id, "appId": c.app_id}
    assert (await api.call("rotations", "POST", body=request, params=WAIT)).body["result"] == "rotated"
    monkeypatch.setenv("MANUAL_COOLDOWN_MINUTES", "30")
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(minutes=31)))
    later = await api.call("rotations", "POST", body=request, params=WAIT)
    assert later.status == 200 and later.body["result"] == "rotated"


async def test_notify_only_waits_for_an_acknowledgement_then_finishes(api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = world.seed_customer("Northwind", 5)
    helpdesk = {"name": "helpdesk", "kind": "notify-only", "options": {"instructions": "the Proofpoint console"}}
    await api.put(c, {"customer": "Northwind", "destinations": [helpdesk]})
    request = {"tenantId": c.tenant_id, "appId": c.app_id}
    waiting = await api.call("rotations", "POST", body=request, params=WAIT)
    assert waiting.status == 200 and waiting.body["result"] == "push-incomplete", waiting.text
    assert any(a.condition == "notify-only-waiting" for a in api.alerter.raised)
    status = (await api.call("status")).body["targets"][0]
    assert status["stage"] == "verified" and status["destinations"][0]["acknowledged"] is False
    target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    new_key = target.state.new_key_id

    base = {**request, "destination": "helpdesk"}
    wrong_key = await api.call("acknowledgements", "POST", body={**base, "keyId": c.key_id})
    assert (wrong_key.status, wrong_key.code) == (409, "KeyMismatch")
    no_such = await api.call("acknowledgements", "POST", body={**base, "destination": "other", "keyId": new_key})
    assert (no_such.status, no_such.code) == (404, "DestinationNotFound")

    done = await api.call("acknowledgements", "POST", body={**base, "keyId": new_key})
    assert done.status == 200, done.text
    assert done.body["acknowledged"] is True and done.body["outcome"]["result"] == "rotated"
    status = (await api.call("status")).body["targets"][0]
    assert status["stage"] == "idle" and status["currentKeyId"] == new_key
    assert status["destinations"][0]["acknowledged"] is True

    late = await api.call("acknowledgements", "POST", body={**base, "keyId": new_key})
    assert (late.status, late.code) == (409, "NothingToAcknowledge")


async def test_acknowledging_a_destination_the_rotator_confirms_itself_is_refused(api: Api, world: World) -> None:
    c = world.seed_customer("Mixed", 100)
    await api.put(c, {"destinations": [proofpoint(c)]})
    reply = await api.call("acknowledgements", "POST",
                           body={**ids(c), "destination": "proofpoint", "keyId": c.key_id})
    assert (reply.status, reply.code) == (409, "NotNotifyOnly")


async def test_discover_lists_proofpoint_apps_with_expiry(api: Api, world: World) -> None:
    c = world.seed_customer("Tailspin", 40)
    modus = str(uuid.uuid4())
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [
        {"appId": modus, "displayName": "ModusCloud sync", "owners": ["msp-app"],
         "passwordCredentials": [{"endDateTime": "-5d", "startDateTime": "-400d"}]},
        {"appId": str(uuid.uuid4()), "displayName": "HR portal", "owners": ["msp-app"]},
    ]}]})
    await api.put(c)
    reply = await api.call("discover", route={"tenantId": c.tenant_id})
    assert reply.status == 200, reply.text
    assert reply.body["patterns"] == ["PPE", "Proofpoint", "ModusCloud"]
    apps = {a["displayName"]: a for a in reply.body["applications"]}
    assert set(apps) == {"Proofpoint Essentials", "ModusCloud sync"}
    assert apps["Proofpoint Essentials"]["registered"] is True and apps["ModusCloud sync"]["registered"] is False
    [current] = apps["Proofpoint Essentials"]["credentials"]
    assert current["keyId"] == c.key_id and current["daysLeft"] in (39, 40) and current["expired"] is False
    assert apps["ModusCloud sync"]["credentials"][0]["expired"] is True
    assert c.secret not in reply.text and c.secret[:3] + "8Q~" not in reply.text


async def test_discover_answers_404_for_an_unknown_tenant_and_502_without_consent(api: Api, world: World) -> None:
    unknown = await api.call("discover", route={"tenantId": str(uuid.uuid4())})
    assert (unknown.status, unknown.code) == (404, "TenantNotFound")
    c = world.seed_customer("NoConsent", 100, consent=False, owned=False)
    reply = await api.call("discover", route={"tenantId": c.tenant_id})
    assert (reply.status, reply.code) == (502, "AADSTS700016")


async def test_openapi_is_served(api: Api) -> None:
    reply = await api.call("openapi")
    assert reply.status == 200 and reply.body["openapi"].startswith("3.")
    assert "/api/rotations" in reply.body["paths"]


async def test_put_after_a_rotation_keeps_its_state(api: Api, world: World) -> None:
    c = world.seed_customer("Keep", 10)
    await api.put(c)
    assert (await api.call("rotations", "POST", body=ids(c), params=WAIT)).body["result"] == "rotated"
    before = (await api.call("status")).body["targets"][0]
    assert (await api.put(c, {"customer": "Keep renamed"})).status == 200
    after = (await api.call("status")).body["targets"][0]
    assert after["customer"] == "Keep renamed"
    assert after["currentKeyId"] == before["currentKeyId"] and after["lastRotationAt"] == before["lastRotationAt"]


async def test_no_json_answer_is_cacheable_errors_included(api: Api, world: World) -> None:
    """Customer data (status, targets, details, a rotation's report, who is calling, discovery) and every error say
    `Cache-Control: no-store`: no browser, proxy or CDN keeps them (the helper checks every answer; these name the
    routes one by one, with their refusals)."""
    c = world.seed_customer("Uncached", 10)
    assert (await api.put(c)).status == 201
    rotated = await api.call("rotations", "POST", {}, {**ids(c), "force": True}, params=WAIT)
    replies = [
        rotated,
        await api.call("status"), await api.call("targets"), await api.call("target", "GET", ids(c)),
        await api.call("details", "GET", ids(c)), await api.call("me"), await api.call("openapi"),
        await api.call("discover", "GET", {"tenantId": c.tenant_id}),
        await api.call("rotation", "GET", {"rotationId": rotated.headers["Location"].rsplit("/", 1)[1]}),
        # and refusals: unauthenticated, forbidden, not found, bad path, wrong method, bad body, unknown rotation
        await api.call("status", caller=None), await api.call("targets", caller=("guest@msp.example", ())),
        await api.call("target", "GET", {"tenantId": c.tenant_id, "appId": str(uuid.uuid4())}),
        await api.call("target", "GET", {"tenantId": "x", "appId": c.app_id}),
        await api.call("status", "POST"), await api.call("rotations", "POST", {}, {"tenantId": 1}),
        await api.call("rotation", "GET", {"rotationId": "ab" * 16}),
        await api.call("dashboard_asset", "GET", {"asset": "nope.js"}),
    ]
    assert [r.status for r in replies] == [200, 200, 200, 200, 200, 200, 200, 200, 200,
                                           401, 403, 404, 400, 405, 422, 404, 404], [r.text for r in replies]
    for reply in replies:
        headers = {k.lower(): v for k, v in reply.headers.items()}
        assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"


async def test_names_an_msp_gives_things_are_registered_and_secret_values_are_not(api: Api, world: World,
                                                                                  svc) -> None:  # type: ignore[no-untyped-def]
    """The names of issue 22 in every place a name goes (customer, Key Vault secret name, destination name,
    instructions, an acknowledgement's destination); a secret value in the same places is 422 and never echoed."""
    from tests.destinations.test_secret_shapes import SECRET_SHAPES

    c = world.seed_customer("Named", 100)
    for name in ("Vircom-Portal-Auth-Key-Tenant-A1", "Vircom-Portal-Auth-Key-Tenant-B2", "ContosoProofpointApiKey2026"):
        doc = {"customer": name, "destinations": [
            {"name": name, "kind": "notify-only", "options": {"instructions": f"Paste it for {name}, then Save"}},
            {"name": "portal", "kind": "http", "options": {"url": "https://portal.msp.example/api/aad",
                                                           "auth_secret": name}},
            {"name": "pp", "kind": "proofpoint", "options": {"stack": "us1", "domain": "contoso.com",
                                                             "account_secret": name}}]}
        stored = await api.put(c, doc)
        assert stored.status in (200, 201), (name, stored.text)
        assert stored.body["customer"] == name and stored.body["destinations"][0]["name"] == name
        ack = await api.call("acknowledgements", "POST", {}, {**ids(c), "destination": name, "keyId": c.app_id})
        assert (ack.status, ack.code) == (409, "NothingToAcknowledge"), (name, ack.text)
    rows = await svc.state.all_rows()
    for shape, make in SECRET_SHAPES[::7]:
        value = make()
        for doc in ({"customer": value},
                    {"customer": "Named", "destinations": [{"name": "n", "kind": "notify-only",
                                                            "options": {"instructions": value}}]}):
            refused = await api.put(c, doc)
            assert (refused.status, refused.code) == (422, "InvalidTarget"), (shape, refused.text)
            assert value not in refused.text
        ack = await api.call("acknowledgements", "POST", {}, {**ids(c), "destination": value, "keyId": c.app_id})
        assert ack.status == 422 and value not in ack.text, (shape, ack.text)
    assert await svc.state.all_rows() == rows
