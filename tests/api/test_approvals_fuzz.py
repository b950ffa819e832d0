"""Property-based, over HTTP against the real adapters: whatever change control document, decision body or link form
is sent, the API answers below 500 with a JSON error naming a code, and a refused decision changes nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from tests.api.conftest import JSON, Api, ids
from tests.api.test_fuzz import FUZZ, json_values
from tests.rotation.conftest import World

zones = st.sampled_from(["Europe/Berlin", "UTC", "Europe", "zone.tab", "localtime", "../UTC", "America/", "", "Mars"]) \
    | st.text(max_size=30) | json_values
times = st.sampled_from(["22:00", "00:00", "23:59", "24:00", "7:00", "07:60", "", "noon"]) | st.text(max_size=6) \
    | json_values
windows = st.fixed_dictionaries({}, optional={
    "days": st.lists(st.sampled_from(["mon", "sun", "Mon", "funday"]) | json_values, max_size=8) | json_values,
    "start": times, "end": times}) | json_values
controls = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["auto", "window", "approval", "WINDOW"]) | json_values, "timeZone": zones,
    "windows": st.lists(windows, max_size=4) | json_values,
    "forceDaysBeforeExpiry": st.integers(-5, 120) | json_values, "neverForce": st.booleans() | json_values,
}) | json_values


@FUZZ
@given(control=controls)
async def test_change_control_documents(api: Api, world: World, control: Any) -> None:
    c = world.seed_customer("Fuzzy", 200)
    reply = await api.call("target", "PUT", ids(c), {"customer": "Fuzzy", "policy": {"changeControl": control}})
    assert reply.status in (200, 201, 400, 422), reply.text
    if reply.status == 400:
        assert reply.code == "MalformedJson"  # NaN or Infinity drawn: not JSON
    if reply.status == 422:
        assert reply.code == "InvalidTarget" and "changeControl" in reply.body["error"]["message"]


@FUZZ
@given(body=st.fixed_dictionaries({}, optional={
    "requestId": st.sampled_from(["0" * 32, "A" * 32, "x"]) | json_values,
    "action": st.sampled_from(["approve", "postpone", "reject", "APPROVE"]) | json_values,
    "until": st.sampled_from(["2030-01-01", "2020-01-01", "2030-01-01T00:00:00", "2030-01-01T00:00:00+14:00",
                              "9999-12-31"]) | json_values,
    "reason": st.text(max_size=600) | json_values}) | json_values,
    form=st.dictionaries(st.sampled_from(["link", "until", "reason", "x"]), st.text(max_size=80), max_size=4))
async def test_decisions_and_link_forms(api: Api, world: World, body: Any, form: dict[str, str]) -> None:
    c = world.seed_customer("Fuzzed", 200)
    for reply in (
        await api.call("approval", "POST", ids(c), raw=json.dumps(body).encode(), headers=JSON),
        await api.call("approval_link", "POST", raw=urlencode(form).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}),
        await api.call("approval_link", params={"link": form.get("link", "")},
                       headers={"Accept": "application/json"}),
    ):
        assert reply.status < 500, reply.text
        assert 400 <= reply.status and set(reply.body["error"]) == {"code", "message"}
    assert (await api.call("approvals")).body == {"approvals": []}
