"""The credential inventory (issue 25): every secret and certificate of every consented tenant, detect only.

Plain data and pure decisions; nothing here does I/O. The adapter (shared/adapters/inventory.py) reads Graph's
applications and servicePrincipals (delta queries), the store (shared/adapters/tables.py) keeps one row per
credential, and the daily pass (shared/inventory_pass.py) joins them. Nothing is ever written to these apps:
rotation stays for the registered targets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

# Microsoft's own tenant: a service principal whose appOwnerOrganizationId is this belongs to a Microsoft
# first-party application (Microsoft Graph, Office 365 Exchange Online, ...). Its credentials are Microsoft's to
# manage; the inventory shows them, marked, so an engineer does not chase them.
# (MicrosoftDocs/entra-docs, "Verify first-party Microsoft applications in sign-in reports";
# Graph servicePrincipal resource, appOwnerOrganizationId.)
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"


class ObjectKind(str, Enum):
    """Which directory object a credential sits on (Graph's resource names, as they appear in @odata.type)."""

    APPLICATION = "application"
    SERVICE_PRINCIPAL = "servicePrincipal"


class CredentialKind(str, Enum):
    """passwordCredentials (client secrets) or keyCredentials (certificates)."""

    PASSWORD = "password"  # noqa: S105 - the kind's name, not a password
    CERTIFICATE = "certificate"


@dataclass(frozen=True)
class InventoryCredential:
    """One credential (secret or certificate) of an app registration or service principal in a customer tenant.

    Never holds a secret: Graph lists credentials without their values (`secretText` is null on reads) and the
    certificate's public `key` is not asked for. `hint`: a secret's first characters as Graph gives them, a
    certificate's SHA-1 thumbprint (upper-case hex, from customKeyIdentifier). `usage`: the keyCredential's "Sign"
    or "Verify" ("" for a password). `saml`: part of a service principal's SAML token-signing certificate (its
    thumbprint is the principal's preferredTokenSigningKeyThumbprint). `managed`: the app is a registered target
    of the rotator. `first_party`: credentials Microsoft keeps, not the customer: a Microsoft first-party service
    principal's, or a managed identity's (Azure rotates its certificate by itself).
    """

    tenant_id: str
    customer: str
    object_kind: ObjectKind
    object_id: str
    app_id: str
    display_name: str  # the application's or service principal's name
    owners: tuple[str, ...]
    credential_kind: CredentialKind
    usage: str  # "Sign" | "Verify" | ""
    key_id: str
    hint: str
    credential_name: str  # the credential's own displayName
    start: datetime | None
    end: datetime | None  # Graph allows a credential without endDateTime; it never expires
    managed: bool = False
    first_party: bool = False
    saml: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What names one credential across the fleet."""
        return (self.tenant_id, self.object_kind.value, self.object_id, self.key_id)

    def days_left(self, now: datetime) -> int | None:
        """Whole days until the credential ends (negative once it ended); None when it has no end."""
        if self.end is None:
            return None
        return (self.end - now).days

    def expired(self, now: datetime) -> bool:
        return self.end is not None and self.end <= now


@dataclass(frozen=True)
class InventoryQuery:
    """Which inventory credentials to list; every field left at its default matches everything."""

    tenant_id: str = ""
    credential_kind: CredentialKind | None = None
    object_kind: ObjectKind | None = None
    managed: bool | None = None
    first_party: bool | None = None
    ends_before: datetime | None = None  # credentials without an end never match

    def matches(self, credential: InventoryCredential) -> bool:
        if self.tenant_id and credential.tenant_id != self.tenant_id:
            return False
        if self.credential_kind is not None and credential.credential_kind is not self.credential_kind:
            return False
        if self.object_kind is not None and credential.object_kind is not self.object_kind:
            return False
        if self.managed is not None and credential.managed != self.managed:
            return False
        if self.first_party is not None and credential.first_party != self.first_party:
            return False
        if self.ends_before is not None and (credential.end is None or credential.end >= self.ends_before):
            return False
        return True


@dataclass(frozen=True)
class DirectoryObject:
    """An application or service principal as a delta page gives it: only the properties the inventory selects.

    A delta round represents an updated object "by its id with at least the properties that have been updated"
    (delta-query-overview.md): a property left out of the page is None here, and keeps what the store holds.
    """

    object_kind: ObjectKind
    object_id: str
    app_id: str | None = None
    display_name: str | None = None
    password_credentials: tuple[Mapping[str, Any], ...] | None = None
    key_credentials: tuple[Mapping[str, Any], ...] | None = None
    app_owner_organization_id: str | None = None  # service principals only
    service_principal_type: str | None = None  # service principals only: "Application", "ManagedIdentity", ...
    preferred_token_signing_key_thumbprint: str | None = None  # service principals only (SAML)
    owners: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Removed:
    """A delta page's `@removed` entry: the object left the tenant (deleted, or no longer visible)."""

    object_kind: ObjectKind
    object_id: str


@dataclass(frozen=True)
class InventoryPage:
    """One page of a read: its objects and removals, and on the last page the delta link for the next pass."""

    objects: tuple[DirectoryObject, ...] = ()
    removed: tuple[Removed, ...] = ()
    delta_link: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """What the store knows of an object's rows without reading them (its index): enough to complete a partial delta
    object whose other collection's rows stay as they are."""

    app_id: str
    display_name: str
    customer: str
    first_party: bool
    managed: bool
    passwords: frozenset[str]  # key ids of its passwordCredentials rows
    certificates: frozenset[str]  # key ids of its keyCredentials rows
    saml: frozenset[str]  # key ids of its rows marked SAML
    owners: tuple[str, ...] = ()  # its rows' owners (a delta round never brings owners: they are kept)


@dataclass(frozen=True)
class RoundEnd:
    """A round's last write: each object's credentials as they now are (an empty list removes its rows), the key ids
    the caller knows each object holds (objects not named are looked up), the delta link to keep with them, and the
    owners a full listing gave (kept for objects without rows)."""

    objects: Mapping[str, Sequence[InventoryCredential]]
    stored: Mapping[str, Sequence[str]] | None = None
    delta_link: str | None = None
    # A full listing of the kind's owners (a full read's, or the weekly refresh's): object id -> owners, for every
    # object it gave them of (not those it may have cut). The store keeps those of objects without rows in place of
    # the last listing's, so a delta round in which such an object gains its first credential does not read them.
    listed: Mapping[str, tuple[str, ...]] | None = None


@dataclass
class TenantPass:
    """What one inventory pass of one tenant and object kind did."""

    tenant_id: str
    object_kind: ObjectKind
    full: bool  # a full read (first pass, or the delta link was gone/expired)
    objects: int = 0
    removed: int = 0
    credentials: int = 0
    restarted: bool = False  # a stale delta token forced the full read
    pages: int = 0


_T = TypeVar("_T")


def positional(cls: type[_T]) -> Callable[..., _T]:
    """A frozen dataclass's constructor by position for the first pass's hot path (every field up to the last
    given, the rest their defaults): the same object as `cls(*values)` (equal, hashed alike), built without the
    frozen __init__, which sets each field through object.__setattr__: 2.5 us for an InventoryCredential, 0.6 us
    so, for the 700 objects and rows a tenant's first pass builds.

    The function is generated (as dataclasses generates __init__): one plain store into the new object's __dict__
    per field, named parameters with the fields' defaults. A generic loop or `__dict__.update(zip(...))` cost 1.3
    to 1.7 us (docs/benchmarks.md, sixth round)."""
    found = fields(cls)  # type: ignore[arg-type]
    if any(not f.name.isidentifier() or f.default_factory is not MISSING for f in found):
        raise TypeError(f"{cls.__name__}: positional takes plain fields only")
    defaults = tuple(f.default for f in found if f.default is not MISSING)
    if any(f.default is MISSING for f in found[len(found) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    names = [f.name for f in found]
    source = (f"def make({', '.join(names)}):\n    made = new(cls)\n    values = made.__dict__\n"
              + "".join(f"    values[{name!r}] = {name}\n" for name in names) + "    return made\n")
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(source, namespace)  # noqa: S102 - source made here from the dataclass's own field names
    make: Callable[..., _T] = namespace["make"]
    make.__defaults__ = defaults or None  # type: ignore[attr-defined]
    make.__qualname__ = make.__name__ = f"new_{cls.__name__}"
    return make


new_object = positional(DirectoryObject)  # a page's objects (shared/adapters/inventory.py)
_new_credential = positional(InventoryCredential)


def credentials_of(
    obj: DirectoryObject, tenant_id: str, customer: str, managed_app_ids: Collection[str] = (),
    stored: Sequence[InventoryCredential] = (), owners: tuple[str, ...] | None = None,
) -> list[InventoryCredential]:
    """Every credential of one directory object as inventory rows (pure). `stored`: the object's rows from the
    store, which fill in what a partial (delta) object left out. `owners`: the object's owners when they are known
    apart from it (a full read's owner listing), else the object's own, else its stored rows'."""
    if not stored and not obj.password_credentials and not obj.key_credentials:
        return []  # most service principals hold no credential: nothing to build (the full read's hot path)
    base = stored[0] if stored else None
    app_id = obj.app_id if obj.app_id is not None else (base.app_id if base else "")
    display_name = obj.display_name if obj.display_name is not None else (base.display_name if base else "")
    if owners is None:
        owners = obj.owners if obj.owners is not None else (base.owners if base else ())
    given = first_party_of(obj)
    first_party = given if given is not None else (base.first_party if base else False)
    managed = app_id in managed_app_ids
    # What the rows kept from the store take on (only a partial object keeps any).
    common = dict(tenant_id=tenant_id, customer=customer, object_kind=obj.object_kind, object_id=obj.object_id,
                  app_id=app_id, display_name=display_name, owners=owners, managed=managed,
                  first_party=first_party) if stored else {}
    found: list[InventoryCredential] = []
    was_saml = {row.key_id for row in stored if row.saml} if stored else set()
    signing = (obj.preferred_token_signing_key_thumbprint or "").upper()

    def is_saml(thumbprint: str, key_id: str) -> bool:
        if not thumbprint:
            return False
        if obj.preferred_token_signing_key_thumbprint is not None:
            return thumbprint == signing
        return key_id in was_saml

    # Rows built with positional arguments (the full read builds about 260 a tenant: keyword expansion of `common`
    # for each cost a fifth of the row path).
    kind, object_id, new = obj.object_kind, obj.object_id, _new_credential
    if obj.password_credentials is None:
        found += [replace(row, **common) for row in stored  # type: ignore[arg-type]
                  if row.credential_kind is CredentialKind.PASSWORD]
    else:
        for raw in obj.password_credentials:
            get = raw.get
            # A SAML signing certificate's private-key password carries the certificate's thumbprint
            # (serviceprincipal-addtokensigningcertificate.md); a client secret carries a hint instead.
            custom = get("customKeyIdentifier")  # null on a client secret: no call for it
            thumbprint = thumbprint_of(custom) if custom else ""
            key_id = str(get("keyId") or "")
            found.append(new(
                tenant_id, customer, kind, object_id, app_id, display_name, owners, CredentialKind.PASSWORD, "",
                key_id, str(get("hint") or thumbprint), str(get("displayName") or ""),
                parse_time(get("startDateTime")), parse_time(get("endDateTime")), managed, first_party,
                is_saml(thumbprint, key_id) if thumbprint else False))
    if obj.key_credentials is None:
        rows = [row for row in stored if row.credential_kind is CredentialKind.CERTIFICATE]
        if obj.preferred_token_signing_key_thumbprint is not None:
            # The signing certificate moved to one the store already holds: its thumbprint is kept in the hint.
            rows = [replace(row, saml=bool(signing) and row.hint == signing) for row in rows]
        found += [replace(row, **common) for row in rows]  # type: ignore[arg-type]
    else:
        for raw in obj.key_credentials:
            get = raw.get
            thumbprint = thumbprint_of(get("customKeyIdentifier"))
            key_id = str(get("keyId") or "")
            found.append(new(
                tenant_id, customer, kind, object_id, app_id, display_name, owners, CredentialKind.CERTIFICATE,
                str(get("usage") or ""), key_id, thumbprint, str(get("displayName") or ""),
                parse_time(get("startDateTime")), parse_time(get("endDateTime")), managed, first_party,
                is_saml(thumbprint, key_id) if thumbprint else False))
    return found


def first_party_of(obj: DirectoryObject) -> bool | None:
    """Whether Microsoft keeps the object's credentials (a Microsoft first-party principal, or a managed identity);
    None when the page left both telling properties out (a partial object)."""
    if obj.app_owner_organization_id is None and obj.service_principal_type is None:
        return None
    return obj.object_kind is ObjectKind.SERVICE_PRINCIPAL and (
        (obj.app_owner_organization_id or "").lower() == MICROSOFT_TENANT
        or (obj.service_principal_type or "") == "ManagedIdentity")


def completed(obj: DirectoryObject, known: StoredObject, tenant_id: str, customer: str,
              managed_app_ids: Collection[str]) -> tuple[DirectoryObject, list[InventoryCredential], list[str]] | None:
    """A partial delta object completed from what the store knows of it, without its rows (pure): the object with
    its absent collections left empty (their rows stay as they are), the stored rows credentials_of needs (its
    names, first party, SAML keys), and the key ids of the collections it brings (their old rows to replace).
    None when the kept rows would change (a new name, appId, first party, managed or customer) or a moved SAML
    signing certificate needs the stored certificates' thumbprints: then only the rows themselves complete it."""
    passwords_kept = obj.password_credentials is None and bool(known.passwords)
    certificates_kept = obj.key_credentials is None and bool(known.certificates)
    if certificates_kept and obj.preferred_token_signing_key_thumbprint is not None:
        return None
    app_id = obj.app_id if obj.app_id is not None else known.app_id
    display_name = obj.display_name if obj.display_name is not None else known.display_name
    given = first_party_of(obj)
    first_party = given if given is not None else known.first_party
    if (passwords_kept or certificates_kept) and (
            (app_id, display_name, first_party, customer) != (known.app_id, known.display_name, known.first_party,
                                                                known.customer)
            or (app_id in managed_app_ids) != known.managed):
        return None
    base = InventoryCredential(tenant_id, known.customer, obj.object_kind, obj.object_id, known.app_id,
                               known.display_name, known.owners, CredentialKind.PASSWORD, "", "", "", "", None, None,
                               known.managed, known.first_party)
    stored = [base, *(replace(base, key_id=key_id, saml=True) for key_id in sorted(known.saml))]
    brought = replace(obj, password_credentials=obj.password_credentials or (),
                      key_credentials=obj.key_credentials or ())
    keys = sorted((known.passwords if obj.password_credentials is not None else frozenset())
                  | (known.certificates if obj.key_credentials is not None else frozenset()))
    return brought, stored, keys


def thumbprint_of(custom_key_identifier: object) -> str:
    """A keyCredential's customKeyIdentifier (Edm.Binary, base64 in JSON: the certificate's SHA-1 thumbprint
    bytes) as the upper-case hex that preferredTokenSigningKeyThumbprint uses; "" when absent or not base64."""
    if not isinstance(custom_key_identifier, str) or not custom_key_identifier:
        return ""
    try:
        return base64.b64decode(custom_key_identifier, validate=True).hex().upper()
    except (binascii.Error, ValueError):
        return ""


def parse_time(value: object) -> datetime | None:
    """Graph's DateTimeOffset ("2027-01-01T00:00:00Z", with or without fractions) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)  # Python 3.11 reads the "Z" itself (the same UTC offset as "+00:00")
