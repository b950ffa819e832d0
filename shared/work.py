"""The rotation work queue's names and message format: what the timers fan out, one message per customer with
work, taken by the queue-triggered function `advance_target` (the adapter is shared/adapters/queues.py).

Messages are JSON, Base64-encoded on the wire: the Functions host's queue trigger decodes Base64 (host.json
`extensions.queues.messageEncoding`), as the SDK's `TextBase64EncodePolicy` encodes. A message carries ids and who
asked, never a secret. Pure: importing it loads no SDK.
"""

from __future__ import annotations

import json
from typing import Any

from shared.ports import Work

WORK_QUEUE_NAME = "rotation-work"
POISON_QUEUE_NAME = f"{WORK_QUEUE_NAME}-poison"  # where the host moves a message after maxDequeueCount failures


class MalformedWork(ValueError):
    """A message that is not a work item of this app (dropped with an error log; never retried)."""


def work_message(work: Work) -> str:
    """The message text of a work item."""
    return json.dumps({"v": 1, "tenantId": work.tenant_id, "appId": work.app_id, "actor": work.actor,
                       "reason": work.reason}, separators=(",", ":"))


def parse_work(text: str | bytes) -> Work:
    """The work item of a message text; MalformedWork when it is not one."""
    try:
        doc: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedWork(f"not JSON: {error}") from None
    fields = ("tenantId", "appId", "actor", "reason")
    if not isinstance(doc, dict) or doc.get("v") != 1 or not all(isinstance(doc.get(f), str) for f in fields):
        raise MalformedWork("not a version-1 work item with tenantId, appId, actor and reason")
    return Work(doc["tenantId"], doc["appId"], doc["actor"], doc["reason"])
