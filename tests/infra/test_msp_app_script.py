"""infra/scripts/create-msp-app.sh configures the MSP app for every way in: the browser sign-in (redirect URI, no
secret), a person's CLI token (version 2 tokens, the user_impersonation scope, the Azure CLI pre-authorized), the app
roles with assignment required, the admin-consent callback and the managed identity's federated credential.

The script runs against a stand-in for `az` (tests/infra/fake_az.py) that keeps a small Entra directory in a file,
answers the script's `--query` with JMESPath as az does and applies writes with Microsoft Graph's rules (a collection
is replaced whole, an enabled scope or role cannot be removed or changed, a pre-authorization must name an existing
scope). The tests read the directory the script leaves behind, and run it twice to prove a re-run changes nothing."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA

SCRIPT = INFRA / "scripts" / "create-msp-app.sh"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
APP_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
OBJECT_ID = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"
MSP_TENANT = "11111111-2222-4333-8444-555555555555"
PRINCIPAL = "3c2b1a09-8f7e-4d6c-9b5a-493827161504"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OWNED_BY = "18a4783c-866b-4cc7-a460-3d5e5662c884"  # Application.ReadWrite.OwnedBy, an application role of Graph
# The sign-in log's two (microsoft-graph-docs-contrib concepts/permissions-reference.md: the application role ids).
AUDIT_LOG_READ_ALL = "b0afded3-3588-46d8-8b3d-9842eff778da"
DIRECTORY_READ_ALL = "7ab1d382-f21e-4acd-a863-ba3e13f7da61"
APP_URL = "https://func-rotator-abc.azurewebsites.net/api"
CALLBACK = "https://func-rotator-abc.azurewebsites.net/.auth/login/aad/callback"
CONSENT = f"{APP_URL}/consent"
ONBOARDING = f"{APP_URL}/onboarding/callback"  # the partner admin's sign-in for bulk onboarding (issue 23)
AZURE_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
# The ids are part of the contract: a role id must never change once people are assigned to it, nor a scope's.
ROLE_IDS = {
    "Rotator.Read": "5d0c3f0e-7c4b-4f2a-9a51-2f6e8b1c7a01",
    "Rotator.Operate": "9b7e2a64-1d3f-4c8e-b0a2-6c5d4e3f2a02",
}
SCOPE_ID = "3f1c6a2e-8d4b-4e7a-9c15-0b2d7e6f4a03"
# "Microsoft Partner Center" (Partner Center's "Partner API authentication").
PARTNER_CENTER_APP_ID = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd"
# Graph's delegated scopes a partner tenant's Graph service principal publishes (a few; ids as in the permissions
# reference) and Partner Center's one scope (its id as Microsoft's Partner Center app registration samples use it).
GRAPH_SCOPES = {"DelegatedAdminRelationship.Read.All": "0c0064ea-477b-4130-82a5-4c2cc4ff68aa",
                "User.Read": "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
                "offline_access": "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
                "openid": "37f7f235-527c-4136-accd-4a02d197296e", "profile": "14dad69e-099b-42c9-810b-d002981feec1",
                "Application.ReadWrite.All": "bdfbf15f-ee85-4955-8675-146e8e5296b5"}
PARTNER_CENTER = {"appId": PARTNER_CENTER_APP_ID, "displayName": "Microsoft Partner Center", "appRoles": [],
                  "oauth2PermissionScopes": [{"id": "1cebfa2a-fb4d-419e-b5f9-839b4383e05a",
                                              "value": "user_impersonation"}]}

_AZD = """#!{python} -S
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(["azd", *sys.argv[1:]]) + "\\n")
"""


def _application(**changes: Any) -> dict[str, Any]:
    """An app registration as Graph holds it, named as the script looks it up."""
    app: dict[str, Any] = {
        "id": OBJECT_ID, "appId": APP_ID, "displayName": "Sync-secret rotator", "signInAudience": "AzureADMultipleOrgs",
        "identifierUris": [], "appRoles": [], "requiredResourceAccess": [],
        "web": {"redirectUris": [], "implicitGrantSettings": {"enableIdTokenIssuance": False,
                                                              "enableAccessTokenIssuance": False}},
        "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": [], "preAuthorizedApplications": [],
                "knownClientApplications": [], "acceptMappedClaims": None},
        "federatedIdentityCredentials": [],
    }
    for name, value in changes.items():
        if name in ("api", "web"):
            app[name].update(value)
        else:
            app[name] = value
    return app


class Directory:
    """The stand-in's Entra directory (one JSON file) and the bin folder holding `az` and `azd`."""

    def __init__(self, root: Path, applications: list[dict[str, Any]] | None = None) -> None:
        self.root = root
        self.state = root / "directory.json"
        self.log = root / "calls"
        graph = {"id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "appId": GRAPH_APP_ID,
                 "appRoleAssignmentRequired": False,
                 "appRoles": [{"id": OWNED_BY, "value": "Application.ReadWrite.OwnedBy",
                               "allowedMemberTypes": ["Application"]},
                              {"id": AUDIT_LOG_READ_ALL, "value": "AuditLog.Read.All",
                               "allowedMemberTypes": ["User", "Application"]},
                              {"id": DIRECTORY_READ_ALL, "value": "Directory.Read.All",
                               "allowedMemberTypes": ["User", "Application"]}],
                 "oauth2PermissionScopes": [{"id": i, "value": v} for v, i in GRAPH_SCOPES.items()]}
        # Microsoft's multi-tenant apps a service principal can be made for (Partner Center has none yet here).
        self.state.write_text(json.dumps({"tenantId": MSP_TENANT, "applications": applications or [],
                                          "servicePrincipals": [graph], "publishedApps": [PARTNER_CENTER],
                                          "changes": []}))
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
        (bin_dir / "azd").write_text(_AZD.format(python=sys.executable, log=str(self.log)))
        for name in ("az", "azd"):
            (bin_dir / name).chmod(0o755)
        self.path = f"{bin_dir}:/usr/bin:/bin"

    def run(self, app_url: str | None = APP_URL, principal: str = PRINCIPAL, *options: str) -> list[list[str]]:
        """Run the script once; the calls it made."""
        self.log.write_text("")
        env = {"PATH": self.path, "AZURE_IDENTITY_PRINCIPAL_ID": principal, "FAKE_AZ_STATE": str(self.state),
               "FAKE_AZ_LOG": str(self.log)}
        if app_url:
            env["AZURE_FUNCTION_APP_URL"] = app_url
        result = subprocess.run(["bash", str(SCRIPT), *options], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state.read_text())
        return data

    def app(self) -> dict[str, Any]:
        named = "Sync-secret rotator"
        apps: list[dict[str, Any]] = [a for a in self.read()["applications"] if a["displayName"] == named]
        assert len(apps) == 1, "exactly one app registration"
        return apps[0]

    def service_principal(self) -> dict[str, Any]:
        app_id = self.app()["appId"]
        found: list[dict[str, Any]] = [sp for sp in self.read()["servicePrincipals"] if sp["appId"] == app_id]
        assert len(found) == 1, "exactly one service principal"
        return found[0]


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path, [_application()])


