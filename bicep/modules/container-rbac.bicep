// One role for several principals, scoped to a single blob container (not the account): the
// recovery staging container, where VHD page blobs wait to be imported as managed disks.

@description('The storage account holding the container.')
param storageAccountName string

@description('The container the role applies to.')
param containerName string

@description('Object ids of the managed identities receiving the role.')
param principalIds array

@description('Role definition id (GUID) to assign.')
param roleId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: containerName
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(container.id, principalId, roleId)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]
