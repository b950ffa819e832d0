#!/bin/sh
# azd postprovision hook: says what Bicep could not do and which script does it. Changes nothing.
set -eu
mode="${IDENTITY_MODE:-managed-identity}"
echo
echo "Sync-secret rotator provisioned: function app ${AZURE_FUNCTION_APP_NAME:-?}, vault ${AZURE_KEY_VAULT_URL:-?}"
echo "Remaining one-time steps (infra/README.md, 'Post-deployment steps'):"
if [ "$mode" = "federated" ]; then
  echo "  - MSP mode: infra/scripts/create-msp-app.sh (multi-tenant app + federated credential), then azd provision,"
  echo "    then an admin of each customer tenant consents to the app (the script prints the consent URL)."
else
  echo "  - Single tenant: infra/scripts/grant-graph-permission.sh (a Privileged Role Administrator runs it once)."
fi
if [ "${ENABLE_KEYVAULT_EVENTS:-false}" != "true" ]; then
  echo "  - After the first 'azd deploy': azd env set ENABLE_KEYVAULT_EVENTS true && azd provision"
  echo "    (subscribes the push function to new secret versions; needs the deployed function)."
fi
echo "  - Store the Proofpoint admin and portal credentials in the vault (az keyvault secret set ...)."
