// Log Analytics workspace and workspace-based Application Insights (the Functions app's telemetry).

@description('Azure region.')
param location string

@description('Name prefix of every resource.')
param prefix string

@description('Days Log Analytics keeps data (30 is free of retention charges).')
@minValue(30)
@maxValue(730)
param retentionDays int = 30

param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-insights'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true // ingestion with Entra ID (the app's managed identity) only
    IngestionMode: 'LogAnalytics'
  }
}

output workspaceId string = workspace.id
output insightsId string = insights.id
output insightsName string = insights.name
output connectionString string = insights.properties.ConnectionString
