"""The inventory store's index row (shared/adapters/inventory_tables.py): what one index row says survives its
encoding and decoding exactly, a decoded index changed by a write encodes that change and nothing else, and an index
row written before the index kept what rows say (key ids only) still names its objects."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from shared.adapters.inventory_tables import _Index, _index_entity, _index_of_entity, to_entity
from shared.inventory import CredentialKind, InventoryCredential, ObjectKind

TENANT = "11111111-1111-4111-8111-111111111111"


def row(object_id: str, key_id: str, *, name: str = "App", owners: tuple[str, ...] = (), saml: bool = False,
        kind: CredentialKind = CredentialKind.PASSWORD, managed: bool = False) -> InventoryCredential:
    return InventoryCredential(TENANT, "Contoso", ObjectKind.SERVICE_PRINCIPAL, object_id, f"app-{object_id}", name,
                               owners, kind, "Verify" if saml else "", key_id, "h", "n",
                               datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), managed, True, saml)


def noted(rows: list[InventoryCredential]) -> _Index:
    index = _Index("https://graph/delta?token=1")
    for r in rows:
        index.objects.setdefault(r.object_id, set()).add(r.key_id)
        index.note(r.object_id, r.key_id, to_entity(r))
    return index


ROWS = [row("o1", "k1"), row("o1", "k2", kind=CredentialKind.CERTIFICATE),
        row("o2", "k3", name="Zürich 🚀 \"quoted\"", owners=("Ann", "bob@contoso.com"), managed=True),
        row("o3", "k4", saml=True, kind=CredentialKind.CERTIFICATE), row("o3", "k5", saml=True,
                                                                         kind=CredentialKind.CERTIFICATE)]


def test_an_index_row_says_after_decoding_what_it_said_before() -> None:
    index = noted(ROWS)
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, index)
    assert str(entity["I0"]).isascii()
    decoded = _index_of_entity(entity)
    assert decoded.link == index.link and decoded.customer == "Contoso"
    assert decoded.objects == index.objects
    for object_id in ("o1", "o2", "o3"):
        assert decoded.known(object_id) == index.known(object_id) is not None
    assert decoded.known("o2").owners == ("Ann", "bob@contoso.com")  # type: ignore[union-attr]
    assert decoded.known("o3").saml == {"k4", "k5"}  # type: ignore[union-attr]
    assert _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, decoded) == entity  # written again as read


def test_a_decoded_index_changed_by_a_write_encodes_that_change_only() -> None:
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, noted(ROWS))
    decoded = _index_of_entity(entity)
    new = row("o1", "k9", kind=CredentialKind.CERTIFICATE)
    decoded.objects["o1"].add("k9")
    decoded.note("o1", "k9", to_entity(new))
    decoded.objects["o3"].discard("k4")
    decoded.forget("o3", "k4")
    again = _index_of_entity(_index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, decoded))
    assert again.objects == {"o1": {"k1", "k2", "k9"}, "o2": {"k3"}, "o3": {"k5"}}
    assert again.known("o1").certificates == {"k2", "k9"}  # type: ignore[union-attr]
    assert again.known("o3").saml == {"k5"}  # type: ignore[union-attr]
    assert again.known("o2") == noted(ROWS).known("o2")


def test_an_index_row_of_key_ids_only_names_its_objects_and_cannot_complete_them() -> None:
    entity = {"PartitionKey": TENANT, "RowKey": "_index|servicePrincipal", "Link": "L", "Chunks": 1,
              "I0": orjson.dumps({"o1": ["k1", "k2"], "o2": ["k3"]}).decode()}
    decoded = _index_of_entity(entity)
    assert decoded.objects == {"o1": {"k1", "k2"}, "o2": {"k3"}}
    assert decoded.known("o1") is None and decoded.known("o2") is None


def test_a_listing_keeps_the_owners_of_objects_without_rows_only_and_survives_decoding() -> None:
    index = noted(ROWS)
    listed = {"o1": ("Ann",), "o4": ("Ann", "Zoë ✓"), "o5": (), "o6": ("Ann", "Zoë ✓"), "o7": ("bob@contoso.com",)}
    index.keep_listing(listed)
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, index)
    assert entity["Listed"] == 1 and str(entity["L0"]).isascii()
    decoded = _index_of_entity(entity)
    # o1 holds rows: its owners are its rows' (the listing's are not kept for it); the others as listed, () too.
    assert decoded.listed_owners() == {"o4": ("Ann", "Zoë ✓"), "o5": (), "o6": ("Ann", "Zoë ✓"),
                                       "o7": ("bob@contoso.com",)}
    assert orjson.loads(str(entity["L0"])).count([["Ann", "Zoë ✓"], ["o4", "o6"]]) == 1  # grouped by owners
    assert _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, decoded) == entity  # written again as read
    decoded.keep_listing({"o4": ("Cy",)})  # the next listing replaces the last one, it does not add to it
    assert _index_of_entity(_index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, decoded)).listed_owners() == {
        "o4": ("Cy",)}


def test_a_listing_gives_way_to_the_index_when_both_would_pass_the_rows_size() -> None:
    from shared.adapters import inventory_tables

    index = noted(ROWS)
    many = {f"{n:08d}-0000-4000-8000-000000000000": (f"owner{n}@contoso.com",) for n in range(3_000)}
    index.keep_listing(many)
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, index)
    assert entity["Chunks"] == 1 and entity["Listed"] > 1  # the listing is cut into chunks as the index is
    assert len(_index_of_entity(entity).listed_owners()) == 3_000
    limit = inventory_tables.MAX_CHUNKS
    try:
        inventory_tables.MAX_CHUNKS = entity["Listed"]  # no room left beside the index's one chunk
        cut = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, index)
    finally:
        inventory_tables.MAX_CHUNKS = limit
    assert "Listed" not in cut and not any(k[0] == "L" and k[1:].isdigit() for k in cut)
    assert cut["I0"] == entity["I0"] and _index_of_entity(cut).listed_owners() == {}


def test_an_index_row_without_a_listing_lists_no_owners() -> None:
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, noted(ROWS))
    assert "Listed" not in entity
    assert _index_of_entity(entity).listed_owners() == {}


def _entity_bytes(entity: dict[str, object]) -> int:
    """An entity's size as Azure Tables counts it against its 1 MiB (a string 2 bytes a character plus 4, each
    property 8 plus its name's 2 bytes a character; "How the size of an entity is calculated", Azure Storage team)."""
    size = 4 + 2 * (len(str(entity["PartitionKey"])) + len(str(entity["RowKey"])))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        size += 8 + 2 * len(name) + (4 + 2 * len(value) if isinstance(value, str) else 8)
    return size


