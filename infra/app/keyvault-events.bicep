// Optional: an Event Grid system topic on the vault, subscribed to the push function, so that a new
// secret version (written by the rotator, or by an operator by hand) is pushed to the destinations
// within seconds instead of at the next timer pass.
//
// Event Grid validates a WebHook subscription at creation time by calling it (the validation
// handshake), so the push function must already be deployed: main.bicep creates this module only
// when subscribeKeyVaultEvents is true, which the operator sets after the first `azd up`
// (infra/README.md, "Post-deployment steps"). The function key is read from the app's host keys with
// listKeys inside the deployment: it never appears in a parameter, an output or a file.

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

@description('Route of the push function under /api.')
param pushRoute string = 'push'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2023-12-15-preview' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

// The host's default function key works for every FUNCTION-level HTTP function; Event Grid keeps the
// full endpoint URL write-only and shows only its base URL afterwards.
var pushUrl = 'https://${functionApp.properties.defaultHostName}/api/${pushRoute}?code=${listKeys('${functionApp.id}/host/default', '2024-04-01').functionKeys.default}'

resource pushSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2023-12-15-preview' = {
  parent: systemTopic
  name: 'push-new-secret-versions'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: pushUrl
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
  }
}

@description('Name of the system topic.')
output systemTopicName string = systemTopic.name
