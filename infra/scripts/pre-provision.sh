#!/bin/sh
# azd preprovision hook: decides how the Key Vault is created (KEY_VAULT_CREATE_MODE, the
# keyVaultCreateMode parameter of main.bicep).
#
# The vault has purge protection: after `azd down` it stays soft-deleted for 90 days and keeps its
# name, which the same azd environment computes again (uniqueString of subscription, environment and
# location). Creating a vault of that name then fails (a deleted vault with this name exists), and
# purging it is impossible by design. So a redeploy RECOVERS the deleted vault, with every rotated
# secret and destination credential it held: when the vault of the last deployment
# (AZURE_KEY_VAULT_NAME, kept in the azd environment) is soft-deleted, this sets `recover`; in every
# other case `default` (a PUT with createMode recover fails when there is nothing to recover).
# With no az CLI or no earlier deployment it sets `default`; set KEY_VAULT_CREATE_MODE by hand then.
set -eu
name="${AZURE_KEY_VAULT_NAME:-}"
mode=default
if [ -n "$name" ] && command -v az >/dev/null 2>&1; then
  deleted=$(az keyvault show-deleted --name "$name" --query name -o tsv 2>/dev/null || true)
  if [ "$deleted" = "$name" ]; then
    mode=recover
  fi
fi
if [ "$mode" = recover ]; then
  echo "Key Vault $name is soft-deleted (azd down): this deployment recovers it with its secrets."
fi
if [ "${KEY_VAULT_CREATE_MODE:-}" != "$mode" ]; then
  azd env set KEY_VAULT_CREATE_MODE "$mode"
fi
echo "KEY_VAULT_CREATE_MODE=$mode"
