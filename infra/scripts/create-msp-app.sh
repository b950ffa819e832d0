#!/usr/bin/env bash
# MSP mode (IDENTITY_MODE=federated): creates (or updates) the MSP's multi-tenant app registration
# and a federated identity credential through which it trusts the rotator's user-assigned managed
# identity. The rotator then gets tokens for the app in each customer tenant with no secret of its
# own. Bicep cannot do this: app registrations are Microsoft Graph objects.
#
# Run once in the MSP's (partner) tenant by an Application Administrator (or Cloud Application Administrator),
# after `azd provision`. Idempotent: finds the app by display name and the credential by name.
# Afterwards: `azd provision` (sets MSP_APP_CLIENT_ID and IDENTITY_MODE on the app), and in each
# customer tenant an admin grants consent through the printed URL.
#
# Operators sign in to the rotator's API through the same app (App Service Authentication, see infra/README.md,
# "Sign-in"). This script also configures everything that needs:
# - app roles Rotator.Read and Rotator.Operate (people and applications), fixed ids so re-running changes nothing;
# - the identifier URI api://<client id> (the token audience) and version 2 access tokens;
# - the delegated scope user_impersonation, with the Azure CLI pre-authorized for it, so that
#   `az account get-access-token --resource api://<client id>` works without AADSTS65001;
# - role assignment required on its service principal in the MSP tenant (only assigned people and apps get a token);
# - the web redirect URIs https://<app host>/.auth/login/aad/callback (the browser sign-in of /api/dashboard),
#   https://<app host>/api/consent (Entra's admin-consent endpoint refuses an unregistered one, AADSTS500113/50011)
#   and https://<app host>/api/onboarding/callback (the partner admin's sign-in for bulk onboarding);
# - admin consent in the partner tenant for that sign-in: Graph's DelegatedAdminRelationship.Read.All (with User.Read,
#   offline_access, openid, profile) and Partner Center's user_impersonation (not asked of customer tenants).
# The browser sign-in needs no client secret: App Service Authentication redeems the code with a client assertion from
# the managed identity, which the app trusts through the federated credential below (infra/app/function-app.bicep).
# Re-running updates what differs and never adds a second app, credential, scope or redirect URI.
#
# Usage: infra/scripts/create-msp-app.sh [--name DISPLAY_NAME] [--all] [--sign-in-only]
#   --name          display name of the app (default: "Sync-secret rotator")
#   --all           request Application.ReadWrite.All instead of Application.ReadWrite.OwnedBy
#   --sign-in-only  single-tenant mode (IDENTITY_MODE=managed-identity stays): an app for sign-in alone, in this
#                   tenant only, with no Graph permission and no consent URI; sets AUTH_CLIENT_ID, not MSP_APP_CLIENT_ID
set -euo pipefail

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
# The Azure CLI's public client id (Azure/azure-cli, src/azure-cli-core/azure/cli/core/auth/identity.py: AZURE_CLI_CLIENT_ID).
AZURE_CLI_APP_ID=04b07795-8ddb-461a-bbee-02f9e1bf7b46
# The user_impersonation scope's id, fixed for the same reason as the app roles' ids (below).
USER_IMPERSONATION_ID=3f1c6a2e-8d4b-4e7a-9c15-0b2d7e6f4a03
display_name="Sync-secret rotator"
role=Application.ReadWrite.OwnedBy
credential_name=rotator-managed-identity
sign_in_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --name) display_name="$2"; shift 2 ;;
    --all) role=Application.ReadWrite.All; shift ;;
    --sign-in-only) sign_in_only=true; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

env_value() {
  local value="${!1:-}"
  if [ -z "$value" ] && command -v azd >/dev/null 2>&1; then
    value=$(azd env get-value "$1" 2>/dev/null || true)
  fi
  printf '%s' "$value"
}

# A JSON array as az prints it (-o json), with one more item; empty output (a missing property) is an empty array.
json_append() {
  local array
  array=$(printf '%s' "$1" | tr -d '\n')
  if [[ "$array" =~ ^[[:space:]]*(\[[[:space:]]*\])?[[:space:]]*$ ]]; then
    printf '[%s]' "$2"
  else
    printf '%s, %s]' "${array%]*}" "$2"
  fi
}

