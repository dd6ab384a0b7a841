// The control plane: a Linux Function App on the Flex Consumption plan (Python 3.11)
// serving the REST API, the scheduler and the recovery flow (Durable Functions), with a
// system-assigned managed identity, VNet integration, HTTPS only, FTP/basic publishing
// disabled, and settings that point the app at the data account (identity-based), the Key
// Vault reference of the JWT signing key, and the recovery resource group and staging container.

param location string
param prefix string

@description('Runtime storage account (host state and the deployment package container).')
param runtimeAccountName string
param runtimeBlobEndpoint string

@description('Container of the deployment package in the runtime account.')
param deploymentContainer string = 'deployments'

@description('Data account holding the metadata table and the job queues.')
param dataAccountName string
param tableName string
param queueName string

@description('Queue (in the data account) the API puts recovery start requests on for the Durable Functions flow.')
param flowQueueName string

@description('Resource group recovered VMs, disks and NICs are created in.')
param recoveryResourceGroupName string

@description('Region of recovered VMs (and of the staging account).')
param recoveryLocation string

@description('URL of the blob container staging VHD page blobs for import as managed disks.')
param recoveryStagingUrl string

@description('Resource id of the staging storage account (storageAccountId of a disk import).')
param recoveryStorageAccountId string

@description('Secret URI of the JWT signing key (a Key Vault reference is built from it).')
param jwtSecretUri string

param insightsConnectionString string
param workspaceId string
param subnetId string

@description('Maximum instances the Flex plan may scale to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Entra ID app registration (client id) for App Service Authentication; empty: the API\'s own users and tokens only.')
param entraClientId string = ''

@description('JSON object mapping Entra app roles or group ids to Lifeboat roles.')
param entraRoleMap string = '{}'

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption has no instance count to spread; zone redundancy of the Flex plan is a per-region preview, enable it where offered
  name: '${prefix}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

var entra = !empty(entraClientId)

resource site 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222:This is the public REST API (users, the CLI, the console); every route but /health is authenticated by the API itself
  // checkov:skip=CKV_AZURE_17:Callers authenticate with bearer tokens (Lifeboat JWTs, API tokens) or Entra ID; client certificates are not part of the API's auth
  // checkov:skip=CKV_AZURE_212:A Flex Consumption app scales from zero across the platform's instances; there is no fixed instance count to raise
  // checkov:skip=CKV_AZURE_213:Health check (instance eviction) is not available on consumption plans; GET /health is public for external probes
  name: '${prefix}-api'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: runtimeAccountName }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'LIFEBOAT_STORAGE__accountName', value: dataAccountName }
        { name: 'LIFEBOAT_TABLE', value: tableName }
        { name: 'LIFEBOAT_QUEUE', value: queueName }
        { name: 'LIFEBOAT_DEAD_LETTER_QUEUE', value: '${queueName}-dlq' }
        { name: 'LIFEBOAT_FLOW_QUEUE', value: flowQueueName }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'LIFEBOAT_RECOVERY_RESOURCE_GROUP', value: recoveryResourceGroupName }
        { name: 'LIFEBOAT_RECOVERY_LOCATION', value: recoveryLocation }
        { name: 'LIFEBOAT_RECOVERY_STAGING_URL', value: recoveryStagingUrl }
        { name: 'LIFEBOAT_RECOVERY_STORAGE_ACCOUNT_ID', value: recoveryStorageAccountId }
        { name: 'LIFEBOAT_JWT_SECRET', value: '@Microsoft.KeyVault(SecretUri=${jwtSecretUri})' }
        { name: 'LIFEBOAT_ENTRA_AUTH', value: entra ? 'true' : 'false' }
        { name: 'LIFEBOAT_ENTRA_ROLE_MAP', value: entraRoleMap }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${runtimeBlobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP and no basic (user/password) publishing: deploy with Entra ID (az CLI).
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Optional: Entra ID users through App Service Authentication. Unauthenticated requests
// still reach the app (nodes use API tokens; the API answers 401 itself); the platform
// validates Entra sessions/tokens and passes X-MS-CLIENT-PRINCIPAL (functions/azure/entra.py).
// This is the authsettingsV2 document, not a site: checkov applies its web-app checks to every
// Microsoft.Web/sites/config resource, so they are skipped here (the site itself is checked).
resource auth 'Microsoft.Web/sites/config@2023-12-01' = if (entra) {
  // checkov:skip=CKV_AZURE_13:This resource IS the App Service Authentication configuration
  // checkov:skip=CKV_AZURE_63:Site check misapplied to authsettingsV2 (logging goes to Log Analytics through FunctionAppLogs)
  // checkov:skip=CKV_AZURE_65:Site check misapplied to authsettingsV2
  // checkov:skip=CKV_AZURE_66:Site check misapplied to authsettingsV2
  // checkov:skip=CKV_AZURE_80:Site check misapplied to authsettingsV2 (Python app, no .NET)
  // checkov:skip=CKV_AZURE_88:Site check misapplied to authsettingsV2 (Functions apps keep no state on Azure Files)
  // checkov:skip=CKV_AZURE_222:Site check misapplied to authsettingsV2
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
            entraClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource logs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'FunctionAppLogs', enabled: true }
    ]
  }
}

output name string = site.name
output id string = site.id
output principalId string = site.identity.principalId
output hostName string = site.properties.defaultHostName
