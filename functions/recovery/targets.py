"""Composition: a site's recovery-target configuration -> the platform's capabilities.

Platform SDKs are imported only for the platform asked for. Azure: the staging container
with ``AZURE_STORAGE_CONNECTION_STRING`` when that names the staging account (a node's may
name the repository's account instead), else with the ambient identity
(``DefaultAzureCredential``: managed identity, service principal, CLI login), and ARM
through :class:`~node_runtime.recovery.targets.azure.arm.ArmCompute` with the same identity. ``azure_credential`` / ``azure_options`` replace the identity and pass client
options (``connection_verify``, ``polling_interval`` ...) to every Azure SDK client.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from node_runtime.recovery.targets.base import Target
from shared.domain.recovery import AwsTargetConfig, AzureTargetConfig, QemuTargetConfig, TargetConfig
from shared.errors import InvalidInputError, InvalidStateError


def build_target(
    config: TargetConfig, *, azure_credential: Any = None, azure_options: dict[str, Any] | None = None
) -> Target:
    if isinstance(config, QemuTargetConfig):
        from node_runtime.recovery.targets.qemu import qemu_target

        return qemu_target(Path(config.work_dir), config.image_format)
    if isinstance(config, AwsTargetConfig):
        from node_runtime.recovery.targets.aws import aws_target

        return aws_target(
            config.region, kms_key_arn=config.kms_key_arn, default_instance_type=config.default_instance_type
        )
    if isinstance(config, AzureTargetConfig):
        return _azure(config, azure_credential, dict(azure_options or {}))
    raise InvalidStateError(f"unknown recovery platform {config!r}")


def _azure(config: AzureTargetConfig, credential: Any, options: dict[str, Any]) -> Target:
    from node_runtime.recovery.targets.azure import azure_target
    from node_runtime.recovery.targets.azure.arm import ArmCompute, default_credential

    credential = credential or default_credential()
    compute = ArmCompute(
        credential, config.subscription_id, storage_account_id=config.storage_account_id,
        base_url=config.arm_endpoint, **options,
    )  # fmt: skip
    return azure_target(
        _container(config.container_url, credential, options), compute, location=config.location,
        resource_group=config.resource_group, default_vm_size=config.default_vm_size, os_type=config.os_type,
        isolated_subnets=config.isolated_subnets, poll_interval=config.poll_seconds,
    )  # fmt: skip


def _container(url: str, credential: Any, options: dict[str, Any]) -> Any:
    from azure.storage.blob import BlobServiceClient, ContainerClient

    name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise InvalidInputError(f"{url!r} names no container", container_url=url)
    blob_options = {k: v for k, v in options.items() if k == "connection_verify"}
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:  # the repository's account on a node: use it only if it is the staging account too
        service = BlobServiceClient.from_connection_string(connection, **blob_options)
        if url.rstrip("/") == f"{str(service.url).rstrip('/')}/{name}":
            return service.get_container_client(name)
    return ContainerClient.from_container_url(url, credential=credential, **blob_options)