def _updates(calls: list[list[str]], flag: str) -> list[list[str]]:
    return [c for c in calls if c[:4] == ["az", "ad", "app", "update"] and flag in c]


def test_consent_asks_for_the_sign_in_log_beside_the_rotator_s_own_permission(directory: Directory) -> None:
    """The customer's admin consent (`.default`) grants what the registration requests: the app's own role and the
    two the sign-in log needs (AuditLog.Read.All and Directory.Read.All), as application permissions of Graph."""
    directory.run()
    requested = directory.app()["requiredResourceAccess"]
    assert [r["resourceAppId"] for r in requested] == [GRAPH_APP_ID]
    assert requested[0]["resourceAccess"] == [{"id": role, "type": "Role"}
                                              for role in (OWNED_BY, AUDIT_LOG_READ_ALL, DIRECTORY_READ_ALL)]


def test_the_api_app_roles_are_defined_with_fixed_ids(directory: Directory) -> None:
    directory.run()
    app = directory.app()
    assert {r["value"]: r["id"] for r in app["appRoles"]} == ROLE_IDS
    for role in app["appRoles"]:
        assert role["isEnabled"] is True
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}  # people and automation
        assert role["displayName"] and role["description"]
    assert app["identifierUris"] == [f"api://{APP_ID}"]


def test_role_assignment_is_required_in_the_msp_tenant(directory: Directory) -> None:
    directory.run()
    assert directory.service_principal()["appRoleAssignmentRequired"] is True


