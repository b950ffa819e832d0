"""A stand-in for the Azure CLI (`az`) over a stored Entra directory, for tests/infra/test_msp_app_script.py.

It answers the commands infra/scripts/create-msp-app.sh runs the way az 2.x (Microsoft Graph based) does, on one
JSON file that plays Microsoft Graph: `--query` is JMESPath over the object Graph returns (az evaluates it with the
jmespath package too), `-o tsv` prints scalars and one line per list item, `-o json` the JSON. Writes follow Graph's
rules for the application resource, the strictest where documentation and reports differ:
- PATCH replaces each top-level property it names; inside `api` and `web` only the named properties change
  (18F/piipan's tools/authorize-cli.bash sends the scopes and the pre-authorized clients in two PATCHes), and a
  collection is replaced whole (microsoftgraph/msgraph-sdk-dotnet#1888);
- an enabled scope or app role can be neither removed nor changed (permissionScope.isEnabled: "To delete a permission,
  this property must first be set to false"; Graph answers CannotDeleteOrUpdateEnabledEntitlement);
- `api.preAuthorizedApplications` may name only scopes that exist before the request: a scope defined in the same
  request is not found (microsoftgraph/microsoft-graph-docs#20177, msgraph-sdk-dotnet#2044).
- `ad sp create --id` for an app of another tenant (Microsoft's Partner Center) makes its service principal only when
  the app is one Microsoft publishes (the state's `publishedApps`), as Graph's POST /servicePrincipals {appId};
- an oauth2PermissionGrant (oauth2permissiongrant-post.md, -update.md) names existing client and resource service
  principals and only scopes the resource publishes (strictest plausible), and a second grant for all principals of
  the same client and resource is refused (an update extends the one there).
Every call is appended to the log; a write that changes the directory is also counted in `changes`.
Usage: FAKE_AZ_STATE=<state.json> FAKE_AZ_LOG=<calls> python fake_az.py <az arguments>
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import jmespath

GRAPH = "https://graph.microsoft.com/v1.0/applications/"
SERVICE_PRINCIPALS = "https://graph.microsoft.com/v1.0/servicePrincipals/"
GRANTS = "https://graph.microsoft.com/v1.0/oauth2PermissionGrants"


class AzError(Exception):
    """What az prints as `ERROR: ...` with a non-zero exit."""


def _options(args: list[str]) -> dict[str, list[str]]:
    """`--flag value...` pairs (values run up to the next flag); a flag with no value maps to []."""
    found: dict[str, list[str]] = {}
    flag = None
    for arg in args:
        if arg.startswith("-"):
            flag = arg
            found[flag] = []
        elif flag is not None:
            found[flag].append(arg)
    return found


def _one(options: dict[str, list[str]], *flags: str) -> str:
    for flag in flags:
        if flag in options:
            return options[flag][0]
    raise AzError(f"the following arguments are required: {flags[0]}")


def _print(value: Any, options: dict[str, list[str]]) -> None:
    if "--query" in options:
        value = jmespath.search(options["--query"][0], value)
    output = (options.get("--output") or options.get("-o") or ["json"])[0]
    if output == "none" or value is None:
        return
    if output == "tsv":
        rows = value if isinstance(value, list) else [value]
        for row in rows:
            if isinstance(row, dict):
                print("\t".join(str(v) for v in row.values()))
            elif isinstance(row, bool):
                print("True" if row else "False")
            else:
                print(row)
        return
    print(json.dumps(value, indent=2))


def _app(state: dict[str, Any], key: str) -> dict[str, Any]:
    for app in state["applications"]:
        if key in (app["appId"], app["id"]) or key in app["identifierUris"]:
            return app  # type: ignore[no-any-return]
    raise AzError(f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.")


def _sp(state: dict[str, Any], key: str) -> dict[str, Any]:
    for sp in state["servicePrincipals"]:
        if key in (sp["appId"], sp["id"]):
            return sp  # type: ignore[no-any-return]
    raise AzError(f"Service principal '{key}' doesn't exist")


def _guard_entitlements(kind: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    now = {item["id"]: item for item in after}
    for old in before:
        if old.get("isEnabled") and now.get(old["id"]) != old:
            raise AzError(f"Bad Request({{\"error\":{{\"code\":\"CannotDeleteOrUpdateEnabledEntitlement\",\"message\":"
                          f"\"Permission ({kind}) cannot be deleted or updated unless disabled first.\"}}}})")


def _new_application(display_name: str, audience: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "displayName": display_name,
        "signInAudience": audience, "identifierUris": [], "appRoles": [], "requiredResourceAccess": [],
        "web": {"redirectUris": [], "implicitGrantSettings": {"enableIdTokenIssuance": False,
                                                              "enableAccessTokenIssuance": False}},
        "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": [], "preAuthorizedApplications": [],
                "knownClientApplications": [], "acceptMappedClaims": None},
        "federatedIdentityCredentials": [], "isFallbackPublicClient": None,
    }


def _patch_application(app: dict[str, Any], body: dict[str, Any]) -> None:
    """Graph's PATCH /applications/{id}, with the checks named in the module docstring."""
    for name, value in body.items():
        if name in ("api", "web"):
            if "oauth2PermissionScopes" in value:
                _guard_entitlements("scope", app["api"]["oauth2PermissionScopes"], value["oauth2PermissionScopes"])
            if "preAuthorizedApplications" in value:
                known = {scope["id"] for scope in app["api"]["oauth2PermissionScopes"]}
                for client in value["preAuthorizedApplications"]:
                    missing = set(client["delegatedPermissionIds"]) - known
                    if missing:
                        raise AzError("Bad Request: Property api.preAuthorizedApplications.delegatedPermissionIds "
                                      "has a Permission Id that cannot be found in the AppPermissions sets.")
            app[name].update(copy.deepcopy(value))
        elif name == "appRoles":
            _guard_entitlements("role", app["appRoles"], value)
            app[name] = copy.deepcopy(value)
        else:
            app[name] = copy.deepcopy(value)


