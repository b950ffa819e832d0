#!/usr/bin/env bash
# Onboards one customer tenant to the sync-secret rotator (federated, multi-tenant mode):
#   1. prints the admin-consent link of the MSP's multi-tenant app, made by the rotator (GET /api/consent-url):
#      it carries the registered redirect_uri and a state the rotator signed; a customer Global Admin opens it
#      once and Entra returns them to the rotator's consent page, which records the consent and lists the
#      Proofpoint app registrations it finds;
#   2. as an admin signed in to the customer tenant (az login --tenant <customer> --allow-no-subscriptions):
#      checks the consent, finds the Proofpoint sync app, makes the MSP app's service principal its owner
#      (what Application.ReadWrite.OwnedBy needs);
#   3. registers the target through the rotator's API and asks for a dry run.
# Docs: docs/onboarding.md. Nothing here reads or prints a secret.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $0 <consent-url|assign|register|all> --tenant <customer tenant id> [options]

  --tenant ID           customer's Entra tenant id (required)
  --msp-app ID          client id of the MSP's multi-tenant app (default: \$MSP_APP_CLIENT_ID)
  --app-id ID           the Proofpoint sync app's application (client) id (default: discovered by name)
  --owner-object-id ID  single-tenant mode: make this service principal (the managed identity) the owner instead
  --customer NAME       customer name shown in status (register)
  --domain DOMAIN       the customer's primary domain in Proofpoint Essentials (register)
  --stack STACK         Proofpoint stack: us1..us5 or eu1 (register; default us1)
  --account-secret NAME Key Vault secret holding the Proofpoint admin JSON (register; default proofpoint-api-account)
  --url URL             the function app, e.g. https://func-xyz.azurewebsites.net (default: \$ROTATOR_URL)
Environment (consent-url, register: the rotator's API at --url):
  ROTATOR_TOKEN         an Entra access token for the rotator's API (the caller needs the app role Rotator.Operate):
                        a person: az account get-access-token --resource api://<MSP app client id> --query accessToken -o tsv
                        automation (its own service principal, client credentials): see infra/README.md
                        Unset: the script asks az for one (--resource api://\$MSP_APP_CLIENT_ID).
USAGE
}

command=${1:-}; shift || true
tenant="" msp_app=${MSP_APP_CLIENT_ID:-} app_id="" owner="" customer="" domain="" stack="us1"
account_secret="proofpoint-api-account" url=${ROTATOR_URL:-}
patterns=("PPE" "Proofpoint" "ModusCloud")
while [ $# -gt 0 ]; do
  case "$1" in
    --tenant) tenant=$2; shift 2 ;;
    --msp-app) msp_app=$2; shift 2 ;;
    --app-id) app_id=$2; shift 2 ;;
    --owner-object-id) owner=$2; shift 2 ;;
    --customer) customer=$2; shift 2 ;;
    --domain) domain=$2; shift 2 ;;
    --stack) stack=$2; shift 2 ;;
    --account-secret) account_secret=$2; shift 2 ;;
    --url) url=${2%/}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
guid='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
[[ $tenant =~ $guid ]] || { echo "--tenant must be the customer's tenant id (a GUID)" >&2; usage >&2; exit 2; }
graph=https://graph.microsoft.com/v1.0

consent_url() {
  # Only the rotator can make the link: its state is signed with a key in its Key Vault, and its redirect_uri is
  # the one registered on the MSP app (Entra refuses a link without it: AADSTS500113 / AADSTS50011).
  local reply
  check_api
  reply=$(api GET "consent-url/$tenant") || { echo "the rotator did not make a consent link: $reply" >&2; exit 1; }
  printf '%s' "$reply" | python3 -c '
import json, sys
link = json.load(sys.stdin)
print("Ask a Global Administrator of the customer tenant to open (once) and accept:")
print("  " + link["url"])
print("Valid until " + link["expires"] + "; Entra then returns them to " + link["redirectUri"] + ".")
if link.get("consentedAt"):
    print("(This tenant consented already on " + link["consentedAt"] + ".)")'
}

