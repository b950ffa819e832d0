// The sync-secret rotator, deployed once per MSP with `azd up`: a resource group holding the Function
// App (Flex Consumption, Linux, Python 3.11) and its user-assigned managed identity, its storage
// account (runtime, deployment package, registry/state/audit tables), the Key Vault, monitoring and
// alerting. Nothing here creates or holds a secret of the MSP's own: every access is by identity.
// What Bicep cannot do (Microsoft Graph permissions, the MSP's multi-tenant app) is scripted in
// infra/scripts/ and described in infra/README.md.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and location it seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of all resources; must offer Flex Consumption (e.g. eastus, eastus2, northeurope, westeurope, swedencentral, uksouth, australiaeast).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group; empty for rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the operator (user or group) who stores destination credentials in the vault; azd passes the signed-in user. Empty for none.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@minLength(3)
@description('E-mail address that receives the rotator\'s alerts (a shared operations mailbox is best).')
param alertEmail string

@description('How the rotator authenticates to Microsoft Graph: managed-identity (one tenant: the MSP\'s own) or federated (many customer tenants, through the MSP\'s multi-tenant app trusting the managed identity).')
@allowed([
  'managed-identity'
  'federated'
])
param identityMode string = 'managed-identity'

@description('Federated mode: client id of the MSP\'s multi-tenant app registration (infra/scripts/create-msp-app.sh prints it). Empty in managed-identity mode.')
param mspAppClientId string = ''

@description('Client id of the Entra app operators sign in through (App Service Authentication, app roles Rotator.Read and Rotator.Operate). Empty: the MSP app (mspAppClientId). With neither, the API answers 401 until infra/scripts/create-msp-app.sh has run and azd provision again. Another app needs what that script sets on the MSP app: the sign-in redirect URI, the federated credential of the managed identity (the browser sign-in uses it), version 2 tokens, the scope and the app roles.')
param authClientId string = ''


@description('NCRONTAB schedule of the timer pass (six fields, UTC). Default: daily at 06:00.')
param rotationSchedule string = '0 0 6 * * *'

@description('NCRONTAB schedule of the resume pass, which takes only rotations in flight further (six fields, UTC). Default: every 15 minutes.')
param resumeSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the credential inventory pass (every app and service principal credential of every customer tenant; six fields, UTC). Default: daily at 02:30.')
param inventorySchedule string = '0 30 2 * * *'

@description('Proofpoint Essentials API base URL; {stack} is replaced per customer (us1..us5, eu1).')
param proofpointBaseUrl string = 'https://{stack}.proofpointessentials.com/api/v1'

@description('Rotate when a secret has at most this many days left.')
@minValue(1)
@maxValue(365)
param renewBeforeDays int = 30

@description('Lifetime of a new secret in days (Entra ID allows at most 730; tenant policy may allow less).')
@minValue(1)
@maxValue(730)
param secretLifetimeDays int = 180

@description('Hours a superseded credential stays live after every destination confirmed the new one.')
@minValue(0)
@maxValue(2160)
param retireGraceHours int = 24

@description('Where Entra sign-in logs are readable: hours a superseded credential must not have signed in before it is removed (the log keeps 30 days).')
@minValue(1)
@maxValue(720)
param retireQuietHours int = 26

@description('Comma-separated display-name prefixes that identify Proofpoint sync app registrations during discovery.')
param discoveryNamePatterns string = 'PPE,Proofpoint,ModusCloud'

@description('Also remove expired credentials the rotator did not create.')
param retireUnmanagedExpired bool = false

@description('Name of a Key Vault secret holding the alert channel\'s webhook URL (a Teams Workflows webhook, a Slack incoming webhook or a JSON receiver); empty for e-mail only. (The name, not the URL: the URL is a secret and lives only in the vault.)')
param alertWebhookSecretName string = ''

@description('The alert channel\'s kind, required with alertWebhookSecretName: teams (Workflows webhook, Adaptive Cards), slack (incoming webhook) or json (the generic body of docs/api.md).')
@allowed([
  ''
  'teams'
  'slack'
  'json'
])
param alertWebhookKind string = ''

@description('The PSA that gets a ticket per customer and condition: connectwise, autotask, halopsa or webhook (a JSON receiver); empty for no tickets (docs/tickets.md).')
@allowed([
  ''
  'connectwise'
  'autotask'
  'halopsa'
  'webhook'
])
param ticketSystem string = ''

@description('Name of the Key Vault secret holding the ticket system\'s configuration and credentials as JSON (docs/tickets-<kind>.md); required with ticketSystem. (The name, not the value: the PSA key lives only in the vault.)')
param ticketSecretName string = ''

@description('Ticket routing as JSON {default, conditions, companies} (docs/tickets.md, "Routing"); empty for every condition that clears on the desk\'s defaults.')
param ticketRouting string = ''

@description('Where Entra returns a customer admin after consent; empty for https://<the app\'s default host>/api/consent (the URI infra/scripts/create-msp-app.sh registers). Set it when the app is reached through a custom domain, and register the same URI on the MSP app.')
param consentRedirectUri string = ''

