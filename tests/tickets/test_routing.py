"""Routing on plain data: which conditions get a ticket, the route of each (overrides over the default, the
customer's company), and TICKET_ROUTING refused with a message naming the bad part (and the setting refused at
start with it)."""

from __future__ import annotations

import json

import pytest

from shared.conditions import NOTICES, RESOLVABLE
from shared.settings import Settings, SettingsError
from shared.tickets.port import TicketRoute
from shared.tickets.routing import RoutingError, parse_routing

T = "8B6F3F7E-2B1A-4C55-9D8E-1F2A3B4C5D6E"
ENV = {"KEY_VAULT_URL": "https://kv.vault.azure.net", "STATE_TABLES_ENDPOINT": "https://st.table.core.windows.net"}


def test_empty_routing_tickets_every_condition_that_clears_and_no_notice() -> None:
    routing = parse_routing("")
    for condition in (*RESOLVABLE, "proofpoint-drift", "portal-drift", "expiring-30d", "expiring-1d"):
        assert routing.route(condition, T) == TicketRoute(), condition
    for notice in NOTICES:
        assert routing.route(notice, T) is None, notice


def test_overrides_exclusions_and_companies() -> None:
    routing = parse_routing(json.dumps({
        "default": {"board": "Security", "priority": 3, "closedStatus": "Completed"},
        "conditions": {"expired": {"priority": "1"}, "sign-in-evidence-unreadable": False,
                       "expiring": {"board": "Renewals"}, "stuck": True},
        "companies": {T: 19}}))
    assert routing.route("expired", T) == TicketRoute("Security", "1", "", "", "Completed", "19")
    assert routing.route("expired", "11111111-2222-3333-4444-555555555555") == TicketRoute(
        "Security", "1", "", "", "Completed", "")
    assert routing.route("sign-in-evidence-unreadable", T) is None
    assert routing.route("expiring-7d", T.lower()) == TicketRoute("Renewals", "3", "", "", "Completed", "19")
    assert routing.route("stuck", T) == routing.route("unreachable", T)
    assert routing.document()["conditions"]["sign-in-evidence-unreadable"] is False


@pytest.mark.parametrize(("text", "named"), [
    ("{", "not JSON"), ("[]", "JSON object"), ('{"routes": {}}', "'routes'"),
    ('{"default": {"queue": "x"}}', "'queue'"), ('{"default": {"board": ["x"]}}', "default.board"),
    ('{"conditions": {"expird": false}}', "'expird'"), ('{"conditions": {"expired": "x"}}', "conditions.expired"),
    ('{"companies": {"contoso": "1"}}', "'contoso'"), (f'{{"companies": {{"{T}": ""}}}}', "companies."),
    ('{"default": {"board": "a\\nb"}}', "default.board"),
])
def test_malformed_routing_names_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(RoutingError) as bad:
        parse_routing(text)
    assert named in str(bad.value)


def test_the_settings_refuse_bad_ticket_settings_at_start() -> None:
    assert Settings.from_env(ENV).ticket_system == ""
    good = Settings.from_env({**ENV, "TICKET_SYSTEM": "Webhook", "TICKET_SECRET_NAME": "psa",
                              "TICKET_ROUTING": '{"conditions": {"stuck": false}}'})
    assert (good.ticket_system, good.ticket_secret_name) == ("webhook", "psa")
    for env, named in (({"TICKET_SYSTEM": "servicenow", "TICKET_SECRET_NAME": "x"}, "TICKET_SYSTEM"),
                       ({"TICKET_SYSTEM": "halopsa"}, "TICKET_SECRET_NAME"),
                       ({"TICKET_ROUTING": '{"conditions": {"nope": false}}'}, "TICKET_ROUTING")):
        with pytest.raises(SettingsError) as bad:
            Settings.from_env({**ENV, **env})
        assert named in str(bad.value)