principal_id=$(env_value AZURE_IDENTITY_PRINCIPAL_ID)
[ -n "$principal_id" ] || { echo "AZURE_IDENTITY_PRINCIPAL_ID is unknown: run azd provision first" >&2; exit 1; }
msp_tenant_id=$(az account show --query tenantId -o tsv)

if [ "$sign_in_only" = true ]; then audience=AzureADMyOrg; else audience=AzureADMultipleOrgs; fi
app_id=$(az ad app list --display-name "$display_name" --query "[0].appId" -o tsv)
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$display_name" --sign-in-audience "$audience" --query appId -o tsv)
  echo "Created app registration $display_name ($app_id)"
else
  echo "Found app registration $display_name ($app_id)"
fi

# The MSP mode's Graph permissions, asked of each customer tenant through consent (the `.default` scope takes what
# the registration requests); sign-in alone needs none. AuditLog.Read.All and Directory.Read.All read the sign-in log,
# the evidence that the new secret is in use before the old one goes (List signIns: "requires consent to both",
# microsoftgraph/microsoft-graph-docs-contrib api-reference/beta/api/signin-list.md). A tenant that declines them,
# or has no Entra ID P1/P2 licence, still rotates: retirement then relies on Proofpoint's own sync (README).
if [ "$sign_in_only" = false ]; then
  accesses=""
  for permission in "$role" AuditLog.Read.All Directory.Read.All; do
    role_id=$(az ad sp show --id "$GRAPH_APP_ID" \
      --query "appRoles[?value=='$permission' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
    [ -n "$role_id" ] || { echo "Graph has no application role $permission" >&2; exit 1; }
    accesses="${accesses:+$accesses, }{\"id\": \"$role_id\", \"type\": \"Role\"}"
  done
  az ad app update --id "$app_id" --sign-in-audience AzureADMultipleOrgs \
    --required-resource-accesses "[{\"resourceAppId\": \"$GRAPH_APP_ID\", \"resourceAccess\": [$accesses]}]"
fi

# Bulk onboarding's command line signs the partner admin in with the device code flow, a public client flow: Entra
# redeems a device code without a client credential only when the app allows public client flows
# (isFallbackPublicClient; "Microsoft identity platform and the OAuth 2.0 device authorization grant flow"), else
# AADSTS7000218. The browser sign-in and the rotator's own tokens keep using the federated credential.
if [ "$sign_in_only" = false ]; then
  az ad app update --id "$app_id" --is-fallback-public-client true
fi

# App roles of the rotator's API (shared/entrypoints/access.py). The ids are fixed: Entra refuses to
# delete or change an enabled role, and the same ids make every run identical. allowedMemberTypes User and
# Application: people (and groups) get them by assignment, automation as application permissions (Graph appRole
# resource type; Entra "Add app roles to your application and receive them in the token",
# MicrosoftDocs/entra-docs docs/identity-platform/howto-add-app-roles-in-apps.md).
app_roles='[
  {"id": "5d0c3f0e-7c4b-4f2a-9a51-2f6e8b1c7a01", "value": "Rotator.Read", "displayName": "Rotator reader",
   "description": "Read status, discovery, the dashboard and the OpenAPI document of the sync-secret rotator.",
   "allowedMemberTypes": ["User", "Application"], "isEnabled": true},
  {"id": "9b7e2a64-1d3f-4c8e-b0a2-6c5d4e3f2a02", "value": "Rotator.Operate", "displayName": "Rotator operator",
   "description": "Change the registry, rotate secrets and acknowledge alerts in the sync-secret rotator.",
   "allowedMemberTypes": ["User", "Application"], "isEnabled": true}
]'
az ad app update --id "$app_id" --app-roles "$app_roles" --identifier-uris "api://$app_id"
echo "App roles Rotator.Read and Rotator.Operate defined; identifier URI api://$app_id"

# The API's delegated side, through Microsoft Graph (az ad app update has no options for these). Graph replaces a
# collection it is sent and refuses to delete or change an enabled scope, so the current lists are read and only what
# is missing is added. Sources: Microsoft Graph apiApplication, permissionScope and preAuthorizedApplication resource
# types (microsoftgraph/microsoft-graph-docs-contrib, api-reference/v1.0/resources/).
object_id=$(az ad app show --id "$app_id" --query id -o tsv)
graph_app="https://graph.microsoft.com/v1.0/applications/$object_id"
patch_app() {
  az rest --method PATCH --uri "$graph_app" --headers Content-Type=application/json --body "$1" --output none
}

