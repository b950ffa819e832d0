// Alerts that reach a human by e-mail: (1) a condition that needs a human is open for a target, or a
// one-off notice is told (the rotator's alert book logs `event=alert` at most once per condition, target and UTC day while the
// condition holds, and `event=alert-resolved` once when it clears; azure-monitor-opentelemetry exports
// both to the AppTraces table); (2) the daily timer pass did not run, which no in-app alert can report.
//
// Rule (1) is split in two, because the records are of two kinds (shared/conditions.py):
// - (1a) resolvable conditions (RESOLVABLE: stuck, expired, destination-failing, ...) hold and clear: a
//   stateful rule (autoMitigate: true) fires once per open condition and its "Resolved" e-mail follows
//   the rotator's `alert-resolved` record (or two days without any record: the target was removed).
// - (1b) one-off notices (NOTICES: lifetime-capped, poison-message, ...) are told and never resolved:
//   a stateless rule (autoMitigate: false) e-mails each `alert` record of one once. Under the stateful
//   rule a notice kept its alert fired for the two-day look-back, so the next day's notice sent no
//   e-mail, and a "Resolved" e-mail came when the record aged out although nothing had cleared.
// Azure Monitor's "Alerts and state" (MicrosoftDocs/azure-monitor-docs,
// articles/azure-monitor/alerts/alerts-overview.md): "Stateless alerts fire each time the condition is
// met, even if fired previously. Stateful alerts fire when the rule conditions are met, and will not fire
// again or trigger any more actions until the conditions are resolved", each time series of a rule split
// by dimensions on its own (alerts-create-log-alert-rule.md, "Split by dimensions"); a stateful log
// search alert with a 5 to 15 minute frequency resolves once its condition is not met for two or three
// frequency periods, and the action group is told then too. autoMitigate is the scheduledQueryRules
// property that makes a log search rule stateful ("whether the alert should be automatically resolved
// or not", Microsoft.Insights/scheduledQueryRules 2023-12-01 reference).
// (1a) asks "is this condition of this target open": the latest of its records over the last two days is
// an `alert`. So the e-mail goes out once when a condition opens, never again while it holds.
// (1b) asks "was a notice told in this 15-minute window": the book tells each notice at most once per
// target and UTC day, so each day's notice is one e-mail, and nothing ever resolves.
// The two queries split the records by the one list `noticeConditions` (tests/infra check it equals
// shared.conditions.NOTICES), so no record reaches both rules and none neither.
// muteActionsDuration is not used: the docs do not say it mutes one time series rather than the whole
// rule, and muting the rule for a day would silence every other target's new condition.
// Limits (service-limits, "Log alerts"): a stateful rule fires at most 300 alerts per evaluation and holds
// at most 5,000 fired at once; a mass outage beyond that fires over several evaluations.

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

// The one-off notices (shared/conditions.py NOTICES; tests/infra check the two lists are equal).
var noticeConditions = [
  'audit-unwritten'
  'hand-written-not-adopted'
  'hand-written-unverified'
  'lifetime-capped'
  'poison-message'
  'rotation-forced'
  'sign-in-evidence-unavailable'
  'ticket-refused'
]

// (1a) One row per open resolvable condition: the latest alert record of each (condition, target,
// destination) over two days, when it is not a resolution. No datetime column is returned: every row
// counts, whatever its age.
var alertEventsQuery = format('''
AppTraces
| where TimeGenerated > ago(2d)
| extend Event = tostring(Properties["event"])
| where Event in ("alert", "alert-resolved")
| extend Condition = tostring(Properties["condition"]), TenantId = tostring(Properties["tenant_id"]), AppId = tostring(Properties["app_id"]), Destination = tostring(Properties["destination"]), Customer = tostring(Properties["customer"])
| where Condition !in (dynamic({0})) and Condition !startswith "expiring-"
| summarize arg_max(TimeGenerated, Event, Customer, Message) by Condition, TenantId, AppId, Destination
| where Event == "alert"
| project Condition, TenantId, AppId, Destination, Customer, Message
''', string(noticeConditions))

// (1b) One row per notice told in the rule's 15-minute window (the window bounds TimeGenerated; no
// datetime column is returned, so the rows are counted over the window as one).
var noticeEventsQuery = format('''
AppTraces
| extend Event = tostring(Properties["event"])
| where Event == "alert"
| extend Condition = tostring(Properties["condition"]), TenantId = tostring(Properties["tenant_id"]), AppId = tostring(Properties["app_id"]), Destination = tostring(Properties["destination"]), Customer = tostring(Properties["customer"])
| where Condition in (dynamic({0}))
| project Condition, TenantId, AppId, Destination, Customer, Message
''', string(noticeConditions))

resource alertEvents 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-alert-events'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync-secret rotator: needs a human'
    description: 'A condition that needs a human is open (push failed repeatedly, rotation stuck, secret expired, ...): fired once when the rotator first logs it, resolved when the rotator logs it resolved. Dimensions name the condition, the customer tenant, the app and the destination.'
    severity: 1
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    // The query looks back two days itself (the book writes a record a day while a condition holds).
    overrideQueryTimeRange: 'P2D'
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
            {
              name: 'Destination'
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
    // Stateful: one notification when a condition opens, one when it resolves (see the header).
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource noticeEvents 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-notice-events'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync-secret rotator: notice'
    description: 'A one-off notice that needs a human (lifetime capped, poison message, audit record not written, hand-written secret version not adopted or unverified): one e-mail each time the rotator tells it (at most once per notice, target and UTC day), never resolved. Dimensions name the notice, the customer tenant, the app and the destination.'
    severity: 1
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    // AppTraces has no rows until the app logs; do not fail the deployment on that.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: noticeEventsQuery
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
            {
              name: 'Destination'
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
    // Stateless: each notice told is its own e-mail; nothing to resolve (see the header).
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (1c) Staged expiry warnings (shared/expiry_warnings.py, conditions `expiring-<days>d`): the book tells each
// threshold once per credential, never again daily, and logs one resolution when the credential is renewed or removed.
// Under the stateful rule (1a) a warning's only record would age out of its two-day look-back and send a "Resolved"
// e-mail although nothing was renewed; so a stateless rule e-mails each record once, the alert and later its
// resolution (the Event dimension tells which).
var warningEventsQuery = '''
AppTraces
| extend Event = tostring(Properties["event"])
| where Event in ("alert", "alert-resolved")
| extend Condition = tostring(Properties["condition"]), TenantId = tostring(Properties["tenant_id"]), AppId = tostring(Properties["app_id"]), Destination = tostring(Properties["destination"]), Customer = tostring(Properties["customer"])
| where Condition startswith "expiring-"
| project Event, Condition, TenantId, AppId, Destination, Customer, Message
'''

resource warningEvents 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-warning-events'
  location: location
  tags: tags
  properties: {
    displayName: 'Sync-secret rotator: credential expiring'
    description: 'A staged expiry warning (a credential of a customer app crossed one of its customer\'s thresholds, e.g. 30 days), or its resolution once the credential was renewed or removed: one e-mail per record, each told once per threshold and credential. Dimensions name the event, the threshold, the customer tenant, the app and the credential.'
    severity: 3
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    // AppTraces has no rows until the app logs; do not fail the deployment on that.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: warningEventsQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Event'
              operator: 'Include'
              values: [
                '*'
              ]
            }
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
            {
              name: 'Destination'
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
    // Stateless: each record is its own e-mail; the rotator's resolution record is the "resolved" one.
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
