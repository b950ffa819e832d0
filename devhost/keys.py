"""Function keys and each HTTP function's `authLevel`, as the Functions host enforces them.

Source: Azure/azure-functions-host (src/WebJobs.Script.WebHost):
- `Security/Authentication/Keys/AuthenticationLevelHandler.cs`: the key is read from the `x-functions-key` header,
  else from the `code` query parameter (the header wins when both are sent);
- `Security/KeyManagement/SecretManager.cs` `GetAuthorizationLevelAsync`: the master key gives Admin, a host function
  key gives Function, a key of the called function gives Function; any other value gives nothing (Anonymous);
- `Security/Authorization/AuthUtility.cs` `PrincipalHasAuthLevelClaim` and `FunctionAuthorizationHandler.cs`: an
  ANONYMOUS function needs nothing; an Admin claim satisfies every level; otherwise the claim must equal the
  function's level (so a function key never opens an ADMIN function);
- `Middleware/FunctionInvocationMiddleware.cs`: a request that fails this is answered `UnauthorizedResult()`, a 401
  with an empty body, before the function runs.
The host creates its keys at start when none exist and keeps them in storage (`azure-webjobs-secrets`); here they are
made at start and written, in the shape `az functionapp keys list` prints, to a file the caller names.
System keys (extensions' webhooks such as `/runtime/webhooks/eventgrid`) are not served locally.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

KEY_HEADER = "x-functions-key"  # AuthenticationLevelHandler.FunctionsKeyHeaderName
KEY_QUERY = "code"  # AuthenticationLevelHandler.FunctionsKeyQueryParamName
DEFAULT_KEY_NAME = "default"  # ScriptConstants.DefaultFunctionKeyName
MASTER_KEY_NAME = "master"  # ScriptConstants.DefaultMasterKeyName

ANONYMOUS, FUNCTION, ADMIN = "ANONYMOUS", "FUNCTION", "ADMIN"


def _new_key() -> str:
    # The host's keys are 40 random bytes, URL-safe base64 (SecretManager's key generation); only their secrecy matters.
    return secrets.token_urlsafe(40)


@dataclass(frozen=True)
class HostKeys:
    """The master key, the host's function keys, and each function's own keys (name -> value)."""

    master: str
    host: Mapping[str, str]
    functions: Mapping[str, Mapping[str, str]]

    @classmethod
    def generate(cls, function_names: Iterable[str]) -> HostKeys:
        """Fresh keys, as the host makes them at its first start: a master key, a `default` host key, and a `default`
        key for every HTTP function."""
        return cls(_new_key(), {DEFAULT_KEY_NAME: _new_key()},
                   {name: {DEFAULT_KEY_NAME: _new_key()} for name in function_names})

    def level(self, key: str, function_name: str) -> str:
        """The authorization level a key value gives for one function (SecretManager.GetAuthorizationLevelAsync)."""
        if secrets.compare_digest(key.encode(), self.master.encode()):
            return ADMIN
        own = self.functions.get(function_name, {})
        if any(secrets.compare_digest(key.encode(), value.encode()) for value in (*self.host.values(), *own.values())):
            return FUNCTION
        return ANONYMOUS

    def document(self) -> dict[str, object]:
        """`az functionapp keys list` (masterKey, functionKeys, systemKeys) plus each function's keys
        (`az functionapp function keys list`)."""
        return {"masterKey": self.master, "functionKeys": dict(self.host), "systemKeys": {},
                "functions": {name: dict(keys) for name, keys in self.functions.items()}}

    def write(self, path: Path) -> None:
        """The keys as a JSON file only its owner can read (they are never printed or logged)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self.document(), handle, indent=2)


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The key a request presents: the header first, then the query parameter ("" when none)."""
    for name, value in headers.items():
        if name.lower() == KEY_HEADER:
            return value
    return query.get(KEY_QUERY, "")


def admitted(required: str, keys: HostKeys, presented: str, function_name: str) -> bool:
    """Whether a request with this key may run a function of this authLevel (AuthUtility.PrincipalHasAuthLevelClaim)."""
    if required == ANONYMOUS:
        return True
    level = keys.level(presented, function_name) if presented else ANONYMOUS
    return level == ADMIN or (level == required and level != ANONYMOUS)