@description('Hours a consent link (GET /api/consent-url/{tenantId}) stays valid.')
@minValue(1)
@maxValue(720)
param consentLinkHours int = 72

@description('Bulk onboarding: the destinations of every onboarded customer, a JSON list as PUT /api/targets takes them (option values may use {tenantId}, {customer}, {domain}, {stack}); empty for one Proofpoint destination with the account proofpointAccountSecretName.')
param onboardingDestinations string = ''

@description('Bulk onboarding: the primary domain of the MSP\'s own (channel) org in Proofpoint Essentials, whose customer orgs are matched to customer tenants by domain.')
param proofpointChannelDomain string = ''

@description('The Proofpoint Essentials stack of the MSP\'s channel org.')
@allowed([
  'us1'
  'us2'
  'us3'
  'us4'
  'us5'
  'eu1'
])
param proofpointChannelStack string = 'us1'

@description('Key Vault secret holding the MSP\'s Proofpoint Essentials account as JSON {user, password}.')
param proofpointAccountSecretName string = 'proofpoint-api-account'

@description('Days an offboarded customer\'s Key Vault versions are kept (tagged retain-until) before the daily timer deletes the secret; the vault\'s soft delete then keeps it recoverable for its own 90 days.')
@minValue(1)
@maxValue(3650)
param offboardRetentionDays int = 90

@description('Key Vault network rules (networkAcls). The default allows any network with Entra ID RBAC as the gate, because Flex Consumption without VNet integration has no fixed outbound address.')
param keyVaultNetworkAcls object = {
  bypass: 'AzureServices'
  defaultAction: 'Allow'
  ipRules: []
  virtualNetworkRules: []
}

@description('Whether the vault accepts traffic from public networks (subject to keyVaultNetworkAcls).')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('How the Key Vault is created: default, or recover (a soft-deleted vault of the same name exists after `azd down`). The azd preprovision hook (infra/scripts/pre-provision.sh) sets KEY_VAULT_CREATE_MODE.')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('Create the Event Grid system topic on the vault and subscribe the push function (endpoint type AzureFunction) to new secret versions. Set to true only after the code is deployed (Event Grid checks that the function exists): see infra/README.md.')
param enableKeyVaultEvents bool = false

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_ZRS'

// Flex Consumption's limit, per function group: default 100, allowed 1 to 1000 (learn.microsoft.com/azure/
// azure-functions/event-driven-scaling, "Limit scale-out"). Capped at 125 here so that the Key Vault write budget
// below gives every instance at least one write per 10 s and the instances together stay within the budget.
@description('Most on-demand instances each function group may scale out to (Flex Consumption\'s default is 100). At most 125: every instance gets KEY_VAULT_WRITES_PER_10S = 250 / (2 x this) secret writes, at least one.')
@minValue(1)
@maxValue(125)
param maximumInstanceCount int = 100

// The Key Vault write budget (KEY_VAULT_WRITES_PER_10S, per instance). Key Vault allows 300 secret creates per 10 s
// per vault (learn.microsoft.com/azure/key-vault/general/service-limits); the rotator keeps to 250, leaving 50 for
// operators storing destination credentials. Flex Consumption scales each function group on its own instances, up to
// maximumInstanceCount each ("per-function scaling", event-driven-scaling): two groups write secret versions, the
// queue worker (advance_target: every rotation of a pass) and the HTTP functions (POST /api/rotations?wait=true
// rotates inline; the consent signing key); the timers, the poison queue and the Event Grid push create none.
// So at most 2 x maximumInstanceCount instances write at once, each within its share: floor(250 / (2 x N)), which
// is at least 1 because N <= 125. tests/infra/test_key_vault_budget.py checks this for every allowed N.
var keyVaultWriteBudget = 250
var keyVaultWritingGroups = 2
var keyVaultWritesPerInstance = keyVaultWriteBudget / (keyVaultWritingGroups * maximumInstanceCount)

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  product: 'sync-secret-rotator'
}
var functionAppName = '${abbrs.webSitesFunctions}rotator-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './core/identity/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}rotator-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVault './core/security/key-vault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    networkAcls: keyVaultNetworkAcls
    publicNetworkAccess: keyVaultPublicNetworkAccess
    createMode: keyVaultCreateMode
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.name
    storageAccountName: storage.outputs.name
    workQueueName: storage.outputs.workQueueName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

