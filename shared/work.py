"""The rotation work queue's names and message format: what the timers fan out, one message per customer with
work, taken by the queue-triggered function `advance_target` (the adapter is shared/adapters/queues.py).

Messages are JSON, Base64-encoded on the wire: the Functions host's queue trigger decodes Base64 (host.json
`extensions.queues.messageEncoding`), as the SDK's `TextBase64EncodePolicy` encodes. A message carries ids and who
asked, never a secret. Pure: importing it loads no SDK.
"""

from __future__ import annotations

import json
from typing import Any

from shared.domain import GUID, valid_actor
from shared.ports import Work, WorkReason

WORK_QUEUE_NAME = "rotation-work"
POISON_QUEUE_NAME = f"{WORK_QUEUE_NAME}-poison"  # where the host moves a message after maxDequeueCount failures


class MalformedWork(ValueError):
    """A message that is not a work item of this app (dropped with an error log; never retried)."""


def work_message(work: Work) -> str:
    """The message text of a work item."""
    return json.dumps({"v": 1, "tenantId": work.tenant_id, "appId": work.app_id, "actor": work.actor,
                       "reason": WorkReason(work.reason).value}, separators=(",", ":"))


_FIELDS = {"v", "tenantId", "appId", "actor", "reason"}


def parse_work(text: str | bytes) -> Work:
    """The work item of a message text; MalformedWork when it is not exactly one.

    Anyone who can write to the queue can send anything, so a message is held to what `work_message` writes: the
    five fields, ids that are GUIDs, a known reason, and an actor by the rules of every other audit actor
    (shared.domain.valid_actor: a kind, and a signed-in caller's name, bounded). What it names is never trusted
    beyond that: a worker only advances what the target's row already decided (shared.fanout.work_on)."""
    try:
        doc: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise MalformedWork(f"not JSON: {error.__class__.__name__}") from None
    if not isinstance(doc, dict) or set(doc) != _FIELDS or type(doc["v"]) is not int or doc["v"] != 1:
        raise MalformedWork("not a version-1 work item of exactly v, tenantId, appId, actor and reason")
    tenant_id, app_id, actor, reason = doc["tenantId"], doc["appId"], doc["actor"], doc["reason"]
    if not all(isinstance(i, str) and GUID.fullmatch(i) for i in (tenant_id, app_id)):
        raise MalformedWork("tenantId and appId must be GUIDs")
    if not isinstance(reason, str) or reason not in {r.value for r in WorkReason}:
        raise MalformedWork(f"reason must be one of {', '.join(r.value for r in WorkReason)}")
    if not isinstance(actor, str) or not valid_actor(actor):
        # Never echoed: it is whatever was written to the queue.
        raise MalformedWork("actor is not an audit actor (timer, event, manual[:<signed-in name>])")
    return Work(tenant_id.lower(), app_id.lower(), actor, WorkReason(reason))