def test_access_tokens_are_version_2(directory: Directory) -> None:
    # Issuer https://login.microsoftonline.com/<tenant>/v2.0 and audience the client id: what Easy Auth validates.
    directory.run()
    assert directory.app()["api"]["requestedAccessTokenVersion"] == 2


def test_the_user_impersonation_scope_is_exposed_and_the_azure_cli_pre_authorized(directory: Directory) -> None:
    calls = directory.run()
    api = directory.app()["api"]
    [scope] = api["oauth2PermissionScopes"]
    assert (scope["id"], scope["value"], scope["isEnabled"]) == (SCOPE_ID, "user_impersonation", True)
    assert scope["type"] == "User" and scope["adminConsentDisplayName"] and scope["userConsentDescription"]
    assert api["preAuthorizedApplications"] == [{"appId": AZURE_CLI, "delegatedPermissionIds": [SCOPE_ID]}]
    app_patches = [c for c in calls if c[:2] == ["az", "rest"] and "/applications/" in c[c.index("--uri") + 1]]
    patches = [json.loads(c[c.index("--body") + 1]) for c in app_patches]
    assert all(c[c.index("--uri") + 1] == f"https://graph.microsoft.com/v1.0/applications/{OBJECT_ID}"
               for c in app_patches) and len(patches) >= 2
    # Two requests: Graph does not see a scope defined in the same request (the stand-in refuses it too).
    assert not any({"oauth2PermissionScopes", "preAuthorizedApplications"} <= set(p["api"]) for p in patches)


def test_a_scope_made_elsewhere_and_other_clients_are_kept(tmp_path: Path) -> None:
    portal_scope = {"id": "aaaaaaaa-1111-4222-8333-444444444444", "value": "user_impersonation", "type": "User",
                    "isEnabled": True, "adminConsentDisplayName": "Access", "adminConsentDescription": "Access",
                    "userConsentDisplayName": "Access", "userConsentDescription": "Access"}
    other_scope = {**portal_scope, "id": "bbbbbbbb-1111-4222-8333-444444444444", "value": "Reports.Read"}
    visual_studio = {"appId": "872cd9fa-d31f-45e0-9eab-6e460a02d1f1", "delegatedPermissionIds": [other_scope["id"]]}
    directory = Directory(tmp_path, [_application(api={"oauth2PermissionScopes": [portal_scope, other_scope],
                                                       "preAuthorizedApplications": [visual_studio]})])
    directory.run()
    api = directory.app()["api"]
    assert api["oauth2PermissionScopes"] == [portal_scope, other_scope]  # an enabled scope cannot change anyway
    assert api["preAuthorizedApplications"] == [
        visual_studio, {"appId": AZURE_CLI, "delegatedPermissionIds": [portal_scope["id"]]}]


def test_a_new_scope_is_added_beside_other_scopes(tmp_path: Path) -> None:
    other_scope = {"id": "bbbbbbbb-1111-4222-8333-444444444444", "value": "Reports.Read", "type": "User",
                   "isEnabled": True, "adminConsentDisplayName": "Reports", "adminConsentDescription": "Reports"}
    cli_for_reports = {"appId": AZURE_CLI, "delegatedPermissionIds": [other_scope["id"]]}
    directory = Directory(tmp_path, [_application(api={"oauth2PermissionScopes": [other_scope],
                                                       "preAuthorizedApplications": [cli_for_reports]})])
    directory.run()
    api = directory.app()["api"]
    assert [s["id"] for s in api["oauth2PermissionScopes"]] == [other_scope["id"], SCOPE_ID]
    assert api["preAuthorizedApplications"] == [
        {"appId": AZURE_CLI, "delegatedPermissionIds": [other_scope["id"], SCOPE_ID]}]


@pytest.mark.parametrize(
    "registered",
    [[], ["https://portal.example/callback"], ["https://a.example/x", "https://b.example/y"]],
    ids=["none", "one-other", "two-others"],
)
def test_the_sign_in_and_consent_redirect_uris_are_added_to_the_registered_ones(
    tmp_path: Path, registered: list[str]
) -> None:
    directory = Directory(tmp_path, [_application(web={"redirectUris": registered})])
    calls = directory.run()
    assert len(_updates(calls, "--web-redirect-uris")) == 1
    assert directory.app()["web"]["redirectUris"] == [*registered, CALLBACK, CONSENT, ONBOARDING]