// Every setting the code reads (shared/settings.py SETTINGS), except the local-only ones
// (STATE_TABLES_CONNECTION_STRING, WORK_QUEUE, CA_BUNDLE, DESTINATION_ALLOWED_HOSTS) and
// APPLICATIONINSIGHTS_CONNECTION_STRING, which the function-app module sets with the runtime settings.
// tests/infra/test_settings_drift.py keeps this list, the code and local.settings.example.json in step.
module functionApp './app/function-app.bicep' = {
  name: 'functionApp'
  scope: rg
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    maximumInstanceCount: maximumInstanceCount
    authClientId: !empty(authClientId) ? authClientId : mspAppClientId
    appSettings: {
      ROTATION_SCHEDULE: rotationSchedule
      RESUME_SCHEDULE: resumeSchedule
      INVENTORY_SCHEDULE: inventorySchedule
      INVENTORY_CONCURRENCY: '32'
      IDENTITY_MODE: identityMode
      AZURE_CLIENT_ID: identity.outputs.clientId
      MSP_APP_CLIENT_ID: mspAppClientId
      MSP_TENANT_ID: tenant().tenantId
      AZURE_AUTHORITY_HOST: environment().authentication.loginEndpoint
      GRAPH_BASE_URL: 'https://graph.microsoft.com/v1.0'
      PARTNER_CENTER_URL: 'https://api.partnercenter.microsoft.com'
      KEY_VAULT_URL: keyVault.outputs.uri
      STATE_TABLES_ENDPOINT: storage.outputs.tableEndpoint
      // The rotation work queue's identity-based connection (the queue trigger's `connection` and the timers).
      WORK_QUEUE__queueServiceUri: storage.outputs.queueEndpoint
      WORK_QUEUE__credential: 'managedidentity'
      WORK_QUEUE__clientId: identity.outputs.clientId
      PROOFPOINT_BASE_URL: proofpointBaseUrl
      RENEW_BEFORE_DAYS: string(renewBeforeDays)
      SECRET_LIFETIME_DAYS: string(secretLifetimeDays)
      RETIRE_GRACE_HOURS: string(retireGraceHours)
      RETIRE_QUIET_HOURS: string(retireQuietHours)
      SCAN_CONCURRENCY: '32'
      // Each instance's share of the vault's write limit (keyVaultWritesPerInstance above; README, "Key Vault's
      // write limit"), so the vault never gets more than 250 creates in 10 s however far the app scales out.
      KEY_VAULT_WRITES_PER_10S: string(keyVaultWritesPerInstance)
      PUSH_MAX_ATTEMPTS: '5'
      MANUAL_COOLDOWN_MINUTES: '60'
      STUCK_AFTER_HOURS: '24'
      VERIFY_TIMEOUT_SECONDS: '120'
      DISCOVERY_NAME_PATTERNS: discoveryNamePatterns
      RETIRE_UNMANAGED_EXPIRED: retireUnmanagedExpired ? 'true' : 'false'
      ALERT_WEBHOOK_SECRET_NAME: alertWebhookSecretName
      ALERT_WEBHOOK_KIND: alertWebhookKind
      // Tickets (docs/tickets.md): the PSA's credentials are read from the vault by this secret name, never set here.
      TICKET_SYSTEM: ticketSystem
      TICKET_SECRET_NAME: ticketSecretName
      TICKET_ROUTING: ticketRouting
      // Empty: the code uses https://<WEBSITE_HOSTNAME>/api/consent, the URI create-msp-app.sh registers.
      CONSENT_REDIRECT_URI: consentRedirectUri
      CONSENT_LINK_HOURS: string(consentLinkHours)
      ONBOARDING_CONCURRENCY: '8'
      ONBOARDING_RETENTION_DAYS: '90'
      ONBOARDING_DESTINATIONS: onboardingDestinations
      PROOFPOINT_CHANNEL_DOMAIN: proofpointChannelDomain
      PROOFPOINT_CHANNEL_STACK: proofpointChannelStack
      PROOFPOINT_ACCOUNT_SECRET: proofpointAccountSecretName
      OFFBOARD_RETENTION_DAYS: string(offboardRetentionDays)
    }
  }
}

module alerts './app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.insightsScheduledQueryRules}rotator-${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}rotator-${resourceToken}'
    location: location
    tags: tags
    alertEmail: alertEmail
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVaultEvents './app/keyvault-events.bicep' = if (enableKeyVaultEvents) {
  name: 'keyVaultEvents'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.name
    systemTopicName: '${abbrs.eventGridDomainsTopics}kv-${resourceToken}'
    location: location
    tags: tags
    functionAppName: functionApp.outputs.name
    storageAccountName: storage.outputs.name
  }
}

@description('Region of the deployment.')
output AZURE_LOCATION string = location

@description('Tenant of the deployment: the MSP\'s tenant.')
output AZURE_TENANT_ID string = tenant().tenantId

@description('Resource group holding everything.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Name of the function app.')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Base URL of the function app\'s HTTP API.')
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}/api'

@description('Client id of the rotator\'s managed identity (AZURE_CLIENT_ID).')
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Object id of the managed identity\'s service principal: gets the Graph permission (managed-identity mode) or is the subject of the federated credential (federated mode).')
output AZURE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('URI of the Key Vault (KEY_VAULT_URL).')
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri

@description('Name of the Key Vault.')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name

@description('Table endpoint of the storage account (STATE_TABLES_ENDPOINT).')
output AZURE_STATE_TABLES_ENDPOINT string = storage.outputs.tableEndpoint