# Version 2 access tokens: issuer https://login.microsoftonline.com/<tenant>/v2.0, the issuer App Service
# Authentication validates (infra/app/function-app.bicep). Unset means version 1 (apiApplication.requestedAccessTokenVersion).
if [ "$(az ad app show --id "$app_id" --query api.requestedAccessTokenVersion -o tsv)" = 2 ]; then
  echo "Access tokens are version 2"
else
  patch_app '{"api": {"requestedAccessTokenVersion": 2}}'
  echo "Access tokens set to version 2"
fi

# The delegated scope people's tools ask for (learn.microsoft.com/azure/app-service/configure-authentication-provider-aad:
# "Expose an API", scope user_impersonation, "Who can consent: Admins and users", i.e. type User). The gate is the app
# role (assignment required, roles checked by the code), not consent; the Azure CLI needs none, being pre-authorized
# below. An existing user_impersonation (e.g. added in the portal) is kept.
scope_id=$(az ad app show --id "$app_id" --query "api.oauth2PermissionScopes[?value=='user_impersonation'].id | [0]" -o tsv)
if [ -n "$scope_id" ]; then
  echo "Scope user_impersonation exists"
else
  scope_id=$USER_IMPERSONATION_ID
  scopes=$(az ad app show --id "$app_id" --query api.oauth2PermissionScopes -o json)
  scope="{\"id\": \"$scope_id\", \"value\": \"user_impersonation\", \"type\": \"User\", \"isEnabled\": true,
    \"adminConsentDisplayName\": \"Access the sync-secret rotator\",
    \"adminConsentDescription\": \"Call the sync-secret rotator's API as the signed-in person, within the app roles they hold.\",
    \"userConsentDisplayName\": \"Access the sync-secret rotator\",
    \"userConsentDescription\": \"Call the sync-secret rotator's API as you, within the app roles you hold.\"}"
  patch_app "{\"api\": {\"oauth2PermissionScopes\": $(json_append "$scopes" "$scope")}}"
  echo "Scope user_impersonation added"
fi

# The Azure CLI pre-authorized for that scope: without it `az account get-access-token --resource api://<client id>`
# fails with AADSTS65001, consent_required (Azure/azure-cli#15056; Azure/azure-cli#29071 shows the pre-authorized CLI
# getting its token). A separate request from the scope's: Graph does not find a scope defined in the same request
# (microsoftgraph/microsoft-graph-docs#20177). Other pre-authorized clients are kept.
cli_scopes=$(az ad app show --id "$app_id" \
  --query "api.preAuthorizedApplications[?appId=='$AZURE_CLI_APP_ID'].delegatedPermissionIds[]" -o tsv)
if printf '%s\n' "$cli_scopes" | grep -qxF "$scope_id"; then
  echo "Azure CLI pre-authorized for user_impersonation"
else
  ids=""
  for id in $cli_scopes "$scope_id"; do ids="${ids:+$ids, }\"$id\""; done
  others=$(az ad app show --id "$app_id" --query "api.preAuthorizedApplications[?appId!='$AZURE_CLI_APP_ID']" -o json)
  patch_app "{\"api\": {\"preAuthorizedApplications\": $(json_append "$others" \
    "{\"appId\": \"$AZURE_CLI_APP_ID\", \"delegatedPermissionIds\": [$ids]}")}}"
  echo "Azure CLI pre-authorized for user_impersonation"
fi

