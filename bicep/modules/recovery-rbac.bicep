// The "Lifeboat recovery operator" custom role, defined in and assignable only at the recovery
// resource group (main.bicep deploys this module with scope: resourceGroup(recoveryResourceGroupName)),
// and its assignments to the Function App (the Durable Functions recovery flow) and the nodes
// (migrations). The actions are exactly those of the AzureCompute port
// (node_runtime/recovery/targets/azure/compute.py): import disks from VHD page blobs, NICs, VMs
// with managed boot diagnostics and their serial log, an isolated test network created and
// deleted per test recovery, and listing what a recovery tagged. No wildcards; the table in
// docs/deploy-azure.md gives the reason for each action.

@description('Object ids of the managed identities receiving the role (Function App, nodes).')
param principalIds array

// Custom role names are unique in the tenant: the resource group's name keeps two Lifeboat
// deployments (or two recovery groups) from colliding.
resource recoveryOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, resourceGroup().id, 'lifeboat-recovery-operator')
  properties: {
    roleName: 'Lifeboat recovery operator (${resourceGroup().name})'
    description: 'Lifeboat recovery into Azure: managed disks imported from VHD page blobs, NICs, VMs with boot diagnostics, an isolated test network, in this resource group only.'
    type: 'CustomRole'
    permissions: [
      {
        // exactly the list tests/azure/test_bicep_recovery.py expects: change both together
        actions: [
          'Microsoft.Compute/disks/read'
          'Microsoft.Compute/disks/write'
          'Microsoft.Compute/disks/delete'
          'Microsoft.Compute/virtualMachines/read'
          'Microsoft.Compute/virtualMachines/write'
          'Microsoft.Compute/virtualMachines/delete'
          'Microsoft.Compute/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action'
          'Microsoft.Network/networkInterfaces/read'
          'Microsoft.Network/networkInterfaces/write'
          'Microsoft.Network/networkInterfaces/delete'
          'Microsoft.Network/networkInterfaces/join/action'
          'Microsoft.Network/virtualNetworks/read'
          'Microsoft.Network/virtualNetworks/write'
          'Microsoft.Network/virtualNetworks/delete'
          'Microsoft.Network/virtualNetworks/subnets/read'
          'Microsoft.Network/virtualNetworks/subnets/write'
          'Microsoft.Network/virtualNetworks/subnets/delete'
          'Microsoft.Network/virtualNetworks/subnets/join/action'
          'Microsoft.Network/networkSecurityGroups/read'
          'Microsoft.Network/networkSecurityGroups/join/action'
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Resources/subscriptions/resourceGroups/resources/read'
          'Microsoft.Resources/tags/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

var roleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', recoveryOperator.name)

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(resourceGroup().id, principalId, recoveryOperator.name)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

output roleDefinitionId string = roleDefinitionId
