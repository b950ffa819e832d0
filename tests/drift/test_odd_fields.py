"""Proofpoint's settings with odd or missing fields (shared/destinations/proofpoint.py reported_use, shared/drift.py):
what is drift, what is no verdict, and that nothing there is ever repeated unless it is a GUID or a date."""

from __future__ import annotations

import pytest

from tests.drift.test_find_drift import APP, MINE, drift_of, settings


@pytest.mark.parametrize("app_id", [APP, APP.upper(), f"  {APP} ", f"{{{APP}}}", f"{{{APP.upper()}}}"])
def test_the_registered_app_however_its_guid_is_written_is_no_drift(app_id: str) -> None:
    used, problems = drift_of(settings(MINE.end.isoformat(), app_id=app_id), MINE)
    assert problems == "" and used == MINE.key_id


@pytest.mark.parametrize("app_id", [None, ...])
def test_no_application_shown_is_no_verdict_on_the_app(app_id: object) -> None:
    raw = settings(MINE.end.isoformat(), app_id=app_id)
    if app_id is ...:
        del raw["application_id"]
    used, problems = drift_of(raw, MINE)
    assert problems == "" and used == MINE.key_id


@pytest.mark.parametrize("app_id", ["", "   ", "PPE", 42, ["x"], {"id": APP}, f"{{{APP}", f"{APP}}}", "8Q~secretvalue"])
def test_an_empty_or_unreadable_application_is_drift_and_never_shown(app_id: object) -> None:
    used, problems = drift_of(settings(MINE.end.isoformat(), app_id=app_id), MINE)
    assert used is None and problems
    assert "8Q~" not in problems and "PPE" not in problems
    # Only a GUID is repeated, whole: never a GUID cut out of something else.
    assert "names no application" in problems or "(not an application id; hidden)" in problems
