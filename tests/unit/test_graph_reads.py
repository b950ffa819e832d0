"""Graph's JSON as the directory adapter reads it, without msgraph-sdk's models."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.adapters.graph import _application_of, _when


def test_an_application_is_read_from_graph_json() -> None:
    app = _application_of({
        "id": "0b1e7a52-0000-4000-8000-000000000001", "appId": "c0ffee00-0000-4000-8000-000000000002",
        "displayName": "Proofpoint Essentials",
        "passwordCredentials": [
            {"keyId": "A1B2C3D4-0000-4000-8000-000000000003", "displayName": "rotator:r1", "hint": "abc",
             "startDateTime": "2024-01-02T03:04:05.1234567Z", "endDateTime": "2026-01-02T03:04:05Z",
             "secretText": None},
            {"keyId": "a1b2c3d4-0000-4000-8000-000000000004", "endDateTime": None},
        ],
    })
    assert app.object_id == "0b1e7a52-0000-4000-8000-000000000001" and app.display_name == "Proofpoint Essentials"
    first, second = app.credentials
    assert first.key_id == "a1b2c3d4-0000-4000-8000-000000000003" and first.hint == "abc"
    assert first.start == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert first.end == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert second.end == datetime.max.replace(tzinfo=UTC) and second.start is None


def test_graph_instants_with_an_offset_or_none() -> None:
    assert _when("2025-05-06T07:08:09+02:00") == datetime(2025, 5, 6, 5, 8, 9, tzinfo=UTC)
    assert _when("2025-05-06T07:08:09.5Z") == datetime(2025, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)
    assert _when(None) is None and _when("") is None
