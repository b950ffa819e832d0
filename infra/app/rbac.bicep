// Role assignments of the rotator's identity (and, optionally, of the operator who deploys), each
// on the narrowest resource that needs it. Roles are looked up by name in `roles` below: the GUIDs
// are Azure built-in role ids, identical in every tenant.

@description('Name of the Key Vault.')
param keyVaultName string

@description('Name of the storage account.')
param storageAccountName string

@description('Name of the rotation work queue; its poison queue is <name>-poison (both get the queue roles below).')
param workQueueName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Object id of the managed identity\'s service principal.')
param identityPrincipalId string

@description('Object id of a user or group that manages destination credentials in the vault (e.g. the deploying operator); empty for none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in role definition ids, by role name (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  keyVaultSecretsOfficer: {
    name: 'Key Vault Secrets Officer'
    id: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  }
  storageBlobDataOwner: {
    name: 'Storage Blob Data Owner'
    id: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  }
  storageQueueDataContributor: {
    name: 'Storage Queue Data Contributor'
    id: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  }
  storageTableDataContributor: {
    name: 'Storage Table Data Contributor'
    id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  }
  storageQueueDataReader: {
    name: 'Storage Queue Data Reader'
    id: '19e7f393-937e-4f77-808e-94535e297925'
  }
  storageQueueDataMessageSender: {
    name: 'Storage Queue Data Message Sender'
    id: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  }
  storageQueueDataMessageProcessor: {
    name: 'Storage Queue Data Message Processor'
    id: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  }
  monitoringMetricsPublisher: {
    name: 'Monitoring Metrics Publisher'
    id: '3913510d-42f4-4e42-8a64-420c390055eb'
  }
}

// Runtime (AzureWebJobsStorage) and deployment package need blob ownership (leases, containers);
// the Functions host uses queues; the rotator's registry, state and audit are tables.
var storageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

// The rotation work queues, through the identity-based connection WORK_QUEUE: the timers send (Message Sender),
// the queue trigger reads and deletes (Reader, Message Processor; the roles the Functions docs list for a queue
// trigger), and the host sends a failed message to the poison queue. Scoped to the two queues only.
var workQueueRoles = [
  roles.storageQueueDataReader
  roles.storageQueueDataMessageSender
  roles.storageQueueDataMessageProcessor
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Create secret versions, read them, move tags; never purge (purge protection forbids it anyway).
resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, roles.keyVaultSecretsOfficer.id)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Rotator: stores and tags rotated secrets, reads destination credentials.'
  }
}

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, identityPrincipalId, role.id)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Rotator: ${role.name}.'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource workQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: workQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: '${workQueueName}-poison'
}

resource workQueueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in workQueueRoles: {
  name: guid(workQueue.id, identityPrincipalId, role.id)
  scope: workQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Rotator: ${role.name} on the rotation work queue.'
  }
}]

resource poisonQueueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in workQueueRoles: {
  name: guid(poisonQueue.id, identityPrincipalId, role.id)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Rotator: ${role.name} on the poison queue.'
  }
}]

// Entra-authenticated telemetry: local auth is off on the component.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, roles.monitoringMetricsPublisher.id)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher.id)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Rotator: sends telemetry with its Entra ID token.'
  }
}

// The operator stores the Proofpoint admin and portal credentials in the vault after deployment.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer.id)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer.id)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'Operator: manages destination credentials in the vault.'
  }
}
