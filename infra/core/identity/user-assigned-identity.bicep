// The function app's user-assigned managed identity: it reaches storage, Key Vault, Application
// Insights and (through a script, see infra/scripts/) Microsoft Graph. User-assigned so that its
// client id is known before the app exists and survives the app being recreated.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output resourceId string = identity.id

@description('Client (application) id of the identity: AZURE_CLIENT_ID of the app.')
output clientId string = identity.properties.clientId

@description('Object id of the identity\'s service principal: the subject of the federated credential.')
output principalId string = identity.properties.principalId

@description('Name of the identity.')
output name string = identity.name
