// Alerts to an e-mail action group: an RPO breach (the scheduler logs each alert it opens),
// a job lost to the dead-letter queue, the API failing, and replication nodes unhealthy.
// The log markers are defined in functions/azure/function_app.py (RPO_BREACH, DEAD_LETTER).

param location string
param prefix string

@description('Where alerts are e-mailed.')
param alertEmail string

param workspaceId string
param functionAppId string
param nodesId string

param tags object = {}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${prefix}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('${prefix}dr', 12)
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

var logAlerts = [
  {
    name: 'rpo-breach'
    description: 'A protected machine\'s newest recovery point is older than its plan\'s RPO.'
    severity: 1
    query: 'AppTraces | where Message has "lifeboat.rpo_breach"'
  }
  {
    name: 'dead-letter'
    description: 'A job\'s message was dead-lettered (delivered too often without completing); the job was failed.'
    severity: 2
    query: 'AppTraces | where Message has "lifeboat.dead_letter"'
  }
  {
    name: 'scheduler-silent'
    description: 'No scheduler tick for 10 minutes: plans are not being scheduled.'
    severity: 1
    query: 'AppTraces | where Message has "scheduler tick" | summarize ticks = count() | where ticks == 0'
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for a in logAlerts: {
  name: '${prefix}-${a.name}'
  location: location
  tags: tags
  properties: {
    displayName: '${prefix} ${a.name}'
    description: a.description
    severity: a.severity
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: a.name == 'scheduler-silent' ? 'PT10M' : 'PT5M'
    criteria: {
      allOf: [
        {
          query: a.query
          timeAggregation: 'Count'
          operator: a.name == 'scheduler-silent' ? 'GreaterThanOrEqual' : 'GreaterThan'
          threshold: a.name == 'scheduler-silent' ? 1 : 0
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
}]

resource apiErrors 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${prefix}-api-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The REST API answers server errors.'
    severity: 2
    enabled: true
    scopes: [
      functionAppId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'http5xx'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'Http5xx'
          operator: 'GreaterThan'
          threshold: 5
          timeAggregation: 'Total'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource nodesUnavailable 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${prefix}-nodes-unavailable'
  location: 'global'
  tags: tags
  properties: {
    description: 'Replication nodes are unavailable (VM availability below 100%).'
    severity: 2
    enabled: true
    scopes: [
      nodesId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'availability'
          criterionType: 'StaticThresholdCriterion'
          metricName: 'VmAvailabilityMetric'
          operator: 'LessThan'
          threshold: 1
          timeAggregation: 'Average'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