def _app_role_assignments(state: dict[str, Any], method: str, principal: str, options: dict[str, list[str]]) -> None:
    """GET / POST /servicePrincipals/{id}/appRoleAssignments (serviceprincipal-post-approleassignments.md): the
    assignments the principal holds; a new one must name the principal itself, an existing resource and one of its
    application roles, and an assignment already made answers 400 Permission being assigned already exists."""
    held = state.setdefault("appRoleAssignments", [])
    if method == "GET":
        _print({"value": [a for a in held if a["principalId"] == principal]}, options)
        return
    body = json.loads(_one(options, "--body", "-b"))
    resource = _sp(state, body["resourceId"])
    if body["principalId"] != principal or not any(r["id"] == body["appRoleId"] for r in resource["appRoles"]):
        raise AzError("Bad Request: Permission being assigned was not found on application")
    if any(a["principalId"] == principal and a["appRoleId"] == body["appRoleId"] for a in held):
        raise AzError("Bad Request: Permission being assigned already exists on the object")
    held.append({"id": str(uuid.uuid4()), **body})


def _check_scopes(state: dict[str, Any], resource_id: str, scope: str) -> None:
    published = {s["value"] for s in _sp(state, resource_id).get("oauth2PermissionScopes", [])}
    unknown = set(scope.split()) - published
    if unknown or not scope.split():
        raise AzError(f"Bad Request: Invalid value specified for property 'scope' of resource 'OAuth2PermissionGrant': "
                      f"{sorted(unknown)}")


def _permission_grants(state: dict[str, Any], method: str, uri: str, options: dict[str, list[str]]) -> None:
    """GET /servicePrincipals/{id}/oauth2PermissionGrants, POST /oauth2PermissionGrants, PATCH .../{id}."""
    grants = state.setdefault("oauth2PermissionGrants", [])
    if method == "GET":
        client = uri[len(SERVICE_PRINCIPALS):-len("/oauth2PermissionGrants")]
        _print({"value": [g for g in grants if g["clientId"] == client]}, options)
        return
    body = json.loads(_one(options, "--body", "-b"))
    if method == "POST" and uri == GRANTS:
        _sp(state, body["clientId"])
        _check_scopes(state, body["resourceId"], body["scope"])
        if body.get("consentType") != "AllPrincipals":
            raise AzError("the stand-in models grants for all principals only")
        if any(g["clientId"] == body["clientId"] and g["resourceId"] == body["resourceId"]
               and g["consentType"] == "AllPrincipals" for g in grants):
            raise AzError("Conflict: Permission entry already exists.")
        grants.append({"id": str(uuid.uuid4()), **body})
        return
    found = [g for g in grants if uri == f"{GRANTS}/{g['id']}"]
    if method != "PATCH" or not found or set(body) != {"scope"}:
        raise AzError(f"the stand-in does not model {method} {uri} {sorted(body)}")
    _check_scopes(state, found[0]["resourceId"], body["scope"])
    found[0]["scope"] = body["scope"]


