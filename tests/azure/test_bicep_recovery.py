"""Recovery into Azure in the Bicep templates, offline (pycep-parser): the least-privilege
"Lifeboat recovery operator" role (exact actions, no wildcards, assignable at the recovery
resource group only) and its assignments to the Function App and the nodes, the VHD
staging container and its container-scoped blob role, the flow queue, the Durable Functions
storage roles and the recovery app settings. checkov runs over these templates in
test_bicep_templates.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycep import BicepParser

BICEP = Path(__file__).resolve().parents[2] / "bicep"

# Each action is explained in docs/deploy-azure.md ("Recovery into Azure").
RECOVERY_ACTIONS = [
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Compute/virtualMachines/instanceView/read",
    "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/delete",
    "Microsoft.Network/networkInterfaces/join/action",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/write",
    "Microsoft.Network/virtualNetworks/delete",
    "Microsoft.Network/virtualNetworks/subnets/read",
    "Microsoft.Network/virtualNetworks/subnets/write",
    "Microsoft.Network/virtualNetworks/subnets/delete",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/networkSecurityGroups/read",
    "Microsoft.Network/networkSecurityGroups/join/action",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
    "Microsoft.Resources/tags/read",
]

BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
PRINCIPALS = ["functionApp.outputs.principalId", "nodes.outputs.principalId"]


def parse(rel: str) -> dict[str, Any]:
    return dict(BicepParser().parse(file_path=BICEP / rel))


_FUNCTIONS = {"resource_group": "resourceGroup", "subscription": "subscription"}


def expr(node: Any) -> Any:
    """A pycep expression as Bicep-like text (``resourceGroup().id``, ``nodes.outputs.principalId``);
    plain values (strings, numbers, lists) unchanged."""
    if isinstance(node, list):
        return [expr(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "operator" in node and node["operator"]["type"] == "property_accessor":
        ops = node["operator"]["operands"]
        return f"{expr(ops['operand_1'])}.{expr(ops['operand_2'])}"
    if "function" in node:
        fn = node["function"]
        args = [str(expr(v)) for v in (fn.get("parameters") or {}).values() if v is not None]
        return f"{_FUNCTIONS.get(fn['type'], fn['type'])}({', '.join(args)})"
    return node


MAIN = parse("main.bicep")


def module(name: str) -> dict[str, Any]:
    return MAIN["modules"][name]["config"]


def var(name: str) -> Any:
    return MAIN["variables"][name]["value"]


def test_recovery_role_has_exactly_the_expected_actions_and_no_wildcard() -> None:
    role = parse("modules/recovery-rbac.bicep")["resources"]["recoveryOperator"]
    assert role["type"] == "Microsoft.Authorization/roleDefinitions"
    props = role["config"]["properties"]
    assert props["type"] == "CustomRole"
    assert props["roleName"].startswith("Lifeboat recovery operator")
    [permission] = props["permissions"]
    assert permission["actions"] == RECOVERY_ACTIONS
    assert len(set(RECOVERY_ACTIONS)) == len(RECOVERY_ACTIONS)
    assert not any("*" in a for a in permission["actions"])
    assert permission["notActions"] == permission["dataActions"] == permission["notDataActions"] == []


def test_recovery_role_is_assignable_at_the_recovery_resource_group_only() -> None:
    rbac = parse("modules/recovery-rbac.bicep")
    assert rbac["globals"]["scope"]["value"] == "resourceGroup"
    props = rbac["resources"]["recoveryOperator"]["config"]["properties"]
    # the module's own resource group, which main.bicep sets to the recovery resource group
    assert expr(props["assignableScopes"]) == ["resourceGroup().id"]
    assert expr(module("recoveryRoles")["scope"]) == "resourceGroup(recoveryResourceGroupName)"
    default = MAIN["parameters"]["recoveryResourceGroupName"]["default"]
    assert expr(default) == "resourceGroup().name", "defaults to the deployment's resource group"


def test_recovery_role_is_assigned_to_the_function_app_and_the_nodes() -> None:
    rbac = parse("modules/recovery-rbac.bicep")
    assignments = rbac["resources"]["assignments"]
    assert assignments["type"] == "Microsoft.Authorization/roleAssignments"
    assert assignments["config"]["loop_type"]["detail"] == {
        "item_name": "principalId",
        "array_name": "principalIds",
    }
    body = assignments["config"]["config"]
    assert "scope" not in body, "assigned at the module's (the recovery) resource group, nowhere else"
    assert body["properties"]["roleDefinitionId"] == "roleDefinitionId"
    assert body["properties"]["principalId"] == "principalId"
    role_id = expr(rbac["variables"]["roleDefinitionId"]["value"])
    assert (
        role_id == "subscription_resource_id(Microsoft.Authorization/roleDefinitions, recoveryOperator.name)"
    )
    assert expr(module("recoveryRoles")["params"]["principalIds"]) == PRINCIPALS
    assert (
        expr(MAIN["outputs"]["recoveryRoleDefinitionId"]["value"]) == "recoveryRoles.outputs.roleDefinitionId"
    )


def test_staging_container_in_a_locally_redundant_account_in_the_recovery_region() -> None:
    assert var("stagingContainer") == "recovery-staging"
    params = module("staging")["params"]
    assert params["containers"] == ["stagingContainer"]
    assert params["location"] == "recoveryLocation"
    assert params["locallyRedundant"] is True  # disk page blobs: not on ZRS/GZRS
    assert MAIN["modules"]["staging"]["detail"]["path"] == "modules/storage.bicep"
    assert expr(MAIN["parameters"]["recoveryLocation"]["default"]) == "location"
    assert (
        MAIN["outputs"]["recoveryStagingUrl"]["value"] == "${staging.outputs.blobEndpoint}${stagingContainer}"
    )


def test_staging_blob_role_is_scoped_to_the_container() -> None:
    rbac = parse("modules/container-rbac.bicep")
    resources = rbac["resources"]
    container = resources["container"]
    assert container["existing"] is True
    assert container["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
    assert container["config"]["parent"] == "blobService"
    assert container["config"]["name"] == "containerName"
    body = resources["assignments"]["config"]["config"]
    assert body["scope"] == "container"
    params = module("stagingRoles")["params"]
    assert params["containerName"] == "stagingContainer"
    assert expr(params["storageAccountName"]) == "staging.outputs.name"
    assert expr(params["roleId"]) == "roles.blobDataContributor"
    assert var("roles")["blobDataContributor"] == BLOB_DATA_CONTRIBUTOR
    assert expr(params["principalIds"]) == PRINCIPALS
    # no account-wide data role on the staging account
    for name, m in MAIN["modules"].items():
        if m["detail"]["path"] == "modules/storage-rbac.bicep":
            account = expr(m["config"]["params"]["storageAccountName"])
            assert account != "staging.outputs.name", f"{name} grants a role on the whole staging account"


def test_flow_queue_and_durable_functions_storage_roles() -> None:
    assert var("flowQueueName") == "lifeboat-flows"
    assert "flowQueueName" in module("data")["params"]["queues"]
    roles = var("roles")
    data_roles = expr(module("functionDataRoles")["params"]["roleIds"])
    # Queue Data Contributor on the data account covers sending (and receiving) on lifeboat-flows
    assert "roles.queueDataContributor" in data_roles
    assert roles["queueDataContributor"] == QUEUE_DATA_CONTRIBUTOR
    # identity-based AzureWebJobsStorage + Durable Functions' task hub on the runtime account
    assert expr(module("functionRuntimeRoles")["params"]["storageAccountName"]) == "runtime.outputs.name"
    runtime_roles = expr(module("functionRuntimeRoles")["params"]["roleIds"])
    assert set(runtime_roles) == {
        "roles.blobDataOwner",
        "roles.queueDataContributor",
        "roles.tableDataContributor",
    }
    assert roles["blobDataOwner"] == BLOB_DATA_OWNER
    assert roles["tableDataContributor"] == TABLE_DATA_CONTRIBUTOR


def test_function_app_recovery_settings() -> None:
    app = parse("modules/functionapp.bicep")
    settings = {
        s["name"]: expr(s["value"])
        for s in app["resources"]["site"]["config"]["properties"]["siteConfig"]["appSettings"]
    }
    assert settings["LIFEBOAT_FLOW_QUEUE"] == "flowQueueName"
    assert settings["AZURE_SUBSCRIPTION_ID"] == "subscription().subscriptionId"
    assert settings["LIFEBOAT_RECOVERY_RESOURCE_GROUP"] == "recoveryResourceGroupName"
    assert settings["LIFEBOAT_RECOVERY_LOCATION"] == "recoveryLocation"
    assert settings["LIFEBOAT_RECOVERY_STAGING_URL"] == "recoveryStagingUrl"
    assert settings["LIFEBOAT_RECOVERY_STORAGE_ACCOUNT_ID"] == "recoveryStorageAccountId"
    params = module("functionApp")["params"]
    assert params["flowQueueName"] == "flowQueueName"
    assert params["recoveryResourceGroupName"] == "recoveryResourceGroupName"
    assert params["recoveryLocation"] == "recoveryLocation"
    assert params["recoveryStagingUrl"] == "${staging.outputs.blobEndpoint}${stagingContainer}"
    assert expr(params["recoveryStorageAccountId"]) == "staging.outputs.id"
