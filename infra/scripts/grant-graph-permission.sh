#!/usr/bin/env bash
# Single-tenant mode (IDENTITY_MODE=managed-identity): grants the rotator's managed identity the
# Microsoft Graph application permissions it needs (its own role, and AuditLog.Read.All and Directory.Read.All for
# the sign-in log). Bicep cannot do this: app role assignments are
# Microsoft Graph objects, not Azure resources.
#
# Run once, by a Privileged Role Administrator (or Global Administrator) of the tenant, after
# `azd provision`. Idempotent: an existing assignment is left as it is.
#
# Usage: infra/scripts/grant-graph-permission.sh [--all] [--owner-of APP_ID ...]
#   --all            grant Application.ReadWrite.All instead of the least-privilege
#                    Application.ReadWrite.OwnedBy.
#   --owner-of ID    with OwnedBy: also add the identity as owner of the Proofpoint sync app
#                    registration with this appId (repeatable); OwnedBy only reaches owned apps.
# The identity's object id comes from the azd environment (AZURE_IDENTITY_PRINCIPAL_ID) or from
# the environment variable of the same name.
set -euo pipefail

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
role=Application.ReadWrite.OwnedBy
owned_apps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --all) role=Application.ReadWrite.All; shift ;;
    --owner-of) owned_apps+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

principal_id="${AZURE_IDENTITY_PRINCIPAL_ID:-}"
if [ -z "$principal_id" ] && command -v azd >/dev/null 2>&1; then
  principal_id=$(azd env get-value AZURE_IDENTITY_PRINCIPAL_ID 2>/dev/null || true)
fi
[ -n "$principal_id" ] || { echo "AZURE_IDENTITY_PRINCIPAL_ID is unknown: run azd provision first" >&2; exit 1; }

graph_sp_id=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv)
# Beside the rotator's own role, the sign-in log's two: retirement waits for evidence that the new secret is in use
# where the log is readable (List signIns needs both; signin-list.md). Without an Entra ID P1/P2 licence the log
# stays closed and retirement relies on Proofpoint's own sync (docs/evidence.md).
for permission in "$role" AuditLog.Read.All Directory.Read.All; do
  role_id=$(az ad sp show --id "$GRAPH_APP_ID" \
    --query "appRoles[?value=='$permission' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)
  [ -n "$role_id" ] || { echo "Graph has no application role $permission" >&2; exit 1; }
  existing=$(az rest --method GET \
    --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$principal_id/appRoleAssignments" \
    --query "value[?appRoleId=='$role_id'].id | [0]" -o tsv)
  if [ -n "$existing" ]; then
    echo "Already granted: $permission to $principal_id"
  else
    az rest --method POST \
      --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$principal_id/appRoleAssignments" \
      --headers "Content-Type=application/json" \
      --body "{\"principalId\": \"$principal_id\", \"resourceId\": \"$graph_sp_id\", \"appRoleId\": \"$role_id\"}" \
      --output none
    echo "Granted: $permission to $principal_id"
  fi
done

for app_id in "${owned_apps[@]}"; do
  if az ad app owner list --id "$app_id" --query "[?id=='$principal_id'].id | [0]" -o tsv | grep -q .; then
    echo "Already owner of $app_id"
  else
    az ad app owner add --id "$app_id" --owner-object-id "$principal_id"
    echo "Added as owner of $app_id"
  fi
done