def test_only_the_missing_redirect_uri_is_added(tmp_path: Path) -> None:
    directory = Directory(tmp_path, [_application(web={"redirectUris": ["https://portal.example/callback", CONSENT]})])
    directory.run()
    assert directory.app()["web"]["redirectUris"] == ["https://portal.example/callback", CONSENT, CALLBACK,
                                                      ONBOARDING]


def test_registered_redirect_uris_are_left_alone(tmp_path: Path) -> None:
    directory = Directory(tmp_path, [_application(web={"redirectUris": [CONSENT, CALLBACK, ONBOARDING]})])
    calls = directory.run()
    assert not _updates(calls, "--web-redirect-uris")


def test_without_the_app_url_no_redirect_uri_is_guessed(directory: Directory) -> None:
    calls = directory.run(app_url=None)
    assert directory.app()["web"]["redirectUris"] == []
    assert ["azd", "env", "set", "MSP_APP_CLIENT_ID", APP_ID] in calls


def test_the_browser_sign_in_needs_no_secret_and_no_implicit_grant(directory: Directory) -> None:
    calls = directory.run()
    assert not [c for c in calls if c[:4] == ["az", "ad", "app", "credential"]]  # no `credential reset`: no secret
    assert not [c for c in calls if any(word in " ".join(c) for word in ("passwordCredentials", "addPassword",
                                                                           "keyCredentials", "enableIdTokenIssuance"))]
    app = directory.app()
    assert "passwordCredentials" not in app
    assert app["web"]["implicitGrantSettings"] == {"enableIdTokenIssuance": False, "enableAccessTokenIssuance": False}


def test_the_app_trusts_the_managed_identity(directory: Directory) -> None:
    directory.run()
    [credential] = directory.app()["federatedIdentityCredentials"]
    assert credential["name"] == "rotator-managed-identity"
    assert credential["issuer"] == f"https://login.microsoftonline.com/{MSP_TENANT}/v2.0"
    assert credential["subject"] == PRINCIPAL
    assert credential["audiences"] == ["api://AzureADTokenExchange"]


def test_a_recreated_identity_is_trusted_in_place_of_the_old_one(directory: Directory) -> None:
    directory.run()
    recreated = "7d6c5b4a-3928-4716-a5b4-c3d2e1f0a9b8"
    directory.run(principal=recreated)
    [credential] = directory.app()["federatedIdentityCredentials"]
    assert credential["subject"] == recreated


@pytest.mark.parametrize("existing", [False, True], ids=["new-app", "existing-app"])
def test_a_second_run_changes_nothing(tmp_path: Path, existing: bool) -> None:
    directory = Directory(tmp_path, [_application()] if existing else [])
    directory.run()
    first = directory.read()
    assert first["changes"], "the first run configured the app"
    calls = directory.run()
    second = directory.read()
    assert second["changes"] == first["changes"], "the second run changed the directory"
    assert {k: v for k, v in second.items() if k != "changes"} == {k: v for k, v in first.items() if k != "changes"}
    assert not [c for c in calls if "create" in c[:5] or (c[:2] == ["az", "rest"] and "GET" not in c)]
    app = directory.app()
    assert len(app["web"]["redirectUris"]) == 3 and len(app["federatedIdentityCredentials"]) == 1


def test_the_stand_in_refuses_what_graph_refuses(directory: Directory) -> None:
    # The rules the tests above rely on: without them a script that breaks Graph's rules would pass here.
    env = {"FAKE_AZ_STATE": str(directory.state), "FAKE_AZ_LOG": str(directory.log)}
    uri = f"https://graph.microsoft.com/v1.0/applications/{OBJECT_ID}"

    def patch(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(FAKE_AZ), "rest", "--method", "PATCH", "--uri", uri, "--body",
                               json.dumps(body)], env=env, capture_output=True, text=True, timeout=60)

    scope = {"id": SCOPE_ID, "value": "user_impersonation", "type": "Admin", "isEnabled": True}
    cli = {"appId": AZURE_CLI, "delegatedPermissionIds": [SCOPE_ID]}
    together = patch({"api": {"oauth2PermissionScopes": [scope], "preAuthorizedApplications": [cli]}})
    assert together.returncode == 1 and "cannot be found" in together.stderr
    assert patch({"api": {"oauth2PermissionScopes": [scope]}}).returncode == 0
    changed = copy.deepcopy(scope) | {"type": "User"}
    refused = patch({"api": {"oauth2PermissionScopes": [changed]}})
    assert refused.returncode == 1 and "CannotDeleteOrUpdateEnabledEntitlement" in refused.stderr
    assert patch({"api": {"oauth2PermissionScopes": []}}).returncode == 1
    assert patch({"api": {"requestedAccessTokenVersion": 2}}).returncode == 0
    assert directory.app()["api"]["oauth2PermissionScopes"] == [scope]  # the other api properties stayed


