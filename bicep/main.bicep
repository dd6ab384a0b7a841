// Lifeboat on Azure: the control plane (Functions + Table/Queue storage), the repository
// (Blob storage), replication nodes (VM scale set), Key Vaults, monitoring and alerts, and
// what recovery into Azure needs: a staging account for VHDs and a least-privilege role in
// the recovery resource group.
// Deploy into a resource group: see docs/deploy-azure.md.

targetScope = 'resourceGroup'

@description('Azure region (must offer the Flex Consumption plan).')
param location string = resourceGroup().location

@description('Name prefix of every resource: 3-11 lowercase letters and digits.')
@minLength(3)
@maxLength(11)
param prefix string = 'lifeboat'

@description('Replication nodes always running (0 until the node token is set).')
@minValue(0)
@maxValue(100)
param nodeCount int = 2

@description('Upper bound of node autoscale.')
@minValue(1)
@maxValue(1000)
param nodeMaxCount int = 10

@description('VM size of a replication node.')
param nodeSize string = 'Standard_D4s_v5'

@description('SSH public key of the nodes\' admin user.')
param nodeAdminPublicKey string

@description('Site id the nodes serve (create the site through the API first).')
param siteId string = 'azure'

@description('pip requirement installing the Lifeboat runtime on nodes (a version or a wheel URL).')
param nodePackage string = 'lifeboat'

@description('API token of the nodes (create it through the API, then redeploy); empty: not stored yet.')
@secure()
param nodeToken string = ''

@description('Repository connection string for nodes, until the blob adapter supports managed identities; empty: none.')
@secure()
param repositoryConnectionString string = ''

@description('HS256 signing key of user sessions (generated when not given; pass the same value on redeploys to keep sessions).')
@secure()
// checkov:skip=CKV_AZURE_131:The default is newGuid() twice, generated at deployment, not a hard-coded value
param jwtSecret string = '${newGuid()}${newGuid()}'

@description('E-mail address receiving alerts.')
param alertEmail string

@description('Public IP ranges (CIDR) of operators allowed to reach storage and the vaults.')
param allowedIpRanges array = []

@description('Entra ID app registration client id for App Service Authentication; empty: Lifeboat users and tokens only.')
param entraClientId string = ''

@description('JSON object mapping Entra app roles or group ids to Lifeboat roles.')
param entraRoleMap string = '{}'

@description('Days deleted blobs/containers can be restored.')
param softDeleteDays int = 14

@description('Resource group recovered VMs, disks and NICs are created in (it must exist); the custom role "Lifeboat recovery operator" is defined and assigned there only.')
param recoveryResourceGroupName string = resourceGroup().name

@description('Region of recovered VMs; the VHD staging account is created there (a disk imports only from a storage account in its own region).')
param recoveryLocation string = location

@description('Deployment time (sets secret expiry one year later).')
param deployedAt string = utcNow()

param tags object = {
  application: 'lifeboat'
}

var suffix = uniqueString(resourceGroup().id, prefix)
var dataAccountName = take('${prefix}data${suffix}', 24)
var runtimeAccountName = take('${prefix}rt${suffix}', 24)
var stagingAccountName = take('${prefix}stg${suffix}', 24)
var apiVaultName = take('${prefix}-api-${suffix}', 24)
var nodesVaultName = take('${prefix}-nod-${suffix}', 24)
var tableName = 'lifeboat'
var queueName = 'lifeboat-jobs'
var flowQueueName = 'lifeboat-flows'
var stagingContainer = 'recovery-staging'
var repositoryContainer = 'repository'
var secretExpiry = dateTimeToEpoch(dateTimeAdd(deployedAt, 'P1Y'))
var jwtSecretUri = 'https://${apiVaultName}${environment().suffixes.keyvaultDns}/secrets/jwt-secret'

var roles = {
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // includes sending messages (Queue Data Message Sender)
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    prefix: prefix
    tags: tags
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    location: location
    prefix: prefix
    tags: tags
  }
}