def run(args: list[str], state: dict[str, Any]) -> None:
    """One az command against the directory in `state` (changed in place)."""
    leading = list(itertools.takewhile(lambda arg: not arg.startswith("-"), args))
    options = _options(args[len(leading):])
    command = " ".join(leading)
    if command.startswith("account show"):
        _print({"tenantId": state["tenantId"], "user": {"name": "admin@msp.example"}}, options)
    elif command.startswith("ad app list"):
        name = _one(options, "--display-name")
        _print([a for a in state["applications"] if a["displayName"] == name], options)
    elif command.startswith("ad app create"):
        app = _new_application(_one(options, "--display-name"), _one(options, "--sign-in-audience"))
        state["applications"].append(app)
        _print(app, options)
    elif command.startswith("ad app show"):
        _print(_app(state, _one(options, "--id")), options)
    elif command.startswith("ad app update"):
        app = _app(state, _one(options, "--id"))
        body: dict[str, Any] = {}
        if "--sign-in-audience" in options:
            body["signInAudience"] = _one(options, "--sign-in-audience")
        if "--required-resource-accesses" in options:
            body["requiredResourceAccess"] = json.loads(_one(options, "--required-resource-accesses"))
        if "--app-roles" in options:
            body["appRoles"] = json.loads(_one(options, "--app-roles"))
        if "--identifier-uris" in options:
            body["identifierUris"] = options["--identifier-uris"]
        if "--web-redirect-uris" in options:
            body["web"] = {"redirectUris": options["--web-redirect-uris"]}
        if "--is-fallback-public-client" in options:
            value = _one(options, "--is-fallback-public-client")
            if value not in ("true", "false"):
                raise AzError("argument --is-fallback-public-client: invalid choice (choose from 'false', 'true')")
            body["isFallbackPublicClient"] = value == "true"
        unknown = set(options) - {"--id", "--sign-in-audience", "--required-resource-accesses", "--app-roles",
                                  "--identifier-uris", "--web-redirect-uris", "--is-fallback-public-client"}
        if unknown:
            raise AzError(f"the stand-in does not model {sorted(unknown)}")
        _patch_application(app, body)
    elif command.startswith("ad app federated-credential"):
        app = _app(state, _one(options, "--id"))
        credentials = app["federatedIdentityCredentials"]
        if leading[3:] == ["show"]:
            name = _one(options, "--federated-credential-id")
            found = [c for c in credentials if name in (c["name"], c["id"])]
            if not found:
                raise AzError(f"Federated identity credential '{name}' not found")
            _print(found[0], options)
        elif leading[3:] in (["create"], ["update"]):
            given = json.loads(_one(options, "--parameters"))
            if leading[3] == "create":
                if any(c["name"] == given["name"] for c in credentials):
                    raise AzError("Bad Request: FederatedIdentityCredential with name already exists.")
                credentials.append({"id": str(uuid.uuid4()), **given})
            else:
                name = _one(options, "--federated-credential-id")
                found = [c for c in credentials if name in (c["name"], c["id"])]
                if not found:
                    raise AzError(f"Federated identity credential '{name}' not found")
                found[0].update({k: v for k, v in given.items() if k != "name"})
        else:
            raise AzError(f"the stand-in does not model {command}")
    elif command.startswith("ad sp show"):
        _print(_sp(state, _one(options, "--id")), options)
    elif command.startswith("ad sp create"):
        key = _one(options, "--id")
        published = [a for a in state.get("publishedApps", []) if a["appId"] == key]
        app = copy.deepcopy(published[0]) if published else {"appId": _app(state, key)["appId"]}
        if any(sp["appId"] == app["appId"] for sp in state["servicePrincipals"]):
            raise AzError("Bad Request: The service principal already exists.")
        sp = {"appRoles": [], "oauth2PermissionScopes": [], **app, "id": str(uuid.uuid4()),
              "appRoleAssignmentRequired": False}
        state["servicePrincipals"].append(sp)
        _print(sp, options)
    elif command.startswith("ad sp update"):
        sp = _sp(state, _one(options, "--id"))
        for assignment in options.get("--set", []):
            name, _, value = assignment.partition("=")
            sp[name] = {"true": True, "false": False}.get(value, value)
    elif command.startswith("rest"):
        method = _one(options, "--method", "-m").upper()
        uri = _one(options, "--uri", "--url", "-u")
        if uri.startswith(SERVICE_PRINCIPALS) and uri.endswith("/appRoleAssignments") and method in ("GET", "POST"):
            _app_role_assignments(state, method, uri[len(SERVICE_PRINCIPALS):-len("/appRoleAssignments")], options)
            return
        if uri.startswith(GRANTS) or (uri.startswith(SERVICE_PRINCIPALS) and uri.endswith("/oauth2PermissionGrants")):
            _permission_grants(state, method, uri, options)
            return
        if method != "PATCH" or not uri.startswith(GRAPH):
            raise AzError(f"the stand-in does not model {method} {uri}")
        _patch_application(_app(state, uri[len(GRAPH):]), json.loads(_one(options, "--body", "-b")))
    else:
        raise AzError(f"the stand-in does not model: az {' '.join(args)}")


def main() -> int:
    state_path = Path(os.environ["FAKE_AZ_STATE"])
    args = sys.argv[1:]
    with open(os.environ["FAKE_AZ_LOG"], "a") as log:
        log.write(json.dumps(["az", *args]) + "\n")
    state = json.loads(state_path.read_text())
    before = json.dumps({k: v for k, v in state.items() if k != "changes"}, sort_keys=True)
    try:
        run(args, state)
    except AzError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    if json.dumps({k: v for k, v in state.items() if k != "changes"}, sort_keys=True) != before:
        state["changes"].append(args[:4])
        state_path.write_text(json.dumps(state, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
