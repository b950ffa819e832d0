"""The inventory's reads: a tenant's applications and service principals through Graph's delta queries.

Why delta (docs/inventory.md): `GET /applications/delta` and `/servicePrincipals/delta` accept
Application.ReadWrite.OwnedBy, the permission the rotator already holds (application-delta.md,
serviceprincipal-delta.md: least privileged application permission), so after one full read a daily pass reads only
what changed. `$select` names the properties once; Graph encodes it into the nextLink/deltaLink
(delta-query-overview.md). A stale link (a 410 Gone synchronization reset, or an expired token answered with a 40X
and `syncStateNotFound`/`resyncRequired`) raises StaleDeltaLink: the pass starts over with a full read.

Pages are plain GETs on the process's aiohttp session with the tenant's Graph credential, parsed with `json` (no
msgraph-sdk models: their deserialisation costs milliseconds per object, docs/benchmarks.md), yielded one at a time:
a tenant's objects are never all held at once. Read-only: nothing here writes to Graph.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.adapters.graph import GraphAnswer, get_json, read_retrying
from shared.adapters.identity import Credentials
from shared.errors import NotFound, RotationError, StaleDeltaLink
from shared.inventory import DirectoryObject, InventoryPage, ObjectKind, Removed, new_object

_ATTEMPTS = 5
_TIMEOUT = aiohttp.ClientTimeout(total=60)
ENTITY_SET = {ObjectKind.APPLICATION: "applications", ObjectKind.SERVICE_PRINCIPAL: "servicePrincipals"}
SELECT = {
    ObjectKind.APPLICATION: "id,appId,displayName,passwordCredentials,keyCredentials",
    ObjectKind.SERVICE_PRINCIPAL: "id,appId,displayName,appOwnerOrganizationId,servicePrincipalType,"
                                  "preferredTokenSigningKeyThumbprint,passwordCredentials,keyCredentials",
}
# Owners (applications and service principals: users or service principals). Not a delta property: the delta
# functions take $select and a $filter on ids, no $expand (application-delta.md, serviceprincipal-delta.md;
# delta-query-overview.md: relationships are tracked as `@delta` annotations for users and groups only), and an
# owner added or removed does not bring the object into a delta round. So:
# - a full read first lists the kind with `$expand=owners($select=...)` (application-list.md, serviceprincipal-
#   list.md): pages of at most 100 objects (Graph known issue 13635), each object's owners cut at 20 with no nextLink
#   (query-parameters.md); an object listed with 20 owners may have more, and has them read one by one;
# - a delta round's new objects holding credentials (about 1 % a day), and those the listing did not see (created
#   between the two reads), are read FILTER_IDS at a time:
#   `GET /{set}?$filter=id in ('a','b',...)&$select=id&$expand=owners($select=...)`: `id` supports `$filter`
#   with `in` (application.md; a service principal's `id` is the same directoryObject key), the lists take
#   `$filter` with `$expand` (application-list.md, serviceprincipal-list.md; a default query: no ConsistencyLevel
#   header), and "when using the `in` operator, the request is limited to 15 expressions in the filter clause"
#   (Graph known issue 13635). Owners cut at 20 there too: those objects are read one by one,
#   `GET /{set}/{id}/owners?$select=...` (application-list-owners.md, serviceprincipal-list-owners.md:
#   Application.Read.All least privileged), pages followed.
EXPANDED_OWNERS = 20
FILTER_IDS = 15
OWNER_SELECT = "id,displayName,userPrincipalName"

# Graph's answers that say a delta or skip token is no longer known (delta-query-overview.md: "Synchronization
# reset" and "Token duration"); compared in lower case, as the docs spell them both ways.
STALE_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})


def stale(answer: GraphAnswer) -> bool:
    """A delta answer that means "start over with a full read"."""
    return answer.status == 410 or answer.code.lower() in STALE_CODES


_ABSENT = object()


def _credentials(value: Any) -> tuple[dict[str, Any], ...] | None:
    if value is _ABSENT:
        return None
    return tuple([c for c in value if isinstance(c, dict)]) if value else ()  # a list first: half a generator's cost


def _text(value: Any) -> str | None:
    if value is _ABSENT:
        return None
    return "" if value is None else str(value)


def object_of(kind: ObjectKind, doc: dict[str, Any]) -> DirectoryObject | Removed:
    """One item of a delta page: an object (properties absent from a partial one left None) or a removal."""
    object_id = str(doc.get("id") or "")
    if "@removed" in doc:
        return Removed(kind, object_id)
    get = doc.get
    passwords, keys = get("passwordCredentials", _ABSENT), get("keyCredentials", _ABSENT)
    if not passwords and not keys:
        # Both given and empty (most service principals, a full read's hot path): no row comes of it, so the
        # properties that only qualify credentials (first party, SAML) are not parsed.
        return new_object(kind, object_id, _text(get("appId", _ABSENT)), _text(get("displayName", _ABSENT)), (), ())
    return new_object(
        kind, object_id, _text(get("appId", _ABSENT)), _text(get("displayName", _ABSENT)),
        _credentials(passwords), _credentials(keys),
        _text(get("appOwnerOrganizationId", _ABSENT)), _text(get("servicePrincipalType", _ABSENT)),
        _text(get("preferredTokenSigningKeyThumbprint", _ABSENT)),
    )


def page_of(kind: ObjectKind, doc: dict[str, Any]) -> InventoryPage:
    objects: list[DirectoryObject] = []
    removed: list[Removed] = []
    for item in doc.get("value") or []:
        if isinstance(item, dict) and item.get("id"):
            parsed = object_of(kind, item)
            (removed if isinstance(parsed, Removed) else objects).append(parsed)  # type: ignore[arg-type]
    link = doc.get("@odata.deltaLink")
    return InventoryPage(tuple(objects), tuple(removed), str(link) if link else None)


class GraphInventory:
    """InventorySource over Graph's delta functions; throttling and transient errors retried per page."""

    def __init__(self, credentials: Credentials, graph_base_url: str, session: aiohttp.ClientSession) -> None:
        self._credentials = credentials
        self._base = graph_base_url.rstrip("/")
        self._origin = urlsplit(self._base)[:2]  # scheme and host: where a link may send the tenant's token
        self._session = session
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.calls = 0  # delta pages read
        self.owner_calls = 0  # owners pages read

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        link: str | None = delta_link or f"{self._base}/{ENTITY_SET[object_kind]}/delta"
        params: dict[str, str] | None = None if delta_link else {"$select": SELECT[object_kind]}
        while link:
            if not self._ours(link):
                # A link is sent with the tenant's token: never to another host than the configured Graph.
                raise StaleDeltaLink(f"a delta link of tenant {tenant_id} names another host than Graph's",
                                     code="ForeignDeltaLink")
            doc = await self._page(tenant_id, object_kind, link, params)
            page = page_of(object_kind, doc)
            next_link = doc.get("@odata.nextLink")
            if not next_link and not page.delta_link:
                raise RotationError(f"a delta page of tenant {tenant_id} ended with neither nextLink nor deltaLink",
                                    code="UnexpectedAnswer")
            yield page
            link, params = (str(next_link) if next_link else None), None

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        """The object's owners, each as its user principal name (a user) or display name (a service principal),
        sorted; () when it has none or was deleted meanwhile (404). Pages followed."""
        link: str | None = f"{self._base}/{ENTITY_SET[object_kind]}/{object_id}/owners"
        params: dict[str, str] | None = {"$select": OWNER_SELECT}
        what = f"reading the owners of an object of the {ENTITY_SET[object_kind]}"
        names: set[str] = set()
        while link:
            if not self._ours(link):
                raise RotationError(f"an owners page of tenant {tenant_id} names another host than Graph's",
                                    code="UnexpectedAnswer")
            try:
                doc = await read_retrying(
                lambda u=link, q=params: self._get_owners(tenant_id, u, q),  # type: ignore[misc]
                tenant_id, what, _ATTEMPTS, self.sleep, _gone)
            except NotFound:
                return ()
            names.update(owner_name(item) for item in doc.get("value") or [] if isinstance(item, dict))
            next_link = doc.get("@odata.nextLink")
            link, params = (str(next_link) if next_link else None), None
        names.discard("")
        return tuple(sorted(names, key=str.lower))

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        """The owners of several objects, FILTER_IDS a request (the requests side by side): object id -> owners
        (sorted), None where the answer may have cut them (EXPANDED_OWNERS: read those with `owners`), () for an
        object Graph no longer holds (deleted meanwhile: it is not in the answer)."""
        ids = list(dict.fromkeys(object_ids))
        chunks = [ids[start:start + FILTER_IDS] for start in range(0, len(ids), FILTER_IDS)]
        found: dict[str, tuple[str, ...] | None] = dict.fromkeys(ids, ())
        for answer in await asyncio.gather(*(self._owners_filtered(tenant_id, object_kind, c) for c in chunks)):
            found.update((i, owners) for i, owners in answer.items() if i in found)
        return found

    async def _owners_filtered(self, tenant_id: str, object_kind: ObjectKind, ids: Sequence[str]
                               ) -> dict[str, tuple[str, ...] | None]:
        quoted = ",".join("'" + i.replace("'", "''") + "'" for i in ids)  # OData's string literal: ' doubled
        params = {"$filter": f"id in ({quoted})", "$select": "id", "$expand": f"owners($select={OWNER_SELECT})"}
        found: dict[str, tuple[str, ...] | None] = {}
        async for page in self._owner_pages(tenant_id, object_kind, params,
                                            f"reading the owners of objects of the {ENTITY_SET[object_kind]}"):
            found.update(page)
        return found

    async def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                            ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        """Every object of the kind with its owners, a page at a time: object id -> owners (sorted), or None when
        the listing may have cut them (EXPANDED_OWNERS): read those with `owners`."""
        params = {"$select": "id", "$expand": f"owners($select={OWNER_SELECT})", "$top": "100"}
        async for page in self._owner_pages(tenant_id, object_kind, params,
                                            f"listing the owners of the {ENTITY_SET[object_kind]}"):
            yield page

    async def _owner_pages(self, tenant_id: str, object_kind: ObjectKind, params: dict[str, str], what: str
                           ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        """The pages of an owners read (the kind's collection with `params`, then its nextLinks, each on Graph's own
        host), each as object id -> owners (sorted), or None when the expansion may have cut them."""
        link: str | None = f"{self._base}/{ENTITY_SET[object_kind]}"
        query: dict[str, str] | None = params
        while link:
            if not self._ours(link):
                raise RotationError(f"an owners page of tenant {tenant_id} names another host than Graph's",
                                    code="UnexpectedAnswer")
            doc = await read_retrying(
                lambda u=link, q=query: self._get_owners(tenant_id, u, q),  # type: ignore[misc]
                tenant_id, what, _ATTEMPTS, self.sleep)
            yield expanded_owners(doc)
            next_link = doc.get("@odata.nextLink")
            link, query = (str(next_link) if next_link else None), None

    def _ours(self, link: str) -> bool:
        return urlsplit(link)[:2] == self._origin

    async def _page(self, tenant_id: str, kind: ObjectKind, url: str, params: dict[str, str] | None
                    ) -> dict[str, Any]:
        what = f"reading the {ENTITY_SET[kind]} of the inventory"

        def refusal(answer: GraphAnswer) -> Exception | None:
            if stale(answer):
                return StaleDeltaLink(f"{what} in tenant {tenant_id}: {answer.message}", code=answer.code)
            return None

        return await read_retrying(lambda: self._get_page(tenant_id, url, params), tenant_id, what, _ATTEMPTS,
                                   self.sleep, refusal)

    async def _get_owners(self, tenant_id: str, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        self.owner_calls += 1
        return await self._get(tenant_id, url, params)

    async def _get_page(self, tenant_id: str, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        self.calls += 1
        return await self._get(tenant_id, url, params)

    async def _get(self, tenant_id: str, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        doc = await get_json(self._session, self._credentials.graph(tenant_id), url, params, _TIMEOUT)
        if not isinstance(doc, dict):
            raise RotationError(f"Graph answered tenant {tenant_id}'s delta read with something else than a page",
                                code="UnexpectedAnswer")
        return doc


def _gone(answer: GraphAnswer) -> Exception | None:
    """An owners read of an object deleted since the page listed it: nothing to show, not an error."""
    return NotFound(answer.message, code=answer.code) if answer.status == 404 else None


def expanded_owners(doc: dict[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """A list page with `$expand=owners`: object id -> owners (sorted), None where the expansion may have cut them."""
    found: dict[str, tuple[str, ...] | None] = {}
    for item in doc.get("value") or []:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        listed = item.get("owners")
        if not listed:  # most objects: no owner (a full read's listing holds every object of the tenant)
            found[str(item["id"])] = ()
            continue
        owners = [o for o in listed if isinstance(o, dict)]
        if len(owners) >= EXPANDED_OWNERS:
            found[str(item["id"])] = None
        elif len(owners) == 1:  # the next most: one owner, nothing to sort
            name = owner_name(owners[0])
            found[str(item["id"])] = (name,) if name else ()
        else:
            found[str(item["id"])] = tuple(sorted({owner_name(o) for o in owners} - {""}, key=str.lower))
    return found


def owner_name(doc: dict[str, Any]) -> str:
    """How an owner is shown: a user's principal name, else the display name (a service principal), else its id."""
    return str(doc.get("userPrincipalName") or doc.get("displayName") or doc.get("id") or "")
