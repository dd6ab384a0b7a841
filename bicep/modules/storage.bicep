// A hardened storage account with its blob containers, tables and queues.
// Used three times by main.bicep: the data account (repository container, metadata table, job
// and flow queues), the runtime account (the Functions host's state and deployment package)
// and the recovery staging account (VHD page blobs imported as managed disks).

param location string

@description('Globally unique account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string

@description('Blob containers to create.')
param containers array = []

@description('Tables to create.')
param tables array = []

@description('Queues to create.')
param queues array = []

@description('Subnets allowed through the firewall (service endpoints).')
param subnetIds array = []

@description('Public IP ranges allowed through the firewall (operators restoring with the CLI).')
param allowedIpRanges array = []

@description('Days deleted blobs and containers can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Geo-redundant replication (GZRS) for the repository; ZRS otherwise.')
param geoRedundant bool = true

@description('Locally redundant (Standard_LRS) instead of GZRS/ZRS: for VHD page blobs imported as managed disks (disk page blobs are not supported on ZRS/GZRS); geoRedundant is then ignored.')
param locallyRedundant bool = false

@description('Shared-key (connection string) access; off: Entra ID only.')
param allowSharedKeyAccess bool = false

@description('Log Analytics workspace receiving the account\'s read/write/delete logs.')
param workspaceId string

param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59:The firewall denies by default and admits only the VNet subnets (service endpoints) and listed operator IPs; disabling public network access would also shut out service endpoints (private endpoints are not used)
  // checkov:skip=CKV_AZURE_206:The SKU is a parameter-driven ternary checkov cannot evaluate: Standard_GZRS or Standard_ZRS (both replicate across zones) for the data and runtime accounts; Standard_LRS only for the recovery staging account, whose VHDs are transient copies of repository data and must be on LRS to be imported as managed disks
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: locallyRedundant ? 'Standard_LRS' : (geoRedundant ? 'Standard_GZRS' : 'Standard_ZRS')
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess // default false: Entra ID (managed identities) only
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled' // narrowed by networkAcls (default Deny)
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
      }
    }
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices, Logging, Metrics'
      virtualNetworkRules: [for id in subnetIds: {
        id: id
        action: 'Allow'
      }]
      ipRules: [for range in allowedIpRanges: {
        value: range
        action: 'Allow'
      }]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in containers: {
  parent: blobService
  name: c
  properties: {
    publicAccess: 'None'
  }
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tables: {
  parent: tableService
  name: t
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: q
}]

// Storage analytics logs for every service, in Log Analytics.
resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output tableEndpoint string = account.properties.primaryEndpoints.table
output queueEndpoint string = account.properties.primaryEndpoints.queue
