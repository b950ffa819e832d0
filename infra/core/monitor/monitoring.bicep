// Log Analytics workspace and workspace-based Application Insights. Local (instrumentation key)
// authentication is off: telemetry is accepted only with an Entra ID token of an identity holding
// Monitoring Metrics Publisher on the component.

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags applied to both resources.')
param tags object = {}

@description('Days logs are kept in the workspace (30 to 730; 30 is included in the price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

// No daily cap by default. The alert rules (app/alerts.bicep) read the rotator's alert records from this
// workspace; once a cap is reached the workspace drops every record until the next day, alert records
// included, and nobody would hear that a customer's secret is about to expire. The rotator logs little
// (well under 1 GB a month for hundreds of customers, see infra/README.md), so the cap bought little.
@description('Daily ingestion cap in GB; -1 (the default) for none. A cap also drops the alert records the alert rules read once it is reached: set one only with that in mind.')
param dailyQuotaGb int = -1

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

@description('Resource id of the Log Analytics workspace (scope of the alert rules).')
output logAnalyticsWorkspaceId string = workspace.id

@description('Name of the Application Insights component.')
output applicationInsightsName string = appInsights.name

@description('Resource id of the Application Insights component.')
output applicationInsightsId string = appInsights.id

@description('Connection string of Application Insights (not a secret: ingestion needs an Entra ID token).')
output applicationInsightsConnectionString string = appInsights.properties.ConnectionString
