"""The queue triggers: `advance_target` takes one customer's work from the rotation work queue (a rotation's, or an
`inventory` message's: that tenant's credential inventory now, shared.inventory_pass.inventory_now); `poisoned_work`
takes what the host moved to the poison queue after `maxDequeueCount` failed attempts (host.json).

The connection `WORK_QUEUE` is identity-based in Azure (WORK_QUEUE__queueServiceUri, __credential, __clientId) and a
connection string locally (Azurite). An exception lets the host retry the message (after host.json's
visibilityTimeout) until it is poisoned; a message that is not a work item is dropped with an error, never retried.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.fanout import poisoned, work_on
from shared.inventory_pass import inventory_now
from shared.ports import Work, WorkReason
from shared.work import POISON_QUEUE_NAME, WORK_QUEUE_NAME, MalformedWork, parse_work

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)
CONNECTION = "WORK_QUEUE"


def _work(message: func.QueueMessage) -> Work | None:
    try:
        return parse_work(message.get_body())
    except MalformedWork as error:
        log.error("dropped a message that is not a work item", extra={"event": "work", "message_id": message.id,
                                                                      "error": str(error)})
        return None


@bp.queue_trigger(arg_name="message", queue_name=WORK_QUEUE_NAME, connection=CONNECTION)
async def advance_target(message: func.QueueMessage) -> None:
    """Advance one customer's rotation as far as it goes now (lease and ETags: a second delivery is harmless)."""
    work = _work(message)
    if work is None:
        return
    async with invocation_services() as svc:
        if work.reason is WorkReason.INVENTORY:
            await inventory_now(svc, work.tenant_id)  # a newly onboarded tenant's first inventory (read-only)
            return
        await work_on(svc.engine, svc.work_queue, work)


@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE_NAME, connection=CONNECTION)
async def poisoned_work(message: func.QueueMessage) -> None:
    """A work message every attempt failed on: alert, and mark the customer for a human."""
    work = _work(message)
    if work is None:
        return
    async with invocation_services() as svc:
        await poisoned(svc.engine, work)
