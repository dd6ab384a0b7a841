// Data-plane role assignments of one principal, scoped to one storage account (never the
// resource group or subscription).

@description('The storage account the roles apply to.')
param storageAccountName string

@description('Object id of the managed identity receiving the roles.')
param principalId string

@description('Role definition ids (GUIDs) to assign.')
param roleIds array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roleIds: {
  name: guid(account.id, principalId, role)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]