assign() {
  local signed_in
  signed_in=$(az account show --query tenantId -o tsv)
  [ "$signed_in" = "$tenant" ] || {
    echo "signed in to tenant $signed_in; run: az login --tenant $tenant --allow-no-subscriptions" >&2; exit 1; }
  if [ -z "$owner" ]; then
    [[ $msp_app =~ $guid ]] || { echo "--msp-app (or MSP_APP_CLIENT_ID) is required" >&2; exit 2; }
    owner=$(az ad sp show --id "$msp_app" --query id -o tsv 2>/dev/null) || {
      echo "the MSP app has no service principal in $tenant: admin consent is missing;" \
        "send the link from: $0 consent-url --tenant $tenant" >&2; exit 1; }
    local roles
    roles=$(az rest --method GET --url "$graph/servicePrincipals/$owner/appRoleAssignments" \
      --query "length(value)" -o tsv)
    [ "${roles:-0}" -gt 0 ] || { echo "consent granted no Graph application permission; consent again"; exit 1; }
  fi
  if [ -z "$app_id" ]; then
    local filter="" p
    for p in "${patterns[@]}"; do filter+="${filter:+ or }startswith(displayName,'$p')"; done
    echo "Proofpoint-like app registrations in $tenant:"
    az ad app list --filter "$filter" --query "[].{appId:appId, name:displayName}" -o table
    mapfile -t found < <(az ad app list --filter "$filter" --query "[].appId" -o tsv)
    [ "${#found[@]}" -eq 1 ] || { echo "found ${#found[@]}; pass --app-id <appId> to choose" >&2; exit 1; }
    app_id=${found[0]}
  fi
  local object_id
  object_id=$(az ad app show --id "$app_id" --query id -o tsv)
  if az rest --method GET --url "$graph/applications/$object_id/owners?\$select=id" --query "value[].id" -o tsv \
      | grep -qx "$owner"; then
    echo "service principal $owner already owns app $app_id"
  else
    # A service principal as owner: the Graph call, since the portal only offers users.
    az rest --method POST --url "$graph/applications/$object_id/owners/\$ref" \
      --headers "Content-Type=application/json" \
      --body "{\"@odata.id\": \"$graph/directoryObjects/$owner\"}"
    echo "service principal $owner now owns app $app_id (Application.ReadWrite.OwnedBy applies to it)"
  fi
  echo "APP_ID=$app_id"
}

auth=""
check_api() {  # run in the script's own shell (not in $(...)), so that its exit stops the script
  [ -n "$url" ] || { echo "--url (or ROTATOR_URL) is required" >&2; exit 2; }
  # App Service Authentication takes an Entra token; there are no function keys (every route is anonymous at the
  # Functions host and the code checks the caller's app role).
  local token=${ROTATOR_TOKEN:-}
  if [ -z "$token" ] && [ -n "$msp_app" ] && command -v az >/dev/null 2>&1; then
    token=$(az account get-access-token --resource "api://$msp_app" --query accessToken -o tsv) || token=""
  fi
  [ -n "$token" ] || { echo "ROTATOR_TOKEN (an Entra access token for the rotator's API) is required," \
    "or MSP_APP_CLIENT_ID with a signed-in az" >&2; exit 2; }
  auth="Authorization: Bearer $token"
}

api() {  # api METHOD PATH [BODY]
  # The credential goes in a header read from a config file descriptor, so it is not on the command line (ps)
  # or in the output.
  curl --silent --show-error --fail-with-body -X "$1" "$url/api/$2" \
    --config <(printf 'header = "%s"\n' "$auth") \
    -H "Content-Type: application/json" ${3:+--data "$3"}
  echo
}

register() {
  check_api
  [[ $app_id =~ $guid ]] || { echo "--app-id is required to register (assign prints it)" >&2; exit 2; }
  local destinations="[]"
  if [ -n "$domain" ]; then
    destinations=$(printf '[{"name": "proofpoint", "kind": "proofpoint", "options": {"stack": "%s", "domain": "%s", "account_secret": "%s"}}]' \
      "$stack" "$domain" "$account_secret")
  fi
  api PUT "targets/$tenant/$app_id" \
    "$(printf '{"customer": "%s", "destinations": %s}' "${customer//\"/}" "$destinations")"
  echo "Dry run (what the rotator would do; changes nothing):"
  api POST rotations "$(printf '{"tenantId": "%s", "appId": "%s", "dryRun": true}' "$tenant" "$app_id")"
}

case "$command" in
  consent-url) consent_url ;;
  assign) assign ;;
  register) register ;;
  all) consent_url; read -r -p "Press Enter once consent is granted... " _; assign; register ;;
  *) usage >&2; exit 2 ;;
esac