def test_sign_in_only_configures_a_single_tenant_app_for_sign_in_alone(tmp_path: Path) -> None:
    # Single-tenant mode keeps the managed identity's own Graph permission: the app is for sign-in only.
    directory = Directory(tmp_path)
    calls = directory.run(APP_URL, PRINCIPAL, "--sign-in-only")
    app = directory.app()
    assert app["signInAudience"] == "AzureADMyOrg" and app["requiredResourceAccess"] == []
    assert app["web"]["redirectUris"] == [CALLBACK]  # no admin-consent or onboarding callback: no customer tenants
    assert {r["value"] for r in app["appRoles"]} == set(ROLE_IDS)
    assert app["api"]["requestedAccessTokenVersion"] == 2
    assert app["api"]["preAuthorizedApplications"][0]["appId"] == AZURE_CLI
    assert [c["subject"] for c in app["federatedIdentityCredentials"]] == [PRINCIPAL]  # the browser sign-in's
    assert directory.service_principal()["appRoleAssignmentRequired"] is True
    assert app["isFallbackPublicClient"] is None  # no bulk onboarding from a single-tenant app: no device code
    azd = [c for c in calls if c[0] == "azd"]
    assert azd == [["azd", "env", "set", "AUTH_CLIENT_ID", app["appId"]]]  # IDENTITY_MODE is left alone
    before = directory.read()["changes"]
    directory.run(APP_URL, PRINCIPAL, "--sign-in-only")
    assert directory.read()["changes"] == before  # a re-run changes nothing


def test_public_client_flows_are_allowed_for_the_device_code_sign_in(directory: Directory) -> None:
    directory.run(APP_URL, PRINCIPAL)
    assert directory.app()["isFallbackPublicClient"] is True


def test_the_sandbox_models_the_app_the_script_registers() -> None:
    """The sandbox's MSP app carries the script's role and scope ids: a token the sandbox issues names what a real
    deployment's tokens would."""
    from sandbox import world

    script = SCRIPT.read_text()
    assert {world.ROLE_READ: world.ROLE_READ_ID, world.ROLE_OPERATE: world.ROLE_OPERATE_ID} == ROLE_IDS
    assert f"USER_IMPERSONATION_ID={world.SCOPE_ID}\n" in script and world.SCOPE_ID == SCOPE_ID
    msp_app = world.World().directory.find_application(world.MSP_APP_ID)
    assert msp_app is not None and msp_app.is_fallback_public_client  # as the script sets it
    # and the Graph application permissions the script requests (consent grants them in each customer tenant).
    assert msp_app.required_resource_access == [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
        {"id": role, "type": "Role"} for role in (OWNED_BY, AUDIT_LOG_READ_ALL, DIRECTORY_READ_ALL)]}]
    assert msp_app.graph_roles() == ["Application.ReadWrite.OwnedBy", "AuditLog.Read.All", "Directory.Read.All"]


def _grants(directory: Directory) -> dict[str, str]:
    """The MSP app's delegated grants for all principals in the partner tenant: resource appId -> scope."""
    state = directory.read()
    by_id = {sp["id"]: sp["appId"] for sp in state["servicePrincipals"]}
    client = directory.service_principal()["id"]
    found = [g for g in state.get("oauth2PermissionGrants", []) if g["clientId"] == client]
    assert all(g["consentType"] == "AllPrincipals" for g in found)
    assert len({g["resourceId"] for g in found}) == len(found), "one grant per resource"
    return {by_id[g["resourceId"]]: g["scope"] for g in found}


