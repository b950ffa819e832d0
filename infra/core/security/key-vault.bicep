// The vault holding every rotated secret (one secret per target, versions tagged by stage) and the
// destination credentials (Proofpoint admin, portal auth). RBAC mode only: no access policies.
// Purge protection and 90-day soft delete: a deleted secret can always be recovered, and nobody
// (not even an owner) can purge it early.

@description('Name of the Key Vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Network rules of the vault (Microsoft.KeyVault/vaults networkAcls). The default allows any network, with Entra ID RBAC as the gate: Flex Consumption without VNet integration has no fixed outbound address. With VNet integration, pass defaultAction Deny and the subnet in virtualNetworkRules.')
param networkAcls object = {
  bypass: 'AzureServices'
  defaultAction: 'Allow'
  ipRules: []
  virtualNetworkRules: []
}

@description('Whether the vault accepts traffic from public networks (subject to networkAcls).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('default: create the vault (or update it). recover: recover the soft-deleted vault of this name, with its secrets (after `azd down`; purge protection keeps the name taken for 90 days). infra/scripts/pre-provision.sh chooses.')
@allowed([
  'default'
  'recover'
])
param createMode string = 'default'

@description('Log Analytics workspace that receives the vault\'s audit events (who read or wrote which secret).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Network rules are the networkAcls parameter; the default allows any network because Flex Consumption without VNet integration has no fixed outbound address. Access needs an Entra ID role on the vault.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109; publicNetworkAccess is a parameter.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    createMode: createMode
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: networkAcls
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

@description('Name of the vault.')
output name string = vault.name

@description('Resource id of the vault.')
output resourceId string = vault.id

@description('URI of the vault, e.g. https://<name>.vault.azure.net/: KEY_VAULT_URL of the app.')
output uri string = vault.properties.vaultUri
