// The rotator itself: a Linux Function App on the Flex Consumption plan, Python 3.11, running as the
// user-assigned managed identity. The runtime's storage, the deployment package and telemetry are
// all reached through that identity: no connection string, account key or instrumentation key.

@description('Name of the function app (also its host name: https://<name>.azurewebsites.net).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region (must offer Flex Consumption).')
param location string

@description('Tags applied to the plan and the app; the app also gets azd-service-name.')
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account (runtime, deployment package, tables).')
param storageAccountName string

@description('Blob container of the deployment package.')
param deploymentContainerName string

@description('Connection string of Application Insights (ingestion requires an Entra ID token; kept out of deployment history all the same).')
@secure()
param applicationInsightsConnectionString string

@description('The product\'s own settings (those in shared/settings.py), merged with the runtime settings below.')
param appSettings object

@description('Most instances Flex Consumption may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is a preview limited to some regions; not enabled by default.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Settings the Functions host and platform read (never the product's code): identity-based storage,
// Entra-authenticated telemetry. FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION must NOT be
// set on Flex Consumption (functionAppConfig.runtime replaces them; the platform rejects them).
var runtimeSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

var appSettingsList = [for setting in items(union(runtimeSettings, appSettings)): {
  name: setting.key
  value: setting.value
}]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates would break Event Grid's webhook delivery and the operators' HTTP calls; HTTP functions use FUNCTION-level keys over HTTPS.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero per execution; standing instances (alwaysReady) would be billed around the clock for a job that runs once a day.
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check; liveness is watched by the "timer pass missing" alert rule instead (app/alerts.bicep).
  // checkov:skip=CKV_AZURE_222: Public access is needed for Event Grid delivery and operators; put the app in a VNet with a private endpoint to close it.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'rotator'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: appSettingsList
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployment goes through azd (Entra ID); basic (user name and password) publishing stays off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the function app.')
output name string = functionApp.name

@description('Resource id of the function app.')
output resourceId string = functionApp.id

@description('Default host name of the function app.')
output defaultHostName string = functionApp.properties.defaultHostName
