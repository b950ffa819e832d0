"""Staged warnings' pure core: thresholds validated, the tightest crossed threshold holds, renewal and removal stop
it, exclusions and snoozes (validated: a snooze without an end is refused) silence new warnings only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.expiry_warnings import (
    DEFAULT_THRESHOLDS,
    InvalidRule,
    Scope,
    alert_of,
    condition_name,
    covering,
    holding_by_app,
    judge,
    new_exclusion,
    parse_thresholds,
    stage,
    threshold_of,
)
from shared.inventory import CredentialKind, InventoryCredential, ObjectKind
from tests.material import client_secret

T = "11111111-1111-4111-8111-111111111111"
OTHER_T = "22222222-2222-4222-8222-222222222222"
APP = "33333333-3333-4333-8333-333333333333"
KEY, KEY2 = "44444444-4444-4444-8444-444444444444", "55555555-5555-4555-8555-555555555555"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def cred(days: float | None, *, key: str = KEY, app: str = APP, kind: CredentialKind = CredentialKind.PASSWORD,
         managed: bool = False, object_kind: ObjectKind = ObjectKind.APPLICATION, tenant: str = T,
         usage: str = "") -> InventoryCredential:
    return InventoryCredential(
        tenant_id=tenant, customer="Contoso", object_kind=object_kind, object_id=f"obj-{app}", app_id=app,
        display_name="Backup connector", owners=(), credential_kind=kind, usage=usage, key_id=key, hint="Xy1",
        credential_name="nightly", start=NOW - timedelta(days=300),
        end=None if days is None else NOW + timedelta(days=days), managed=managed)


@pytest.mark.parametrize(("value", "expected"), [
    ([60, 30, 14, 7, 1], (60, 30, 14, 7, 1)), ([1, 90], (90, 1)), ([730], (730,))])
def test_thresholds_are_kept_loosest_first(value: list[int], expected: tuple[int, ...]) -> None:
    assert parse_thresholds(value) == expected


@pytest.mark.parametrize("value", [[], None, "60,30", [0], [731], [-1], [30, 30], [True], [1.5], ["7"],
                                   list(range(1, 12))])
def test_bad_thresholds_are_refused(value: object) -> None:
    with pytest.raises(InvalidRule):
        parse_thresholds(value)


@pytest.mark.parametrize(("days_left", "expected"), [(61, None), (60, 60), (31, 60), (30, 30), (8, 14), (1, 1),
                                                     (0, 1), (-5, 1), (None, None)])
def test_the_tightest_crossed_threshold(days_left: int | None, expected: int | None) -> None:
    assert stage(days_left, DEFAULT_THRESHOLDS) == expected


def test_each_credential_holds_only_its_tightest_threshold_and_warns_once_per_threshold() -> None:
    far, mid, near = cred(100, key="k-far", app="app-3"), cred(20.5, key="k-mid"), cred(3.2, key="k-near", app="app-2")
    verdicts = {v.credential.key_id: v for v in judge([far, mid, near], DEFAULT_THRESHOLDS, [], NOW)}
    assert verdicts["k-far"].holding is None and not verdicts["k-far"].warns
    assert verdicts["k-mid"].holding == ("expiring-30d", "application:k-mid") and verdicts["k-mid"].warns
    assert verdicts["k-near"].holding == ("expiring-7d", "application:k-near")
    assert holding_by_app(verdicts.values()) == {APP: frozenset({("expiring-30d", "application:k-mid")}),
                                                 "app-2": frozenset({("expiring-7d", "application:k-near")})}
    assert threshold_of(condition_name(14)) == 14 and threshold_of("stuck") is None


def test_a_customer_s_own_thresholds() -> None:
    [v] = judge([cred(40)], (45, 10), [], NOW)
    assert v.holding == ("expiring-45d", f"application:{KEY}")
    [v] = judge([cred(40)], (10,), [], NOW)
    assert v.holding is None


def test_a_renewal_on_the_same_object_stops_the_warning() -> None:
    old, new = cred(5), cred(700, key=KEY2)
    verdicts = {v.credential.key_id: v for v in judge([old, new], DEFAULT_THRESHOLDS, [], NOW)}
    assert verdicts[KEY].renewed and verdicts[KEY].holding is None and not verdicts[KEY].warns
    # A newer credential that itself ends within the threshold, of another kind, or on another object, is no renewal.
    for other in (cred(6, key=KEY2), cred(700, key=KEY2, kind=CredentialKind.CERTIFICATE, usage="Verify"),
                  cred(700, key=KEY2, app="app-x"), cred(700, key=KEY2, object_kind=ObjectKind.SERVICE_PRINCIPAL)):
        [v] = [v for v in judge([old, other], DEFAULT_THRESHOLDS, [], NOW) if v.credential.key_id == KEY]
        assert not v.renewed and v.warns, other


def test_an_expired_credential_warns_no_more_but_keeps_a_warning_it_had_open() -> None:
    [v] = judge([cred(-3)], DEFAULT_THRESHOLDS, [], NOW)
    assert v.holding == ("expiring-1d", f"application:{KEY}") and not v.warns


def test_a_credential_without_an_end_never_warns() -> None:
    [v] = judge([cred(None)], DEFAULT_THRESHOLDS, [], NOW)
    assert v.holding is None and not v.warns


def test_a_managed_credential_warns_only_once_the_rotator_should_have_renewed_it() -> None:
    managed = cred(25, managed=True)
    [v] = judge([managed], DEFAULT_THRESHOLDS, [], NOW, {APP: 30})
    assert v.holding is None  # 30 and 60 are the rotator's own lead time
    [v] = judge([cred(12, managed=True)], DEFAULT_THRESHOLDS, [], NOW, {APP: 30})
    assert v.holding == ("expiring-14d", f"application:{KEY}") and v.warns


def test_one_certificate_listed_as_several_credentials_warns_once() -> None:
    from dataclasses import replace

    thumb = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
    sign = replace(cred(20, key="k-sign", kind=CredentialKind.CERTIFICATE, usage="Sign"), hint=thumb, saml=True)
    verify = replace(sign, key_id="k-verify", usage="Verify")
    private = replace(sign, key_id="k-pass", credential_kind=CredentialKind.PASSWORD, usage="")
    other = replace(sign, key_id="k-other", hint="B" * 40)  # another certificate on the same object
    warned = sorted(v.credential.key_id for v in judge([private, verify, sign, other], DEFAULT_THRESHOLDS, [], NOW)
                    if v.warns)
    assert warned == ["k-other", "k-sign"]
    # An app's certificate (Verify only) and client secrets with the same hint and end are not companions.
    secrets_ = [replace(cred(20, key=f"k-{i}"), hint="Xy1") for i in range(2)]
    assert sum(v.warns for v in judge(secrets_, DEFAULT_THRESHOLDS, [], NOW)) == 2
    [v] = judge([verify], DEFAULT_THRESHOLDS, [], NOW)
    assert v.warns


def test_a_microsoft_first_party_credential_is_never_warned_of() -> None:
    from dataclasses import replace

    [v] = judge([replace(cred(3, object_kind=ObjectKind.SERVICE_PRINCIPAL), first_party=True)], DEFAULT_THRESHOLDS,
                [], NOW)
    assert v.holding is None and not v.warns


def exclusion(scope: str, **kw: object) -> object:
    base: dict = dict(app_id="", key_id="", snooze=False, until=None, by="ann@msp.example", why="vendor renews it",
                      now=NOW)
    base.update(kw)
    return new_exclusion("ex-1", T, scope, **base)


def test_exclusions_cover_a_credential_an_app_or_a_customer_and_silence_new_warnings_only() -> None:
    near = cred(5)
    for ex in (exclusion("credential", key_id=KEY), exclusion("app", app_id=APP), exclusion("customer")):
        [v] = judge([near], DEFAULT_THRESHOLDS, [ex], NOW)  # type: ignore[list-item]
        assert v.exclusion is ex and not v.warns
        assert v.holding is None  # excluded for good: a warning already open is resolved, not left open
    other = exclusion("credential", key_id=KEY2)
    [v] = judge([near], DEFAULT_THRESHOLDS, [other], NOW)  # type: ignore[list-item]
    assert v.exclusion is None and v.warns
    [v] = judge([cred(5, tenant=OTHER_T)], DEFAULT_THRESHOLDS, [exclusion("customer")], NOW)  # type: ignore[list-item]
    assert v.exclusion is None


def test_a_snooze_silences_until_its_end_then_the_warning_is_due() -> None:
    snooze = new_exclusion("s", T, "app", app_id=APP, snooze=True, until=NOW + timedelta(days=2), by="ann",
                           why="change window next week", now=NOW)
    assert snooze.kind == "snooze" and snooze.scope is Scope.APP
    assert covering(cred(5), [snooze], NOW) is snooze
    [v] = judge([cred(5)], DEFAULT_THRESHOLDS, [snooze], NOW)
    assert not v.warns and v.holding is not None  # snoozed: a warning already open stays open, without a note
    later = NOW + timedelta(days=2, seconds=1)
    [v] = judge([cred(3)], DEFAULT_THRESHOLDS, [snooze], later)
    assert v.exclusion is None and v.warns


@pytest.mark.parametrize(("kw", "code"), [
    (dict(scope="app", snooze=True, until=None, app_id=APP), "SnoozeNeedsEnd"),
    (dict(scope="team"), "InvalidRequest"),
    (dict(scope="credential", key_id="not-a-guid"), "InvalidRequest"),
    (dict(scope="app", app_id=""), "InvalidRequest"),
    (dict(scope="customer", app_id=APP), "InvalidRequest"),
    (dict(scope="customer", why="  "), "InvalidRequest"),
    (dict(scope="customer", why="x" * 501), "InvalidRequest"),
    (dict(scope="customer", by=""), "InvalidRequest"),
    (dict(scope="customer", snooze=True, until=NOW - timedelta(days=1)), "InvalidRequest"),
    (dict(scope="customer", snooze=True, until=NOW + timedelta(days=400)), "InvalidRequest"),
    (dict(scope="customer", snooze=True, until=datetime(2027, 1, 1)), "InvalidRequest"),
    (dict(scope="customer", why=f"old secret {client_secret()} leaked"), "InvalidRequest"),  # every door: CLI too
])
def test_bad_exclusions_are_refused_with_what_to_send(kw: dict, code: str) -> None:
    base: dict = dict(app_id="", key_id="", snooze=False, until=None, by="ann", why="because", now=NOW)
    base.update(kw)
    scope = base.pop("scope")
    with pytest.raises(InvalidRule) as refused:
        new_exclusion("x", T, scope, **base)
    assert refused.value.code == code and refused.value.message


def test_the_alert_names_the_credential_and_its_end_and_never_a_value() -> None:
    [v] = judge([cred(13.5, kind=CredentialKind.CERTIFICATE, usage="Verify")], DEFAULT_THRESHOLDS, [], NOW)
    alert = alert_of(v)
    assert alert.condition == "expiring-14d" and alert.app_id == APP and alert.customer == "Contoso"
    assert "certificate Xy1" in alert.message and "expires in 13 days" in alert.message
    assert alert.details["destination"] == f"application:{KEY}" and alert.details["ends"] == "2026-12-20"
    # whom to ask: the app's owners, or that it has none
    assert alert.message.endswith("owners: none in the tenant") and alert.details["owners"] == ""
    [owned] = judge([replace(cred(13.5), owners=("ann@contoso.com", "Deploy SP"))], DEFAULT_THRESHOLDS, [], NOW)
    assert alert_of(owned).message.endswith("owners: ann@contoso.com, Deploy SP")
    assert alert_of(owned).details["owners"] == "ann@contoso.com, Deploy SP"


def test_excluding_one_half_of_a_certificate_excludes_the_whole_certificate() -> None:
    """A SAML signing certificate is listed as three credentials (Sign, Verify, its private key's password); an
    engineer who excludes or snoozes any of its key ids (say the Verify row of the export) silences that certificate:
    the warning, told by the Sign row, and every listed row show the exclusion. Another certificate still warns."""
    from shared.credential_state import lines_of

    thumb = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
    sign = replace(cred(5, key=KEY, kind=CredentialKind.CERTIFICATE, usage="Sign"), hint=thumb, saml=True)
    verify = replace(sign, key_id=KEY2, usage="Verify")
    private = replace(sign, key_id="66666666-6666-4666-8666-666666666666", credential_kind=CredentialKind.PASSWORD,
                      usage="")
    other = replace(sign, key_id="77777777-7777-4777-8777-777777777777", hint="B" * 40)
    everything = [sign, verify, private, other]
    for half in (verify, private, sign):
        ex = exclusion("credential", key_id=half.key_id)
        verdicts = {v.credential.key_id: v for v in judge(everything, DEFAULT_THRESHOLDS, [ex], NOW)}  # type: ignore[list-item]
        assert [k for k, v in verdicts.items() if v.warns] == [other.key_id], half.usage
        assert verdicts[sign.key_id].exclusion is ex and verdicts[sign.key_id].holding is None
        shown = {x.credential.key_id: x.exclusion for x in lines_of(everything, [ex], DEFAULT_THRESHOLDS, NOW)}  # type: ignore[list-item]
        assert shown == {sign.key_id: ex, verify.key_id: ex, private.key_id: ex, other.key_id: None}
    # Client secrets sharing a hint are not one certificate: excluding one leaves the other warning.
    a, b = replace(cred(5, key=KEY), hint="Xy1"), replace(cred(5, key=KEY2), hint="Xy1")
    assert [v.credential.key_id for v in judge([a, b], DEFAULT_THRESHOLDS, [exclusion("credential", key_id=KEY)],  # type: ignore[list-item]
                                               NOW) if v.warns] == [KEY2]