def test_an_index_row_at_its_largest_stays_within_an_entitys_mib() -> None:
    from shared.adapters.inventory_tables import CHUNK, MAX_CHUNKS

    index = noted(ROWS)
    index.link = "https://graph.microsoft.com/v1.0/servicePrincipals/delta?$deltatoken=" + "x" * 4_000
    # Objects enough that index and listing together fill every property the row may have.
    # Objects sharing their owners: 39 characters each in the listing (`"<id>",`).
    index.keep_listing({f"{n:08d}-0000-4000-8000-000000000000": ("Ann",)
                        for n in range((MAX_CHUNKS - 1) * CHUNK // 39 - 10)})
    entity = _index_entity(TENANT, ObjectKind.SERVICE_PRINCIPAL, index)
    assert entity["Chunks"] + entity["Listed"] == MAX_CHUNKS
    assert _entity_bytes(entity) <= 1024 * 1024
    filled = {**entity, **{f"I{i}": "x" * CHUNK for i in range(MAX_CHUNKS)}, "Chunks": MAX_CHUNKS}
    filled = {k: v for k, v in filled.items() if not (k == "Listed" or (k[0] == "L" and k[1:].isdigit()))}
    assert _entity_bytes(filled) <= 1024 * 1024  # an index alone at its largest
