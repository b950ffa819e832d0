#!/usr/bin/env bash
# MSP mode (IDENTITY_MODE=federated): creates (or updates) the MSP's multi-tenant app registration
# and a federated identity credential through which it trusts the rotator's user-assigned managed
# identity. The rotator then gets tokens for the app in each customer tenant with no secret of its
# own. Bicep cannot do this: app registrations are Microsoft Graph objects.
#
# Run once in the MSP's tenant by an Application Administrator (or Cloud Application Administrator),
# after `azd provision`. Idempotent: finds the app by display name and the credential by name.
# Afterwards: `azd provision` (sets MSP_APP_CLIENT_ID and IDENTITY_MODE on the app), and in each
# customer tenant an admin grants consent through the printed URL.
#
# Operators sign in to the rotator's API through the same app (App Service Authentication, see
# infra/README.md): this script also defines its app roles Rotator.Read and Rotator.Operate (fixed ids,
# so re-running changes nothing), sets its identifier URI api://<client id> (the token audience), makes
# role assignment required on its service principal in the MSP tenant (only assigned people get a
# token) and registers the web redirect URI https://<function app host>/api/consent, to which Entra's
# admin-consent endpoint returns (it refuses a redirect_uri that is not registered, AADSTS500113/50011).
#
# Usage: infra/scripts/create-msp-app.sh [--name DISPLAY_NAME] [--all]
#   --name  display name of the app (default: "Sync-secret rotator")
#   --all   request Application.ReadWrite.All instead of Application.ReadWrite.OwnedBy
set -euo pipefail

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
display_name="Sync-secret rotator"
role=Application.ReadWrite.OwnedBy
credential_name=rotator-managed-identity
while [ $# -gt 0 ]; do
  case "$1" in
    --name) display_name="$2"; shift 2 ;;
    --all) role=Application.ReadWrite.All; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
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

principal_id=$(env_value AZURE_IDENTITY_PRINCIPAL_ID)
[ -n "$principal_id" ] || { echo "AZURE_IDENTITY_PRINCIPAL_ID is unknown: run azd provision first" >&2; exit 1; }
msp_tenant_id=$(az account show --query tenantId -o tsv)

app_id=$(az ad app list --display-name "$display_name" --query "[0].appId" -o tsv)
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$display_name" --sign-in-audience AzureADMultipleOrgs \
    --query appId -o tsv)
  echo "Created app registration $display_name ($app_id)"
else
  echo "Found app registration $display_name ($app_id)"
fi

role_id=$(az ad sp show --id "$GRAPH_APP_ID" \
  --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
[ -n "$role_id" ] || { echo "Graph has no application role $role" >&2; exit 1; }
az ad app update --id "$app_id" --sign-in-audience AzureADMultipleOrgs \
  --required-resource-accesses "[{\"resourceAppId\": \"$GRAPH_APP_ID\", \"resourceAccess\": [{\"id\": \"$role_id\", \"type\": \"Role\"}]}]"

# App roles of the rotator's API (shared/entrypoints/access.py). The ids are fixed: Entra refuses to
# delete or change an enabled role, and the same ids make every run identical.
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

# The admin-consent callback (issue 9): https://<function app host>/api/consent as a web redirect URI,
# added to the ones already registered (never replacing them).
app_url=$(env_value AZURE_FUNCTION_APP_URL)
if [ -n "$app_url" ]; then
  consent_uri="${app_url%/}/consent"
  existing=$(az ad app show --id "$app_id" --query "web.redirectUris" -o tsv)
  if printf '%s\n' "$existing" | grep -qxF "$consent_uri"; then
    echo "Redirect URI $consent_uri already registered"
  else
    # shellcheck disable=SC2086 # one URI per word on purpose
    az ad app update --id "$app_id" --web-redirect-uris $existing "$consent_uri"
    echo "Registered redirect URI $consent_uri"
  fi
else
  echo "AZURE_FUNCTION_APP_URL is unknown: run azd provision, then this script again to register the consent redirect URI" >&2
fi

# Only people (or apps) assigned a role get a token for the rotator's API in the MSP tenant.
sp_id=$(az ad sp show --id "$app_id" --query id -o tsv 2>/dev/null || true)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
fi
az ad sp update --id "$sp_id" --set appRoleAssignmentRequired=true

# The federated credential: tokens the managed identity gets for api://AzureADTokenExchange (issued by
# the MSP tenant, subject = the identity's object id) are accepted as this app's client assertion.
issuer="https://login.microsoftonline.com/$msp_tenant_id/v2.0"
if az ad app federated-credential show --id "$app_id" --federated-credential-id "$credential_name" >/dev/null 2>&1; then
  echo "Federated credential $credential_name already exists"
else
  az ad app federated-credential create --id "$app_id" --parameters "{
    \"name\": \"$credential_name\",
    \"issuer\": \"$issuer\",
    \"subject\": \"$principal_id\",
    \"audiences\": [\"api://AzureADTokenExchange\"],
    \"description\": \"The sync-secret rotator's user-assigned managed identity\"
  }" --output none
  echo "Created federated credential $credential_name (issuer $issuer, subject $principal_id)"
fi

if command -v azd >/dev/null 2>&1; then
  azd env set IDENTITY_MODE federated
  azd env set MSP_APP_CLIENT_ID "$app_id"
  echo "azd environment updated: run 'azd provision' to apply IDENTITY_MODE and MSP_APP_CLIENT_ID."
fi
echo
echo "Sign-in: assign people the app roles in the MSP tenant (infra/README.md, 'Operators and app roles'):"
echo "  Enterprise applications > $display_name > Users and groups > Add assignment > Rotator.Read or Rotator.Operate"
echo "Consent, once per customer tenant (a Global or Privileged Role Administrator of that tenant): the link"
echo "  from 'scripts/onboard-customer.sh consent-url <tenant>' or GET /api/consent-url/<tenant> (it carries"
echo "  the registered redirect_uri and a signed state)."

if [ "$role" = "Application.ReadWrite.OwnedBy" ]; then
  echo "Then, in that tenant, make the app's service principal an owner of the Proofpoint sync app:"
  echo "  az ad app owner add --id <proofpoint-sync-app-id> --owner-object-id <object id of $app_id's service principal there>"
fi
