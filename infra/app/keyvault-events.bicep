// Optional: an Event Grid system topic on the vault, subscribed to the push function, so that a
// version of a customer's secret (`ppsync-<tenant>-<app>`) that a person wrote by hand is adopted:
// the function (shared/entrypoints/push.py, shared/protocol/adopt.py) proves the value with a
// client-credentials token for the customer's app, finds its Entra ID credential, and pushes it to the
// destinations through the rotation protocol within seconds, then makes it `current`; a value that
// gets no token raises an alert and is never pushed. The rotator's own writes (its `pending` versions,
// which carry its tags) raise events too, and are ignored: the rotation that wrote them pushes them
// once verified. Without this module a hand-written version is not adopted (the rotator keeps
// rotating its own secrets; docs/api.md, "Key Vault events").
//
// Event Grid delivers at least once: the function keys each event by the version it announces and
// records it as handled only once done; when it cannot finish (the target busy, a service failing) it
// fails the delivery, and the retry policy below delivers it again.
//
// The subscription's endpoint type is AzureFunction: Event Grid delivers to the function's native
// Event Grid trigger (shared/entrypoints/push.py, push_events) through the Functions host's Event
// Grid extension endpoint (/runtime/webhooks/eventgrid), authenticating with the extension's system
// key, which Event Grid fetches through Azure Resource Manager itself. No key is in a URL, a parameter,
// an output or this template, and there is no hand-written validation handshake. Event Grid checks at
// creation that the function exists, so main.bicep creates this module only when enableKeyVaultEvents
// is true, which the operator sets after the first `azd deploy` (infra/README.md).
//
// Events Event Grid cannot deliver (retries exhausted, or the function gone) are dead-lettered as
// blobs to a container of the app's storage account, written with the system topic's own managed
// identity (Storage Blob Data Contributor on that container only).

@description('Name of the Key Vault whose events are published.')
param keyVaultName string

@description('Name of the Event Grid system topic.')
param systemTopicName string

@description('Azure region (the vault\'s region).')
param location string

@description('Tags applied to the system topic.')
param tags object = {}

@description('Name of the function app hosting the push function.')
param functionAppName string

@description('Name of the Event Grid-triggered function that pushes new secret versions: the Python function name of the event_grid_trigger in shared/entrypoints/push.py.')
param pushFunctionName string = 'push_events'

@description('Name of the storage account that receives dead-lettered events.')
param storageAccountName string

@description('Blob container for events Event Grid could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

// Built-in role definition id, by role name (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  storageBlobDataContributor: {
    name: 'Storage Blob Data Contributor'
    id: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

// The topic's identity may write dead-lettered events to this one container, nothing else.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopic.id, roles.storageBlobDataContributor.id)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor.id)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid system topic ${systemTopic.name}: dead-lettered Key Vault events'
  }
}

resource pushSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'push-new-secret-versions'
  dependsOn: [
    deadLetterWriter
  ]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/${pushFunctionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNewVersionCreated'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

@description('Name of the system topic.')
output systemTopicName string = systemTopic.name

@description('Blob container that holds dead-lettered events.')
output deadLetterContainerName string = deadLetterContainer.name
