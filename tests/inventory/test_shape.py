"""The inventory's pure core: Graph objects to credential rows, queries, first-party and SAML marks."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime

import pytest

from shared.adapters.inventory_tables import ascii_json
from shared.inventory import (
    MICROSOFT_TENANT,
    CredentialKind,
    DirectoryObject,
    InventoryCredential,
    InventoryQuery,
    ObjectKind,
    credentials_of,
    new_object,
    positional,
    thumbprint_of,
)

TENANT = "11111111-1111-4111-8111-111111111111"
NOW = datetime(2026, 12, 6, tzinfo=UTC)
THUMB = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"
THUMB_B64 = base64.b64encode(bytes.fromhex(THUMB)).decode()


def app(**extra: object) -> DirectoryObject:
    base: dict = dict(object_kind=ObjectKind.APPLICATION, object_id="o-1", app_id="a-1", display_name="Backup",
                      password_credentials=({"keyId": "k-1", "hint": "abc", "displayName": "nightly",
                                             "startDateTime": "2026-01-01T00:00:00Z",
                                             "endDateTime": "2027-01-01T00:00:00.1234567Z", "secretText": None},),
                      owners=("Ann",))
    base.update(extra)
    return DirectoryObject(**base)


def test_a_password_becomes_one_row_with_its_times_and_no_value() -> None:
    [row] = credentials_of(app(), TENANT, "Contoso")
    assert (row.credential_kind, row.key_id, row.hint, row.credential_name) == (CredentialKind.PASSWORD, "k-1", "abc",
                                                                                "nightly")
    assert row.end == datetime(2027, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert row.owners == ("Ann",) and not row.managed and not row.first_party and row.usage == ""
    assert row.days_left(NOW) == 26 and not row.expired(NOW)


def test_managed_when_the_app_is_a_registered_target() -> None:
    assert credentials_of(app(), TENANT, "Contoso", {"a-1"})[0].managed
    assert not credentials_of(app(), TENANT, "Contoso", {"a-2"})[0].managed


def test_saml_signing_certificate_is_marked_by_the_preferred_thumbprint() -> None:
    sp = DirectoryObject(
        object_kind=ObjectKind.SERVICE_PRINCIPAL, object_id="s-1", app_id="a-9", display_name="Salesforce SSO",
        key_credentials=(
            {"keyId": "k-s", "usage": "Sign", "customKeyIdentifier": THUMB_B64, "endDateTime": "2027-03-01T00:00:00Z"},
            {"keyId": "k-v", "usage": "Verify", "customKeyIdentifier": THUMB_B64,
             "endDateTime": "2027-03-01T00:00:00Z"},
            {"keyId": "k-o", "usage": "Sign", "customKeyIdentifier": base64.b64encode(b"other").decode(),
             "endDateTime": "2026-01-01T00:00:00Z"},
        ),
        preferred_token_signing_key_thumbprint=THUMB.lower())
    rows = {r.key_id: r for r in credentials_of(sp, TENANT, "Contoso")}
    assert rows["k-s"].saml and rows["k-v"].saml and not rows["k-o"].saml
    assert rows["k-s"].usage == "Sign" and rows["k-v"].usage == "Verify"
    assert rows["k-o"].expired(NOW) and rows["k-o"].days_left(NOW) is not None and rows["k-o"].days_left(NOW) < 0  # type: ignore[operator]
    assert rows["k-s"].hint == THUMB


def test_first_party_for_microsofts_service_principals_and_managed_identities() -> None:
    sp = DirectoryObject(object_kind=ObjectKind.SERVICE_PRINCIPAL, object_id="s", app_id="a", display_name="Graph",
                         password_credentials=({"keyId": "k"},), app_owner_organization_id=MICROSOFT_TENANT.upper())
    assert credentials_of(sp, TENANT, "c")[0].first_party
    other = DirectoryObject(object_kind=ObjectKind.SERVICE_PRINCIPAL, object_id="s", app_id="a", display_name="X",
                            password_credentials=({"keyId": "k"},), app_owner_organization_id=TENANT)
    assert not credentials_of(other, TENANT, "c")[0].first_party
    identity = DirectoryObject(object_kind=ObjectKind.SERVICE_PRINCIPAL, object_id="s", app_id="a", display_name="mi",
                               key_credentials=({"keyId": "k"},), app_owner_organization_id="",
                               service_principal_type="ManagedIdentity")
    assert credentials_of(identity, TENANT, "c")[0].first_party  # Azure rotates a managed identity's certificate


def test_a_credential_without_end_never_expires_and_never_matches_ends_before() -> None:
    [row] = credentials_of(app(password_credentials=({"keyId": "k"},)), TENANT, "c")
    assert row.end is None and row.days_left(NOW) is None and not row.expired(NOW)
    assert not InventoryQuery(ends_before=NOW).matches(row)
    assert InventoryQuery().matches(row)


def test_query_filters_each_field() -> None:
    [row] = credentials_of(app(), TENANT, "c", {"a-1"})
    assert InventoryQuery(tenant_id=TENANT, credential_kind=CredentialKind.PASSWORD, managed=True,
                          object_kind=ObjectKind.APPLICATION, first_party=False,
                          ends_before=datetime(2027, 2, 1, tzinfo=UTC)).matches(row)
    for miss in (InventoryQuery(tenant_id="x"), InventoryQuery(credential_kind=CredentialKind.CERTIFICATE),
                 InventoryQuery(managed=False), InventoryQuery(object_kind=ObjectKind.SERVICE_PRINCIPAL),
                 InventoryQuery(first_party=True), InventoryQuery(ends_before=NOW)):
        assert not miss.matches(row), miss


def test_thumbprint_of_refuses_what_is_not_base64() -> None:
    assert thumbprint_of(THUMB_B64) == THUMB
    assert thumbprint_of("not base64!") == "" and thumbprint_of(None) == ""



def test_an_object_without_credentials_yields_no_row_and_empties_what_the_store_held() -> None:
    # The full read's fast path (most service principals hold nothing) must not change what a delta round does
    # with the same object: empty collections clear its stored rows, absent ones keep them.
    empty = app(password_credentials=(), key_credentials=())
    assert credentials_of(empty, TENANT, "Contoso") == []
    assert credentials_of(app(password_credentials=None, key_credentials=None), TENANT, "Contoso") == []
    held = credentials_of(app(), TENANT, "Contoso")
    assert credentials_of(empty, TENANT, "Contoso", stored=held) == []
    [kept] = credentials_of(app(password_credentials=None, key_credentials=None, display_name=None), TENANT,
                            "Contoso", stored=held)
    assert (kept.key_id, kept.display_name) == ("k-1", "Backup")


@pytest.mark.parametrize("value", [
    ["ann@contoso.com", "Backup Service"], ["Zoë Müller", "日本語のアプリ", "Backup 😀"], "a\u0001b\n\"/\\\x7f", [],
    ["app", "Name", 3, {"k-1": "p", "k-2": "cs"}, ["Ünïcode owner"]],
])
def test_the_stores_json_is_ascii_and_says_what_the_standard_encoder_says(value: object) -> None:
    text = ascii_json(value)
    assert text.isascii() and json.loads(text) == json.loads(json.dumps(value))
    assert text == json.dumps(value, separators=(",", ":")) or "\x7f" in str(value)  # the same text, bar DEL
    assert "\n" not in text and ", " not in text and ": " not in text  # compact, one line


def test_the_hot_paths_constructor_builds_the_same_frozen_objects() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values = (TENANT, "Contoso", ObjectKind.APPLICATION, "o-1", "a-1", "App", ("ann@contoso.com",),
              CredentialKind.PASSWORD, "", "k-1", "abc", "s", start, None, True, False, True)
    quick, usual = positional(InventoryCredential)(*values), InventoryCredential(*values)
    assert quick == usual and hash(quick) == hash(usual) and repr(quick) == repr(usual)
    assert positional(InventoryCredential)(*values[:14]) == InventoryCredential(*values[:14])  # defaults after
    assert new_object(ObjectKind.APPLICATION, "o-1", "a-1") == DirectoryObject(ObjectKind.APPLICATION, "o-1", "a-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.owners = ()  # type: ignore[misc]
    for wrong in (values[:13], (*values, False)):
        with pytest.raises(TypeError):
            positional(InventoryCredential)(*wrong)


def test_an_expanded_owners_page_gives_each_object_its_owners_sorted_or_none_when_cut() -> None:
    from shared.adapters.inventory import EXPANDED_OWNERS, expanded_owners

    user = {"@odata.type": "#microsoft.graph.user", "id": "u1", "displayName": "Ann Lee",
            "userPrincipalName": "ann@contoso.com"}
    pipeline = {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "sp1", "displayName": "Deployment pipeline",
                "userPrincipalName": None}
    doc = {"value": [
        {"id": "none", "owners": []}, {"id": "null", "owners": None}, {"id": "absent"},
        {"id": "one", "owners": [user]}, {"id": "sp", "owners": [pipeline]},
        {"id": "nameless", "owners": [{"id": ""}]}, {"id": "id-only", "owners": [{"id": "o9"}]},
        {"id": "two", "owners": [{"userPrincipalName": "Zed@contoso.com"}, user, user, {"displayName": ""}, "junk"]},
        {"id": "cut", "owners": [{"id": f"o{i}"} for i in range(EXPANDED_OWNERS)]},
        {"id": "under", "owners": [{"id": f"o{i}"} for i in range(EXPANDED_OWNERS - 1)]},
        {"owners": [user]}, "junk"]}
    found = expanded_owners(doc)
    assert found == {
        "none": (), "null": (), "absent": (), "one": ("ann@contoso.com",), "sp": ("Deployment pipeline",),
        "nameless": (), "id-only": ("o9",), "two": ("ann@contoso.com", "Zed@contoso.com"), "cut": None,
        "under": tuple(sorted(f"o{i}" for i in range(EXPANDED_OWNERS - 1)))}
