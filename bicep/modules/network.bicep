// Virtual network: one subnet for the replication nodes (no public IPs, outbound through a
// NAT gateway), one delegated subnet for the Functions app's VNet integration. Both reach
// Storage and Key Vault through service endpoints, which the storage account and vaults
// accept in their network rules (default action Deny).

param location string
param prefix string

@description('Address space of the virtual network.')
param addressPrefix string = '10.42.0.0/16'

@description('Subnet of the replication nodes (room for 4 000 nodes).')
param nodesPrefix string = '10.42.0.0/20'

@description('Subnet delegated to the Functions app (Flex Consumption VNet integration).')
param functionsPrefix string = '10.42.16.0/24'

param tags object = {}

var serviceEndpoints = [
  { service: 'Microsoft.Storage' }
  { service: 'Microsoft.KeyVault' }
]

resource natIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: '${prefix}-nat-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
  }
}

resource nat 'Microsoft.Network/natGateways@2023-11-01' = {
  name: '${prefix}-nat'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIpAddresses: [
      { id: natIp.id }
    ]
    idleTimeoutInMinutes: 10
  }
}

resource nodesNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${prefix}-nodes-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'deny-inbound-from-internet'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource functionsNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${prefix}-functions-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: '${prefix}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'nodes'
        properties: {
          addressPrefix: nodesPrefix
          networkSecurityGroup: { id: nodesNsg.id }
          natGateway: { id: nat.id }
          serviceEndpoints: serviceEndpoints
          defaultOutboundAccess: false
        }
      }
      {
        name: 'functions'
        properties: {
          addressPrefix: functionsPrefix
          networkSecurityGroup: { id: functionsNsg.id }
          natGateway: { id: nat.id }
          serviceEndpoints: serviceEndpoints
          delegations: [
            {
              name: 'flex'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

output vnetId string = vnet.id
output nodesSubnetId string = '${vnet.id}/subnets/nodes'
output functionsSubnetId string = '${vnet.id}/subnets/functions'
