// A Key Vault with RBAC authorisation, purge protection and a firewall, holding secrets.
// Readers get 'Key Vault Secrets User' on this vault only (one vault per consumer:
// the Functions app's vault holds the JWT key; the nodes' vault their token).

param location string

@description('Vault name: 3-24 letters, digits and hyphens.')
@minLength(3)
@maxLength(24)
param name string

@description('Secrets to store: [{ name, value }] (values are secure; empty values are skipped).')
@secure()
param secrets object = { items: [] }

@description('Principal ids given Key Vault Secrets User on the vault.')
param readerPrincipalIds array = []

@description('Subnets allowed through the firewall (service endpoints).')
param subnetIds array = []

@description('Public IP ranges allowed through the firewall (the operator setting secrets).')
param allowedIpRanges array = []

@description('Expiry of the secrets (Unix seconds); rotate before it.')
param secretExpiry int

param workspaceId string
param tags object = {}

var secretsUserRole = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled' // narrowed by networkAcls (default Deny)
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices' // Key Vault references of App Service are resolved by the platform
      virtualNetworkRules: [for id in subnetIds: {
        id: id
        ignoreMissingVnetServiceEndpoint: false
      }]
      ipRules: [for range in allowedIpRanges: {
        value: range
      }]
    }
  }
}

var secretsToStore = filter(secrets.items, s => !empty(s.value))

resource vaultSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for s in secretsToStore: {
  parent: vault
  name: s.name
  properties: {
    value: s.value
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: secretExpiry
    }
  }
}]

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for id in readerPrincipalIds: {
  name: guid(vault.id, id, secretsUserRole)
  scope: vault
  properties: {
    roleDefinitionId: secretsUserRole
    principalId: id
    principalType: 'ServicePrincipal'
  }
}]

resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      { categoryGroup: 'audit', enabled: true }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
