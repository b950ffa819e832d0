"""Generic JSON channel: a documented, stable body for any receiver (an ITSM/PSA intake, a Logic App, a script).

The body (docs/api.md, "Alert channels"): `schema` ("sync-secret-rotator.alert/1"; a new major number only for an
incompatible change), `kind` (alert, resolved, test), `condition`, `tenantId`, `appId`, `customer`, `destination`,
`title`, `message`, `details` (string values) and `at` (ISO 8601 UTC).
"""

from __future__ import annotations

from typing import Any

from shared.alerts.channel import Notice

SCHEMA = "sync-secret-rotator.alert/1"


def body(notice: Notice) -> dict[str, Any]:
    """The JSON body of a notice."""
    return {
        "schema": SCHEMA,
        "kind": notice.kind.value,
        "condition": notice.condition,
        "tenantId": notice.tenant_id,
        "appId": notice.app_id,
        "customer": notice.customer,
        "destination": notice.details.get("destination", ""),
        "title": notice.title,
        "message": notice.message,
        "details": dict(notice.details),
        "at": notice.at.isoformat(),
    }


KIND = "json"
