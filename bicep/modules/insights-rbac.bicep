// 'Monitoring Metrics Publisher' on Application Insights for a managed identity: the
// component disables local (key) authentication, so telemetry is sent with Entra ID.

param insightsName string
param principalId string

var publisher = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, principalId, publisher)
  scope: insights
  properties: {
    roleDefinitionId: publisher
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