# Web redirect URIs, added to the ones already registered (never replacing them):
# - https://<app host>/.auth/login/aad/callback: where Entra returns a browser signing in through App Service
#   Authentication (the dashboard sends it to /.auth/login/aad; learn.microsoft.com/azure/app-service/
#   configure-authentication-provider-aad, "Redirect URI ... /.auth/login/aad/callback");
# - https://<app host>/api/consent: the admin-consent callback (issue 9);
# - https://<app host>/api/onboarding/callback: the partner admin's sign-in for bulk onboarding (authorization code
#   with PKCE, redeemed with the managed identity's client assertion; issue 23).
# No implicit grant (ID token issuance) is enabled: the code flow's credential is the managed identity.
app_url=$(env_value AZURE_FUNCTION_APP_URL)
if [ -n "$app_url" ]; then
  origin=$(printf '%s' "$app_url" | sed -E 's#^(https://[^/]+).*$#\1#')
  existing=$(az ad app show --id "$app_id" --query "web.redirectUris" -o tsv)
  wanted=("$origin/.auth/login/aad/callback")
  [ "$sign_in_only" = true ] || wanted+=("${app_url%/}/consent" "${app_url%/}/onboarding/callback")
  missing=()
  for uri in "${wanted[@]}"; do
    if printf '%s\n' "$existing" | grep -qxF "$uri"; then
      echo "Redirect URI $uri already registered"
    else
      missing+=("$uri")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2086 # one URI per word on purpose
    az ad app update --id "$app_id" --web-redirect-uris $existing "${missing[@]}"
    echo "Registered redirect URIs ${missing[*]}"
  fi
else
  echo "AZURE_FUNCTION_APP_URL is unknown: run azd provision, then this script again to register the sign-in and consent redirect URIs" >&2
fi

# Only people (or apps) assigned a role get a token for the rotator's API in the MSP tenant: the service principal's
# appRoleAssignmentRequired (Graph servicePrincipal resource type: "Specifies whether users or other service
# principals need to be granted an app role assignment for this service principal before users can sign in or apps
# can get tokens"); Entra answers AADSTS50105 to an unassigned person and AADSTS501051 to an unassigned application.
sp_id=$(az ad sp show --id "$app_id" --query id -o tsv 2>/dev/null || true)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
fi
az ad sp update --id "$sp_id" --set appRoleAssignmentRequired=true

# The partner admin's sign-in for bulk onboarding (shared/adapters/delegated.py) asks the partner tenant for Graph's
# DelegatedAdminRelationship.Read.All (admin consent required, Graph permissions reference) and then redeems its refresh
# token for Partner Center's user_impersonation: without consent to both Entra answers AADSTS65001. Both are granted
# here once, for all users of the partner tenant (oauth2PermissionGrant, consentType AllPrincipals): Partner Center's
# "Partner API authentication" has its app (fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd) granted user_impersonation with
# "Grant admin consent" in the partner tenant, and CIPP (KelvinTegelaar/CIPP-API Add-CIPPDelegatedPermission) makes
# the same grants through Graph, creating Partner Center's service principal where missing. They are NOT put in the
# registration's requiredResourceAccess: a customer's admin consent (`.default`) asks for every resource listed there
# and fails with AADSTS650052 in a tenant without Partner Center's service principal (CIPP strips Partner Center from
# what it pushes to customers for that reason). An Application Administrator may grant delegated permissions of any
# API (Entra "Grant tenant-wide admin consent to an application", prerequisites). Re-running adds only missing scopes.
PARTNER_CENTER_APP_ID=fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd
SIGN_IN_GRAPH_SCOPES="DelegatedAdminRelationship.Read.All User.Read offline_access openid profile"
grant_delegated() {  # grant_delegated RESOURCE_APP_ID NAME "SCOPE ..."
  local resource_id grant_id current scope merged grants mine
  resource_id=$(az ad sp show --id "$1" --query id -o tsv 2>/dev/null || true)
  if [ -z "$resource_id" ]; then
    resource_id=$(az ad sp create --id "$1" --query id -o tsv)
    echo "Created the service principal of $2 in the partner tenant"
  fi
  grants="https://graph.microsoft.com/v1.0/servicePrincipals/$sp_id/oauth2PermissionGrants"
  mine="value[?resourceId=='$resource_id' && consentType=='AllPrincipals']"
  grant_id=$(az rest --method GET --uri "$grants" --query "$mine.id | [0]" -o tsv)
  if [ -z "$grant_id" ]; then
    az rest --method POST --uri "https://graph.microsoft.com/v1.0/oauth2PermissionGrants" \
      --headers Content-Type=application/json --output none --body "{\"clientId\": \"$sp_id\",
      \"consentType\": \"AllPrincipals\", \"resourceId\": \"$resource_id\", \"scope\": \"$3\"}"
    echo "Admin consent granted in the partner tenant: $2 $3"
    return
  fi
  current=$(az rest --method GET --uri "$grants" --query "$mine.scope | [0]" -o tsv)
  merged=$current
  for scope in $3; do
    [[ " $current " == *" $scope "* ]] || merged="${merged:+$merged }$scope"
  done
  if [ "$merged" = "$current" ]; then
    echo "Admin consent in the partner tenant already covers $2 $3"
  else
    az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/oauth2PermissionGrants/$grant_id" \
      --headers Content-Type=application/json --output none --body "{\"scope\": \"$merged\"}"
    echo "Admin consent in the partner tenant extended: $2 $merged"
  fi
}
if [ "$sign_in_only" = false ]; then
  grant_delegated "$GRAPH_APP_ID" "Microsoft Graph" "$SIGN_IN_GRAPH_SCOPES"
  grant_delegated "$PARTNER_CENTER_APP_ID" "Partner Center" user_impersonation
fi

# The federated credential: tokens the managed identity gets for api://AzureADTokenExchange (issued by the MSP tenant,
# subject = the identity's object id) are accepted as this app's client assertion, by the rotator (customer tenants)
# and by App Service Authentication (the browser sign-in). A credential of that name with another subject (the
# identity was recreated, e.g. after azd down) is updated: the old subject no longer exists.
issuer="https://login.microsoftonline.com/$msp_tenant_id/v2.0"
credential="{
    \"name\": \"$credential_name\",
    \"issuer\": \"$issuer\",
    \"subject\": \"$principal_id\",
    \"audiences\": [\"api://AzureADTokenExchange\"],
    \"description\": \"The sync-secret rotator's user-assigned managed identity\"
  }"
