"""The row's JSON properties (acks, destinations, replaced and superseded keys, push failures, holds, baselines,
probes, drift, uses) read back as written, empty or not: the empty ones ("{}", "[]", absent) are answered without the
JSON parser (most of a healthy row's), and must read exactly as the parser would read them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.adapters.tables import entity_to_target, target_to_entity
from shared.domain import Ack, Baseline, DestinationConfig, Target

TENANT, APP = "0a0a0a0a-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
KEY, OLD = "0c0c0c0c-0000-4000-8000-000000000003", "0d0d0d0d-0000-4000-8000-000000000004"
AT = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)

FILLED = Target(
    TENANT, APP, "Contoso", destinations=(DestinationConfig("proofpoint", "proofpoint", {"stack": "us1"}),),
).with_state(
    current_key_id=KEY, replaces=(OLD,), acks={"proofpoint": Ack(KEY, AT, ("application-id",), sync_after=AT)},
    push_failures={"proofpoint": 2}, held={"portal": "a human holds it"},
    baselines={"proofpoint": Baseline(OLD, {"application_id": APP})}, superseded=(OLD,), retiring=(OLD,),
    probes={KEY: "probe-request-id"},
).with_observed(drift={"proofpoint": "its application id differs"}, uses={"proofpoint": OLD})

JSON_PROPERTIES = ("Acks", "Destinations", "Replaces", "PushFailures", "Held", "Baselines", "Superseded", "Retiring",
                   "Probes", "Drift", "Uses")


def test_every_filled_json_property_reads_back_as_written() -> None:
    entity = target_to_entity(FILLED)
    assert set(JSON_PROPERTIES) <= set(entity), "each property is written, so each is read back below"
    assert entity_to_target(entity) == FILLED


def test_empty_json_properties_read_back_as_empty() -> None:
    empty = Target(TENANT, APP)
    assert entity_to_target(target_to_entity(empty)) == empty


ARRAYS = ("Destinations", "Replaces", "Superseded", "Retiring")


@pytest.mark.parametrize("spelling", ["absent", "empty JSON", "empty string"])
def test_each_empty_spelling_reads_as_the_parser_reads_it(spelling: str) -> None:
    """An older row, or one written by hand: the property absent, an empty string, or its kind's empty JSON."""
    entity = target_to_entity(FILLED)
    for name in JSON_PROPERTIES:
        if spelling == "absent":
            entity.pop(name)
        else:
            entity[name] = "" if spelling == "empty string" else "[]" if name in ARRAYS else "{}"
    back = entity_to_target(entity)
    s, o = back.state, back.observed
    assert (back.destinations, s.replaces, s.superseded, s.retiring) == ((), (), (), ())
    assert (s.acks, s.push_failures, s.held, s.baselines, s.probes, o.drift, o.uses) == ({},) * 7


def test_a_json_property_with_entries_is_still_parsed() -> None:
    """Not mistaken for an empty one: whitespace inside the brackets, or one entry."""
    entity = target_to_entity(FILLED)
    entity["Drift"], entity["Superseded"] = '{ }', f'["{OLD}"]'
    back = entity_to_target(entity)
    assert back.observed.drift == {} and back.state.superseded == (OLD,)