module data 'modules/storage.bicep' = {
  name: 'data-storage'
  params: {
    location: location
    name: dataAccountName
    containers: [
      repositoryContainer
    ]
    tables: [
      tableName
    ]
    queues: [
      queueName
      '${queueName}-dlq'
      flowQueueName
    ]
    subnetIds: [
      network.outputs.nodesSubnetId
      network.outputs.functionsSubnetId
    ]
    allowedIpRanges: allowedIpRanges
    softDeleteDays: softDeleteDays
    geoRedundant: true
    allowSharedKeyAccess: !empty(repositoryConnectionString) // until the blob adapter takes a token credential
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module runtime 'modules/storage.bicep' = {
  name: 'runtime-storage'
  params: {
    location: location
    name: runtimeAccountName
    containers: [
      'deployments'
    ]
    subnetIds: [
      network.outputs.functionsSubnetId
    ]
    allowedIpRanges: allowedIpRanges
    softDeleteDays: 7
    geoRedundant: false
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

// Recovery staging: VHD page blobs written by the recovery flow (or a node) and imported as
// managed disks. A dedicated account because the import needs a general-purpose v2 account in
// the recovery region holding the VHD as a page blob on locally redundant storage (disk page
// blobs are not supported on the data account's GZRS), and the staged copies are transient
// (1-day soft delete, no geo-replication).
module staging 'modules/storage.bicep' = {
  name: 'recovery-staging-storage'
  params: {
    location: recoveryLocation
    name: stagingAccountName
    containers: [
      stagingContainer
    ]
    subnetIds: [
      network.outputs.nodesSubnetId
      network.outputs.functionsSubnetId
    ]
    allowedIpRanges: allowedIpRanges
    softDeleteDays: 1
    locallyRedundant: true
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    location: location
    prefix: prefix
    runtimeAccountName: runtime.outputs.name
    runtimeBlobEndpoint: runtime.outputs.blobEndpoint
    dataAccountName: data.outputs.name
    tableName: tableName
    queueName: queueName
    flowQueueName: flowQueueName
    recoveryResourceGroupName: recoveryResourceGroupName
    recoveryLocation: recoveryLocation
    recoveryStagingUrl: '${staging.outputs.blobEndpoint}${stagingContainer}'
    recoveryStorageAccountId: staging.outputs.id
    jwtSecretUri: jwtSecretUri
    insightsConnectionString: monitoring.outputs.connectionString
    workspaceId: monitoring.outputs.workspaceId
    subnetId: network.outputs.functionsSubnetId
    entraClientId: entraClientId
    entraRoleMap: entraRoleMap
    tags: tags
  }
}

module functionDataRoles 'modules/storage-rbac.bicep' = {
  name: 'function-data-roles'
  params: {
    storageAccountName: data.outputs.name
    principalId: functionApp.outputs.principalId
    roleIds: [
      roles.blobDataContributor
      roles.tableDataContributor
      roles.queueDataContributor // the job queues and lifeboat-flows: send and receive
    ]
  }
}

module functionRuntimeRoles 'modules/storage-rbac.bicep' = {
  name: 'function-runtime-roles'
  params: {
    storageAccountName: runtime.outputs.name
    principalId: functionApp.outputs.principalId
    // the Functions host and the Durable Functions task hub (Azure Storage provider: queues,
    // tables, blobs) on identity-based AzureWebJobsStorage; Blob Data Owner covers the
    // Blob Data Contributor Durable Functions asks for
    roleIds: [
      roles.blobDataOwner // required by the Functions host for identity-based AzureWebJobsStorage
      roles.queueDataContributor
      roles.tableDataContributor
    ]
  }
}

module functionTelemetryRole 'modules/insights-rbac.bicep' = {
  name: 'function-telemetry-role'
  params: {
    insightsName: monitoring.outputs.insightsName
    principalId: functionApp.outputs.principalId
  }
}

module apiVault 'modules/keyvault.bicep' = {
  name: 'api-vault'
  params: {
    location: location
    name: apiVaultName
    secrets: {
      items: [
        { name: 'jwt-secret', value: jwtSecret }
      ]
    }
    readerPrincipalIds: [
      functionApp.outputs.principalId
    ]
    subnetIds: [
      network.outputs.functionsSubnetId
    ]
    allowedIpRanges: allowedIpRanges
    secretExpiry: secretExpiry
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module nodes 'modules/nodes.bicep' = {
  name: 'nodes'
  params: {
    location: location
    prefix: prefix
    subnetId: network.outputs.nodesSubnetId
    vmSize: nodeSize
    minCount: nodeCount
    maxCount: nodeMaxCount
    adminPublicKey: nodeAdminPublicKey
    apiUrl: 'https://${functionApp.outputs.hostName}'
    siteId: siteId
    vaultName: nodesVaultName
    nodePackage: nodePackage
    dataAccountId: data.outputs.id
    queueName: queueName
    tags: tags
  }
}

module nodesVault 'modules/keyvault.bicep' = {
  name: 'nodes-vault'
  params: {
    location: location
    name: nodesVaultName
    secrets: {
      items: [
        { name: 'node-token', value: nodeToken }
        { name: 'repository-connection-string', value: repositoryConnectionString }
      ]
    }
    readerPrincipalIds: [
      nodes.outputs.principalId
    ]
    subnetIds: [
      network.outputs.nodesSubnetId
    ]
    allowedIpRanges: allowedIpRanges
    secretExpiry: secretExpiry
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module nodesDataRoles 'modules/storage-rbac.bicep' = {
  name: 'nodes-data-roles'
  params: {
    storageAccountName: data.outputs.name
    principalId: nodes.outputs.principalId
    roleIds: [
      roles.blobDataContributor // the repository; nodes reach the queue only through the API
    ]
  }
}

// Recovery into Azure: the staged VHDs (container scope only) and the custom role in the
// recovery resource group, for the Function App (Durable Functions flow) and the nodes
// (migrations).
module stagingRoles 'modules/container-rbac.bicep' = {
  name: 'recovery-staging-roles'
  params: {
    storageAccountName: staging.outputs.name
    containerName: stagingContainer
    principalIds: [
      functionApp.outputs.principalId
      nodes.outputs.principalId
    ]
    roleId: roles.blobDataContributor
  }
}

module recoveryRoles 'modules/recovery-rbac.bicep' = {
  name: 'recovery-roles'
  scope: resourceGroup(recoveryResourceGroupName)
  params: {
    principalIds: [
      functionApp.outputs.principalId
      nodes.outputs.principalId
    ]
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    prefix: prefix
    alertEmail: alertEmail
    workspaceId: monitoring.outputs.workspaceId
    functionAppId: functionApp.outputs.id
    nodesId: nodes.outputs.id
    tags: tags
  }
}

output apiUrl string = 'https://${functionApp.outputs.hostName}'
output functionAppName string = functionApp.outputs.name
output dataAccountName string = data.outputs.name
output repositoryUrl string = 'azure://${repositoryContainer}'
output apiVaultName string = apiVaultName
output nodesVaultName string = nodesVaultName
output recoveryRoleDefinitionId string = recoveryRoles.outputs.roleDefinitionId
output recoveryStagingUrl string = '${staging.outputs.blobEndpoint}${stagingContainer}'
