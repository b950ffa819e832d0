"""The Proofpoint write on plain data: the PUT body, the drift rule and what the check shows."""

from __future__ import annotations

import secrets

from shared.destinations.http import Scrubber
from shared.destinations.proofpoint import HIDDEN, changed_fields, drift, kept, masked, put_body

APP = "d0a70000-0000-4000-8000-0000000000d2"
OTHER = "d0a70000-0000-4000-8000-0000000000d3"
TENANT = "d0570000-0000-4000-8000-0000000000d1"


def test_the_body_is_the_get_with_only_the_key_and_where_it_must_the_app_changed() -> None:
    got = {"primary_domain": "contoso.com", "application_id": APP.upper(), "ad_key": "********", "add_users": "true",
           "sync_frequency": 24, "sync_active_users": True, "tenant_id": TENANT, "last_successful_sync": None}
    body = put_body(got, APP, "new")
    assert list(body) == list(got) and body["ad_key"] == "new" and body["application_id"] == APP.upper()
    assert {k: v for k, v in body.items() if k != "ad_key"} == {k: v for k, v in got.items() if k != "ad_key"}
    assert changed_fields(got, APP) == ("ad_key",)
    for other in (OTHER, "", None):
        assert put_body({**got, "application_id": other}, APP, "new")["application_id"] == APP
        assert changed_fields({**got, "application_id": other}, APP) == ("ad_key", "application_id")
    # What the GET does not show is never added, except the key.
    assert put_body({"add_users": False}, APP, "new") == {"add_users": False, "ad_key": "new"}


def test_drift_compares_types_values_and_presence_but_not_the_key_the_app_or_proofpoints_sync_state() -> None:
    before = {"ad_key": "********", "application_id": APP, "add_users": "true", "sync_frequency": 24,
              "tenant_id": TENANT, "last_successful_sync": "2026-01-01T00:00:00Z", "secret_expiry": None}
    same = {**before, "ad_key": "*****", "application_id": OTHER, "last_successful_sync": "2026-02-01T00:00:00Z",
            "secret_expiry": "2027-01-01T00:00:00Z", "added_by_proofpoint": 1}
    assert drift(before, same) == []
    changed = {**before, "add_users": True, "sync_frequency": 12}
    del changed["tenant_id"]
    assert drift(before, changed) == [
        "add_users changed type (string to boolean)", "sync_frequency changed (24 to 12)", "tenant_id dropped"]
    assert drift({"n": 1}, {"n": 1.5}) == ["n changed (1 to 1.5)"]
    assert drift({"n": 1}, {"n": True}) == ["n changed type (number to boolean)"]
    assert drift({"n": 1}, {"n": None}) == ["n changed type (number to null)"]
    assert drift({"api_token": "t-1"}, {"api_token": "t-2"}) == ["api_token changed (a hidden value to a hidden value)"]


def test_what_the_check_shows_hides_every_secret_like_value_and_the_password() -> None:
    scrub = Scrubber("plainpass")
    entra_like = "Hst" + "8Q~" + secrets.token_urlsafe(27)[:31]  # made at run time: no secret-shaped literal in git
    shown = masked(
        {"ad_key": "********", "api_token": "abc", "credentials": {"value": "plain"}, "note": "uses plainpass here",
         "opaque": entra_like, "tenant_id": TENANT, "add_users": "true",
         "sync_frequency": 24, "blank_key": "", "nested": {"secret": 5, "list": ["plainpass"]}},
        scrub)
    assert shown == {"ad_key": HIDDEN, "api_token": HIDDEN, "credentials": HIDDEN, "note": "uses *** here",
                     "opaque": HIDDEN, "tenant_id": TENANT, "add_users": "true", "sync_frequency": 24,
                     "blank_key": "", "nested": {"secret": HIDDEN, "list": ["***"]}}


def test_a_stored_baseline_keeps_no_secret_and_still_finds_drift() -> None:
    scrub = Scrubber("plainpass")
    got = {"ad_key": "********", "application_id": APP, "api_token": "abc", "tenant_id": TENANT,
           "note": "uses plainpass here", "seats": 40, "last_successful_sync": "2026-01-01T00:00:00Z"}
    baseline = kept(got, scrub)
    assert baseline == {"api_token": "(hidden string)", "tenant_id": TENANT, "note": "(hidden string)", "seats": 40}
    assert "abc" not in repr(baseline) and "plainpass" not in repr(baseline)
    # A secret-like value is compared by type only; everything else by value.
    assert drift(baseline, {**got, "api_token": "xyz"}) == []
    assert drift(baseline, {**got, "api_token": 5}) == ["api_token changed type (string to number)"]
    assert drift(baseline, {k: v for k, v in got.items() if k != "tenant_id"}) == ["tenant_id dropped"]
    assert drift(baseline, {**got, "seats": 41}) == ["seats changed (40 to 41)"]
