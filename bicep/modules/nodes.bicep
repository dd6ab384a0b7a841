// Replication nodes: an Ubuntu VM scale set with a system-assigned managed identity, no
// public IPs, encryption at host, SSH keys only, cloud-init that installs and starts
// `lifeboat node run`, and autoscale on the job queue's length.

param location string
param prefix string
param subnetId string

@description('VM size of a node (replication is CPU for hashing/compression and network).')
param vmSize string = 'Standard_D4s_v5'

@description('Nodes always running.')
@minValue(0)
@maxValue(100)
param minCount int = 2

@description('Upper bound of autoscale.')
@minValue(1)
@maxValue(1000)
param maxCount int = 10

@description('Queued jobs per node before scaling out.')
param jobsPerNode int = 20

param adminUsername string = 'lifeboat'

@description('SSH public key of the admin user (password login is disabled).')
param adminPublicKey string

@description('API base URL the nodes call.')
param apiUrl string

@description('Site the nodes serve.')
param siteId string

@description('Key Vault (name) holding node-token and, optionally, repository-connection-string.')
param vaultName string

@description('pip requirement installing the Lifeboat runtime (a version, a wheel URL).')
param nodePackage string

@description('Data storage account and the job queue autoscale watches.')
param dataAccountId string
param queueName string

param tags object = {}

var cloudInit = replace(replace(replace(replace(replace(loadTextContent('node-cloud-init.yaml'),
  '__VAULT_NAME__', vaultName), '__VAULT_DNS__', environment().suffixes.keyvaultDns),
  '__SITE_ID__', siteId), '__API_URL__', apiUrl), '__PACKAGE__', nodePackage)

resource vmss 'Microsoft.Compute/virtualMachineScaleSets@2024-03-01' = {
  // checkov:skip=CKV_AZURE_95:Automatic OS image upgrades reimage nodes mid-replication and need a health probe the node has not; Ubuntu's unattended-upgrades patches nodes in place and new images roll out with a redeploy
  name: '${prefix}-nodes'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: vmSize
    tier: 'Standard'
    capacity: minCount
  }
  properties: {
    orchestrationMode: 'Uniform'
    overprovision: false
    upgradePolicy: {
      mode: 'Manual'
    }
    automaticRepairsPolicy: {
      enabled: false
    }
    scaleInPolicy: {
      rules: [
        'NewestVM'
      ]
    }
    virtualMachineProfile: {
      securityProfile: {
        encryptionAtHost: true
      }
      osProfile: {
        computerNamePrefix: '${prefix}-node'
        adminUsername: adminUsername
        customData: base64(cloudInit)
        linuxConfiguration: {
          disablePasswordAuthentication: true
          provisionVMAgent: true
          ssh: {
            publicKeys: [
              {
                path: '/home/${adminUsername}/.ssh/authorized_keys'
                keyData: adminPublicKey
              }
            ]
          }
          patchSettings: {
            patchMode: 'ImageDefault'
          }
        }
      }
      storageProfile: {
        imageReference: {
          publisher: 'Canonical'
          offer: 'ubuntu-24_04-lts'
          sku: 'server'
          version: 'latest'
        }
        osDisk: {
          createOption: 'FromImage'
          caching: 'ReadWrite'
          diskSizeGB: 64
          managedDisk: {
            storageAccountType: 'Premium_LRS'
          }
        }
      }
      networkProfile: {
        networkInterfaceConfigurations: [
          {
            name: 'nic'
            properties: {
              primary: true
              enableAcceleratedNetworking: true
              ipConfigurations: [
                {
                  name: 'ipconfig'
                  properties: {
                    subnet: {
                      id: subnetId
                    }
                    // no publicIPAddressConfiguration: nodes have no public IP
                  }
                }
              ]
            }
          }
        ]
      }
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true // managed boot-diagnostics storage
        }
      }
    }
  }
}

resource autoscale 'Microsoft.Insights/autoscalesettings@2022-10-01' = {
  name: '${prefix}-nodes-autoscale'
  location: location
  tags: tags
  properties: {
    enabled: true
    targetResourceUri: vmss.id
    profiles: [
      {
        name: 'queue-length'
        capacity: {
          minimum: string(minCount)
          maximum: string(maxCount)
          default: string(minCount)
        }
        rules: [
          {
            metricTrigger: {
              metricName: 'ApproximateMessageCount'
              metricResourceUri: '${dataAccountId}/services/queue/queues/${queueName}'
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT5M'
              timeAggregation: 'Average'
              operator: 'GreaterThan'
              threshold: jobsPerNode
            }
            scaleAction: {
              direction: 'Increase'
              type: 'ChangeCount'
              value: '2'
              cooldown: 'PT5M'
            }
          }
          {
            // a running job's message is invisible, so "no visible message" is not "idle":
            // scale in slowly, one node at a time
            metricTrigger: {
              metricName: 'ApproximateMessageCount'
              metricResourceUri: '${dataAccountId}/services/queue/queues/${queueName}'
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT30M'
              timeAggregation: 'Maximum'
              operator: 'LessThan'
              threshold: 1
            }
            scaleAction: {
              direction: 'Decrease'
              type: 'ChangeCount'
              value: '1'
              cooldown: 'PT30M'
            }
          }
        ]
      }
    ]
  }
}

output id string = vmss.id
output name string = vmss.name
output principalId string = vmss.identity.principalId
