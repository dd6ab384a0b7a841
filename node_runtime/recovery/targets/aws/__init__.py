"""The AWS recovery target: EBS snapshots, an AMI, ENIs and an EC2 instance.

One module per capability, each listing what it creates in ``resources`` as soon as it
exists: :mod:`.disks` (``write_disk`` / ``patch_disk``: ``ebs-snapshot``), :mod:`.launch`
(``create_instance``: ``ami``; ``power_on``: ``ec2-instance``), :mod:`.network`
(``attach_networks``: ``eni``), :mod:`.validation` (status checks, console marker) and
:mod:`.cleanup` (``delete``, ``find_tagged``). They share an :class:`AwsContext` (clients,
settings, waits); :mod:`.common` also maps botocore errors to ours.
"""

from __future__ import annotations

import functools
from typing import Any

from node_runtime.recovery.targets.aws.cleanup import AwsCleaner
from node_runtime.recovery.targets.aws.common import KIND, AwsContext, Poll, machine_tags
from node_runtime.recovery.targets.aws.disks import AwsDisks
from node_runtime.recovery.targets.aws.launch import DEVICE_NAMES, AwsLauncher
from node_runtime.recovery.targets.aws.network import AwsNetworks
from node_runtime.recovery.targets.aws.validation import AwsValidator
from node_runtime.recovery.targets.base import CapabilitySet, Target

__all__ = [
    "DEVICE_NAMES", "KIND", "AwsCleaner", "AwsContext", "AwsDisks", "AwsLauncher", "AwsNetworks", "AwsTarget",
    "AwsValidator", "Poll", "aws_target", "machine_tags",
]  # fmt: skip


class AwsTarget(CapabilitySet):
    """The five AWS capabilities over one :class:`AwsContext` (same arguments), callable as one.

    :meth:`target` is the :class:`Target` bundle; the capabilities' methods are also
    reachable here (``write_disk``, ``delete``, ``find_tagged``...) for tests and tools.
    """

    kind = KIND

    def __init__(self, ec2: Any, ebs: Any, **options: Any) -> None:
        """``options``: :class:`AwsContext`'s keyword arguments."""
        self.context = AwsContext(ec2, ebs, **options)
        self.cleaner = AwsCleaner(self.context)
        self.disks = AwsDisks(self.context, self.cleaner)
        self.launcher = AwsLauncher(self.context, self.cleaner)
        self.networks = AwsNetworks(self.context, self.cleaner)
        self.validator = AwsValidator(self.context)


def aws_target(session_or_region: Any, *, threads: int = 8, max_attempts: int = 10, **options: Any) -> Target:
    """The AWS :class:`Target` from a boto3 ``Session`` or a region name.

    The clients retry in botocore's ``standard`` mode (``max_attempts``) and pool enough
    connections for ``threads`` concurrent block writes; ``options`` are
    :class:`AwsContext`'s other keyword arguments.
    """
    import boto3
    from botocore.config import Config

    session = (
        boto3.session.Session(region_name=session_or_region)
        if isinstance(session_or_region, str)
        else session_or_region
    )
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max(10, 2 * threads + 2),
    )
    client = functools.partial(session.client, config=config)
    return AwsTarget(client("ec2"), client("ebs"), threads=threads, **options).target()
