// The function's own storage account: Functions runtime (AzureWebJobsStorage: blobs, queues),
// the Flex Consumption deployment package (a blob container) and the rotator's tables (registry,
// state, audit). Reached only through the managed identity: shared-key access is off, so no
// connection string or account key exists anywhere.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the storage account.')
param tags object = {}

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Days deleted blobs and containers are kept (soft delete).')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

@description('Replication of the account. Zone-redundant keeps the registry and audit through a zone outage.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_ZRS'

@description('Name of the rotation work queue (shared/adapters/queues.py WORK_QUEUE_NAME); its poison queue is <name>-poison.')
param workQueueName string = 'rotation-work'

@description('Log Analytics workspace that receives the account\'s read, write and delete logs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration has no fixed outbound address to allow; access is identity-only (shared key off, no public blobs). Put the app in a VNet to deny by default.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: the function reaches the account over its public endpoint, with Entra ID only.
  // checkov:skip=CKV_AZURE_206: Zone-redundant (ZRS) by default; skuName allows GZRS. Geo-replication doubles the cost for an app that runs in one region, and the secrets themselves live in Key Vault, which the service replicates to the paired region.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The rotation work queue (timers fan out one message per customer with work; the queue trigger takes them) and
// its poison queue (the host moves a message there after host.json's maxDequeueCount failed attempts).
var workQueueNames = [
  workQueueName
  '${workQueueName}-poison'
]

resource workQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in workQueueNames: {
  parent: queueService
  name: queueName
}]

// Audit of who touched the registry, state and audit tables (and the runtime's blobs and queues).
resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
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

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
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

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
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

@description('Name of the storage account.')
output name string = storage.name

@description('Resource id of the storage account.')
output resourceId string = storage.id

@description('Blob endpoint, e.g. https://<name>.blob.core.windows.net/.')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Queue endpoint (the host\'s queues and the rotation work queue: WORK_QUEUE__queueServiceUri).')
output queueEndpoint string = storage.properties.primaryEndpoints.queue

@description('Name of the rotation work queue (created here with its poison queue).')
output workQueueName string = workQueues[0].name

@description('Table endpoint: STATE_TABLES_ENDPOINT of the app.')
output tableEndpoint string = storage.properties.primaryEndpoints.table
