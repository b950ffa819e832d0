"""OneRequestAtATime hands out the token it got while azure-identity would hand out its cached one unasked, and
asks the credential again once that would refresh (its refresh_on, or 300 s before expiry) or for a request with
options."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from azure.core.credentials import AccessTokenInfo

from shared.adapters.identity import REFRESH_OFFSET, OneRequestAtATime

SCOPE = "https://graph.microsoft.com/.default"


class Inner:
    """A credential that counts what it is asked and answers the token it is told to."""

    def __init__(self, lifetime: float, refresh_in: float | None = None) -> None:
        self.lifetime, self.refresh_in = lifetime, refresh_in
        self.asked: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        await asyncio.sleep(0)
        self.asked.append((scopes, {}))
        now = int(time.time())
        return AccessTokenInfo(f"token-{len(self.asked)}", now + int(self.lifetime),
                               refresh_on=None if self.refresh_in is None else now + int(self.refresh_in))

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.asked.append((scopes, kwargs))
        return (await self.get_token_info(*scopes)).token

    async def close(self) -> None:
        pass


async def test_a_token_far_from_its_refresh_is_handed_out_again_without_asking() -> None:
    inner = Inner(lifetime=3600)
    credential = OneRequestAtATime(inner)
    first = await asyncio.gather(*(credential.get_token(SCOPE) for _ in range(5)))  # side by side: one request
    again = await credential.get_token(SCOPE)
    assert {t.token for t in first} == {"token-1"} and again.token == "token-1" and len(inner.asked) == 1
    assert again.expires_on > time.time() + REFRESH_OFFSET
    other = await credential.get_token("https://vault.azure.net/.default")  # another scope: its own token
    assert other.token == "token-2" and len(inner.asked) == 2


async def test_a_token_near_its_expiry_or_past_its_refresh_time_is_asked_for_again() -> None:
    near = Inner(lifetime=REFRESH_OFFSET - 10)  # azure-identity would refresh it: each call asks
    credential = OneRequestAtATime(near)
    assert [(await credential.get_token(SCOPE)).token for _ in range(3)] == ["token-1", "token-2", "token-3"]
    refreshing = Inner(lifetime=7200, refresh_in=-1)  # Entra's refresh_in already passed
    credential = OneRequestAtATime(refreshing)
    assert [(await credential.get_token(SCOPE)).token for _ in range(2)] == ["token-1", "token-2"]


async def test_a_request_with_options_always_asks_the_credential() -> None:
    inner = Inner(lifetime=3600)
    credential = OneRequestAtATime(inner)
    await credential.get_token(SCOPE)
    await credential.get_token(SCOPE, claims='{"access_token":{}}')
    assert len(inner.asked) == 3 and inner.asked[1][1] == {"claims": '{"access_token":{}}'}
    await credential.close()
    assert (await credential.get_token(SCOPE)).token == "token-4"  # closed: nothing kept
