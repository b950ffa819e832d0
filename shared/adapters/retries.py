"""Retries below the protocol, made to send a non-idempotent write once.

Two layers re-send a request whose answer was lost, and the protocol never sees it. azure-core's default
`AsyncRetryPolicy` (which every Azure SDK client builds unless told otherwise) retries a PUT after a
500/502/503/504 and after an error once the request was sent (`ServiceResponseError`, and a dropped connection,
which its aiohttp transport reports as `ServiceRequestError` although the request went out): for Key Vault's
set-secret (`PUT /secrets/{name}`, a new version every time) that stores one value in two versions, the first left
`pending` for good. Graph's addPassword has the same hazard and the Graph adapter drops Kiota's retry handler
(shared/adapters/graph.py). Here only 429 (throttled: nothing was written) is retried for such a request; the
adapter reports any other failure as Ambiguous and the protocol looks for the stored version before writing again
(shared/protocol/create.py, `store`). Reads and idempotent writes (tags, deletes) keep the SDK's retries.

Below it, aiohttp (3.10 on) itself re-sends a PUT once when a pooled connection it reused is closed before the
answer (`ClientSession._request`, "retry_persistent_connection", citing RFC 9112 section 9.3.1.1, which allows it
for methods HTTP calls idempotent): Key Vault's PUT is not. `send_once_transport` gives a client a session over the
same pool with that switched off. Reads lose nothing: azure-core's policy retries them after a connection error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport


def key_vault_write_once(method: str, path: str) -> bool:
    """Key Vault requests that make something new each time they arrive: set-secret (PUT) and every POST."""
    return method.upper() in ("PUT", "POST")


class SendOnceRetryPolicy(AsyncRetryPolicy):  # type: ignore[misc,type-arg]
    """AsyncRetryPolicy that never sends a request matching `once(method, path)` a second time, except after 429."""

    def __init__(self, once: Callable[[str, str], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._once = once

    def _sent_once(self, request: Any) -> bool:
        http = getattr(request, "http_request", request)
        return self._once(str(http.method), str(getattr(http, "url", "")))

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if self._sent_once(response) and response.http_response.status_code != 429:
            return False
        return bool(super().is_retry(settings, response))

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        if error is not None and response is not None and self._sent_once(response):
            # Connection refused and a connection dropped after the request went out look alike here: never again.
            return False
        return bool(super().increment(settings, response=response, error=error))


def send_once_transport(transport: AioHttpTransport) -> AioHttpTransport:
    """A transport over `transport`'s connection pool whose aiohttp session never re-sends a request by itself.

    aiohttp has no public switch: `_retry_connection` is the attribute its own test client (aiohttp.test_utils)
    clears for the same reason. Close it (close_transport) before the transport it shares the pool with."""
    assert transport.session is not None, "built inside the running event loop"
    session = aiohttp.ClientSession(connector=transport.session.connector, connector_owner=False)
    session._retry_connection = False
    return AioHttpTransport(session=session, session_owner=False)
