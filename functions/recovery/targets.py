"""Composition: a site's recovery-target configuration -> the platform's capabilities.

Platform SDKs are imported only for the platform asked for. Azure compute needs an
adapter of :class:`~node_runtime.recovery.targets.azure_compute.AzureCompute` that calls
Azure Resource Manager; none ships yet, so an Azure target is refused with that reason
(page-blob reconstruction works; see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path

from node_runtime.recovery.targets.base import Target
from shared.domain.recovery import AwsTargetConfig, AzureTargetConfig, QemuTargetConfig, TargetConfig
from shared.errors import InvalidStateError


def build_target(config: TargetConfig) -> Target:
    if isinstance(config, QemuTargetConfig):
        from node_runtime.recovery.targets.qemu import qemu_target

        return qemu_target(Path(config.work_dir), config.image_format)
    if isinstance(config, AwsTargetConfig):
        from node_runtime.recovery.targets.aws import aws_target

        return aws_target(
            config.region, kms_key_arn=config.kms_key_arn, default_instance_type=config.default_instance_type
        )
    if isinstance(config, AzureTargetConfig):
        raise InvalidStateError(
            "recovering into Azure needs an Azure Resource Manager compute adapter on this node, "
            "which this version does not ship (page-blob VHD reconstruction is available)",
            platform="azure",
        )
    raise InvalidStateError(f"unknown recovery platform {config!r}")
