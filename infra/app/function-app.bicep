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

@description('Blob endpoint of the storage account, e.g. https://<account>.blob.core.windows.net/ (the runtime\'s blobs and the deployment package). A parameter, not a read of the account inside this module: see the app settings below.')
param storageBlobEndpoint string

@description('Queue endpoint of the storage account (the runtime\'s queues).')
param storageQueueEndpoint string

@description('Table endpoint of the storage account (the runtime\'s tables; the rotator\'s own tables use STATE_TABLES_ENDPOINT).')
param storageTableEndpoint string

@description('Blob container of the deployment package.')
param deploymentContainerName string

@description('Connection string of Application Insights (ingestion requires an Entra ID token; kept out of deployment history all the same).')
@secure()
param applicationInsightsConnectionString string

@description('The product\'s own settings (those in shared/settings.py), merged with the runtime settings below.')
param appSettings object

@description('Client id of the Entra app operators sign in through (App Service Authentication): the MSP\'s app, which defines the app roles Rotator.Read and Rotator.Operate (infra/scripts/create-msp-app.sh). Empty: no identity provider yet, no request carries a principal and every operator route answers 401.')
param authClientId string = ''

// Flex Consumption: "By default, apps running in a Flex Consumption plan have limit of 100 overall instances.
// Currently the lowest maximum instance count value is 1, and the highest supported maximum instance count value is
// 1000", and it "applies to on-demand instances in each per-function scale group (function group) rather than to the
// app's combined instances" (learn.microsoft.com/azure/azure-functions/event-driven-scaling, "Limit scale-out").
// main.bicep passes a lower cap (the Key Vault write budget).
@description('Most on-demand instances each function group may scale out to (Flex Consumption: default 100, allowed 1 to 1000).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is GA on Flex Consumption, but a zone-redundant plan keeps at least two always-ready instances per function group, billed around the clock, for a job that runs once a day; set zoneRedundant: true where that cost is wanted.
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
// OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID is read by App Service Authentication, not by the code: the browser sign-in
// (authorization code flow) proves the MSP app with a client assertion from this managed identity, which the app
// trusts through its federated credential (infra/scripts/create-msp-app.sh), instead of a client secret. Its value is
// the client id of the identity, not of the app (learn.microsoft.com/azure/app-service/configure-authentication-
// provider-aad, "Use a managed identity instead of a secret"). The docs ask for a slot-sticky setting; Flex
// Consumption has no deployment slots.
var runtimeSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates would break Event Grid delivery and the operators' HTTP calls; callers are authenticated by Entra ID (App Service Authentication, authsettingsV2 below) and Event Grid by the extension's system key.
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
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
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

// The app settings, as one object on the site's `appsettings` config (what Azure Verified Modules'
// avm/res/web/site does with its config child module). No `for` builds them: a variable's for-expression
// must be computable at the start of the deployment (Bicep BCP178), and these values are not (the
// endpoints and the product settings come from other modules' outputs). An object property takes them
// as they are. This PUT replaces every app setting of the site on each deployment.
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; the site itself is checked (Easy Auth is this authsettingsV2 resource).
  // checkov:skip=CKV_AZURE_63: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; HTTP logging is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_65: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; detailed error logging is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_66: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; failed request tracing is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_80: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; the runtime stack is set on the site (Python on Flex Consumption).
  // checkov:skip=CKV_AZURE_88: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; storage mounts are a site property, checked on the site.
  // checkov:skip=CKV_AZURE_222: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; public network access is a site property (skipped there with its reason).
  parent: functionApp
  name: 'appsettings'
  properties: union(runtimeSettings, appSettings)
}

// App Service Authentication ("Easy Auth") in front of every HTTP function: the platform validates the
// caller's Entra ID token or sign-in session (issued by the MSP's tenant for the MSP's app) and injects the caller
// as the X-MS-CLIENT-PRINCIPAL header, which external requests cannot set while the module is enabled; the
// code reads the app roles (Rotator.Read, Rotator.Operate) from it (shared/entrypoints/access.py). Requests
// without a caller reach the code too (AllowAnonymous, easy-auth.json): the admin-consent callback, which trusts
// only its signed state, and the Event Grid extension endpoint, which the Functions host checks against the
// extension's system key (AzureFunction endpoint type, app/keyvault-events.bicep).
var authIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
// The platform's behaviour for unauthenticated callers, shared with the local host (python -m shared serve) so the
// two cannot drift: AllowAnonymous, the code decides (401 JSON for the API, a sign-in redirect for the dashboard).
var easyAuth = loadJsonContent('easy-auth.json')

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; the site itself is checked (Easy Auth is this authsettingsV2 resource).
  // checkov:skip=CKV_AZURE_63: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; HTTP logging is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_65: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; detailed error logging is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_66: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; failed request tracing is a site property, checked on the site.
  // checkov:skip=CKV_AZURE_80: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; the runtime stack is set on the site (Python on Flex Consumption).
  // checkov:skip=CKV_AZURE_88: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; storage mounts are a site property, checked on the site.
  // checkov:skip=CKV_AZURE_222: Checkov reads every Microsoft.Web/sites/* resource as a site, but this is a config child resource, not a site; public network access is a site property (skipped there with its reason).
  parent: functionApp
  name: 'authsettingsV2'
  // One write to the site's configuration at a time: ARM deploys sibling resources in parallel, and parallel
  // writes to Microsoft.Web/sites/config race and lose settings (Azure/azure-dev PR 3125, "Serialize updates for
  // config-appsettings and config-logs"; Azure/reliable-web-app-pattern-dotnet PR 132). The identity provider
  // also names an app setting (clientSecretSettingName) that must exist before it is used.
  dependsOn: [
    appSettingsConfig
  ]
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: easyAuth.globalValidation
    httpSettings: easyAuth.httpSettings
    identityProviders: {
      azureActiveDirectory: {
        enabled: !empty(authClientId)
        registration: {
          clientId: authClientId
          openIdIssuer: authIssuer
          // The browser sign-in (/.auth/login/aad, the dashboard) redeems its authorization code with a client
          // assertion from the managed identity, not a secret (runtimeSettings above). Bearer tokens need none.
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
        }
      }
    }
    login: easyAuth.login
  }
}

// Deployment goes through azd (Entra ID); basic (user name and password) publishing stays off.
// These are writes to the site too: after the configuration, one at a time (as above).
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  dependsOn: [
    authSettings
  ]
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  dependsOn: [
    ftpCredentials
  ]
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
