"""Every alert the status document can name is one the OpenAPI document allows: the sign-in read failing on every
pass for about a day (sign-in-evidence-unreadable) is in `alerts` of GET /api/status and of a target's details, and
both answers are validated against the document by the client helper (tests/openapi_check.py)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared import bootstrap, service
from shared.conditions import RESOLVABLE
from shared.sign_in_proof import EVIDENCE_UNREADABLE, HOLDS, UNREADABLE_AFTER
from tests.api.conftest import Api, ids
from tests.rotation.conftest import World

DOCUMENT = json.loads((Path(service.__file__).parent / "openapi.json").read_text())


async def test_a_sign_in_read_failing_for_a_day_is_an_alert_the_document_allows(api: Api, world: World,
                                                                                svc: bootstrap.Services) -> None:
    c = world.seed_customer("Unreadable", 100)
    assert (await api.put(c)).status == 201
    target, etag = await svc.state.get_target(c.tenant_id, c.app_id)
    since = datetime.now(UTC) - UNREADABLE_AFTER - timedelta(hours=1)
    await svc.state.replace_target(target.with_observed(sign_ins_unreadable_since=since), etag)
    status = (await api.call("status")).body["targets"][0]
    assert EVIDENCE_UNREADABLE in status["alerts"]
    assert EVIDENCE_UNREADABLE in (await api.call("details", "GET", ids(c))).body["alerts"]


def test_the_alerts_enum_names_every_condition_a_status_can_show() -> None:
    alerts = set(DOCUMENT["components"]["schemas"]["Status"]["properties"]["alerts"]["items"]["enum"])
    assert {EVIDENCE_UNREADABLE, *HOLDS} <= alerts
    # Every resolvable condition the row holds is one the status may name (drift by the kind Proofpoint only).
    assert {c for c in RESOLVABLE if c not in ("sync-not-confirmed", "rotation-failed")} <= alerts


def test_the_dashboard_labels_every_alert_the_status_may_name() -> None:
    script = (Path(service.__file__).parent / "dashboard" / "app.js").read_text()
    block = script[script.index("const ALERT_LABELS = {"):]
    block = block[:block.index("};")]
    labelled = set(re.findall(r'"([a-z-]+)":', block))
    alerts = set(DOCUMENT["components"]["schemas"]["Status"]["properties"]["alerts"]["items"]["enum"])
    assert alerts <= labelled, alerts - labelled