trusted=$(az ad app federated-credential show --id "$app_id" --federated-credential-id "$credential_name" \
  --query "[issuer, subject]" -o tsv 2>/dev/null || true)
if [ -z "$trusted" ]; then
  az ad app federated-credential create --id "$app_id" --parameters "$credential" --output none
  echo "Created federated credential $credential_name (issuer $issuer, subject $principal_id)"
elif [ "$trusted" = "$(printf '%s\n%s' "$issuer" "$principal_id")" ]; then
  echo "Federated credential $credential_name already trusts $principal_id"
else
  az ad app federated-credential update --id "$app_id" --federated-credential-id "$credential_name" \
    --parameters "$credential" --output none
  echo "Updated federated credential $credential_name to trust $principal_id"
fi

if command -v azd >/dev/null 2>&1; then
  if [ "$sign_in_only" = true ]; then
    azd env set AUTH_CLIENT_ID "$app_id"
    echo "azd environment updated: run 'azd provision' to apply AUTH_CLIENT_ID."
  else
    azd env set IDENTITY_MODE federated
    azd env set MSP_APP_CLIENT_ID "$app_id"
    echo "azd environment updated: run 'azd provision' to apply IDENTITY_MODE and MSP_APP_CLIENT_ID."
  fi
fi
echo
echo "Sign-in: assign people the app roles in the MSP tenant (infra/README.md, 'Sign-in'):"
echo "  Enterprise applications > $display_name > Users and groups > Add assignment > Rotator.Read or Rotator.Operate"
echo "  Then: a browser opens ${app_url%/api}/api/dashboard; a CLI token: az account get-access-token --resource api://$app_id"
echo "  Automation: its own app registration with an app role assignment (infra/README.md, 'Automation')."
[ "$sign_in_only" = false ] || exit 0
echo "Consent, once per customer tenant (a Global or Privileged Role Administrator of that tenant): the link"
echo "  from 'scripts/onboard-customer.sh consent-url <tenant>' or GET /api/consent-url/<tenant> (it carries"
echo "  the registered redirect_uri and a signed state)."

if [ "$role" = "Application.ReadWrite.OwnedBy" ]; then
  echo "Then, in that tenant, make the app's service principal an owner of the Proofpoint sync app:"
  echo "  az ad app owner add --id <proofpoint-sync-app-id> --owner-object-id <object id of $app_id's service principal there>"
fi
