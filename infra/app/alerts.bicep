// Alerts that reach a human by e-mail: (1) every alert event the rotator logs (a log record with
// custom dimension event=alert plus condition, tenant_id, app_id; exported by
// azure-monitor-opentelemetry to the AppTraces table), one alert per condition and target; (2) the
// daily timer pass did not run, which no in-app alert can report.

@description('Name prefix of the alert rules.')
param namePrefix string

@description('Name of the action group.')
param actionGroupName string

@description('Azure region of the alert rules (the workspace\'s region).')
param location string

@description('Tags applied to the action group and the rules.')
param tags object = {}

@description('E-mail address that receives the alerts (a person or a shared mailbox).')
param alertEmail string

@description('Resource id of the Log Analytics workspace behind Application Insights.')
param logAnalyticsWorkspaceId string

@description('Hours without a completed timer pass before the "timer pass missing" alert fires (the schedule is daily by default).')
@minValue(1)
@maxValue(48)
param timerSilenceHours int = 26

@description('Name of the timer function (its invocations appear in AppRequests under this name).')
param timerFunctionName string = 'rotation_timer'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'secrotator'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var alertEventsQuery = '''
AppTraces
| where tostring(Properties["event"]) == "alert"
| extend Condition = tostring(Properties["condition"]), TenantId = tostring(Properties["tenant_id"]), AppId = tostring(Properties["app_id"])
| extend Customer = tostring(Properties["customer"])
| project TimeGenerated, Condition, TenantId, AppId, Customer, Message
'''

resource alertEvents 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-alert-events'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync-secret rotator: needs a human'
    description: 'The rotator logged an alert event (push failed repeatedly, rotation stuck, secret expired, ...). Dimensions name the condition, the customer tenant and the app.'
    severity: 1
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    // AppTraces has no rows until the app logs; do not fail the deployment on that.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: alertEventsQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Condition'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'TenantId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'AppId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // Each event is a fact to act on, not a state that clears itself.
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Log alert windows come in fixed sizes (1 day, 2 days, ...): look back over two days and count the
// successful runs of the last timerSilenceHours in the query itself.
var timerSilenceQuery = 'AppRequests | where TimeGenerated > ago(${timerSilenceHours}h) | where OperationName == "${timerFunctionName}" or Name == "${timerFunctionName}" | where Success == true'

resource timerSilence 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-timer-missing'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync-secret rotator: timer pass missing'
    description: 'No successful ${timerFunctionName} run in the last ${timerSilenceHours} hours: secrets are not being checked.'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    // AppRequests has no rows until the first run; the table itself exists in the workspace.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: timerSilenceQuery
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

@description('Resource id of the action group.')
output actionGroupId string = actionGroup.id