def test_the_partner_tenant_consents_once_to_what_the_partner_sign_in_asks(directory: Directory) -> None:
    """The partner admin's sign-in (SIGN_IN_SCOPES) and its refresh for Partner Center's user_impersonation get admin
    consent in the partner tenant, Partner Center's service principal made there first; else AADSTS65001."""
    from shared.adapters.delegated import PARTNER_CENTER_SCOPE, SIGN_IN_SCOPES

    directory.run()
    grants = _grants(directory)
    assert set(grants) == {GRAPH_APP_ID, PARTNER_CENTER_APP_ID}
    assert set(grants[GRAPH_APP_ID].split()) == {s.rpartition("/")[2] for s in SIGN_IN_SCOPES}
    assert grants[PARTNER_CENTER_APP_ID] == PARTNER_CENTER_SCOPE.rpartition("/")[2] == "user_impersonation"
    assert [sp["appId"] for sp in directory.read()["servicePrincipals"]].count(PARTNER_CENTER_APP_ID) == 1


def test_customers_consent_asks_for_graph_application_roles_only(directory: Directory) -> None:
    """A customer's admin consent (`.default`) asks for every resource the registration lists: Partner Center there
    would fail with AADSTS650052 in a tenant without its service principal, delegated scopes would widen the consent."""
    directory.run()
    required = directory.app()["requiredResourceAccess"]
    assert [r["resourceAppId"] for r in required] == [GRAPH_APP_ID]
    assert {a["type"] for a in required[0]["resourceAccess"]} == {"Role"}


def test_an_existing_grant_is_extended_and_its_other_scopes_kept(tmp_path: Path) -> None:
    directory = Directory(tmp_path, [_application()])
    state = directory.read()
    sp = {"id": "7d6c5b4a-3928-4716-a5b4-c3d2e1f00a1b", "appId": APP_ID, "appRoles": [],
          "appRoleAssignmentRequired": True}
    partner_center = {**PARTNER_CENTER, "id": "2b3c4d5e-6f70-4819-a2b3-c4d5e6f70819"}
    graph_id = state["servicePrincipals"][0]["id"]
    state["servicePrincipals"] += [sp, partner_center]
    state["oauth2PermissionGrants"] = [
        {"id": "g1", "clientId": sp["id"], "consentType": "AllPrincipals", "resourceId": graph_id,
         "scope": "Application.ReadWrite.All User.Read"},
        {"id": "g2", "clientId": sp["id"], "consentType": "AllPrincipals", "resourceId": partner_center["id"],
         "scope": "user_impersonation"}]
    directory.state.write_text(json.dumps(state))
    calls = directory.run()
    grants = _grants(directory)
    assert grants[GRAPH_APP_ID].split()[:2] == ["Application.ReadWrite.All", "User.Read"]  # kept, in place
    assert set(grants[GRAPH_APP_ID].split()) == set(GRAPH_SCOPES)  # the sign-in's added
    assert grants[PARTNER_CENTER_APP_ID] == "user_impersonation"
    writes = [c for c in calls if c[:2] == ["az", "rest"] and "oauth2PermissionGrants" in " ".join(c)
              and "GET" not in c]
    assert len(writes) == 1 and "PATCH" in writes[0] and writes[0][writes[0].index("--uri") + 1].endswith("/g1")
    assert not [c for c in calls if c[:4] == ["az", "ad", "sp", "create"]]


def test_sign_in_only_grants_nothing_in_the_tenant(tmp_path: Path) -> None:
    directory = Directory(tmp_path, [_application()])
    directory.run(APP_URL, PRINCIPAL, "--sign-in-only")
    assert not directory.read().get("oauth2PermissionGrants")
    assert PARTNER_CENTER_APP_ID not in [sp["appId"] for sp in directory.read()["servicePrincipals"]]


def test_the_stand_in_refuses_a_second_grant_and_an_unpublished_scope(directory: Directory) -> None:
    directory.run()
    env = {"FAKE_AZ_STATE": str(directory.state), "FAKE_AZ_LOG": str(directory.log)}
    graph_id = directory.read()["servicePrincipals"][0]["id"]

    def post(scope: str) -> subprocess.CompletedProcess[str]:
        body = {"clientId": directory.service_principal()["id"], "consentType": "AllPrincipals",
                "resourceId": graph_id, "scope": scope}
        return subprocess.run([sys.executable, str(FAKE_AZ), "rest", "--method", "POST", "--uri",
                               "https://graph.microsoft.com/v1.0/oauth2PermissionGrants", "--body", json.dumps(body)],
                              env=env, capture_output=True, text=True, timeout=60)

    again = post("User.Read")
    assert again.returncode == 1 and "already exists" in again.stderr
    unknown = post("Not.A.Scope")
    assert unknown.returncode == 1 and "scope" in unknown.stderr
