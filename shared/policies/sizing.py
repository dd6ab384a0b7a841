"""Instance sizing: the target platform's size for a machine's captured hardware (pure).

An explicit ``instance_type`` in the plan always wins. Otherwise the captured CPUs and
memory pick: on QEMU the exact ``<cpus>c<memory>m``; on AWS and Azure the smallest size of
a general-purpose family that has at least as many vCPUs and as much memory, else the
largest listed, and the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.hardware import HardwareProfile

#: (name, vCPUs, memory MiB), smallest first
AWS_SIZES: list[tuple[str, int, int]] = [
    ("t3.micro", 2, 1024), ("t3.small", 2, 2048), ("t3.medium", 2, 4096), ("m6i.large", 2, 8192),
    ("m6i.xlarge", 4, 16384), ("m6i.2xlarge", 8, 32768), ("m6i.4xlarge", 16, 65536),
    ("m6i.8xlarge", 32, 131072), ("m6i.16xlarge", 64, 262144),
]  # fmt: skip
AZURE_SIZES: list[tuple[str, int, int]] = [
    ("Standard_B1s", 1, 1024), ("Standard_B1ms", 1, 2048), ("Standard_B2s", 2, 4096),
    ("Standard_D2s_v5", 2, 8192), ("Standard_D4s_v5", 4, 16384), ("Standard_D8s_v5", 8, 32768),
    ("Standard_D16s_v5", 16, 65536), ("Standard_D32s_v5", 32, 131072), ("Standard_D64s_v5", 64, 262144),
]  # fmt: skip
QEMU_MAX_CPUS = 64
QEMU_MIN_MEMORY_MIB = 64


@dataclass(frozen=True)
class SizeDecision:
    instance_type: str | None  # None: the target's default
    reason: str


def choose_size(platform: str, hardware: HardwareProfile | None, explicit: str | None) -> SizeDecision:
    if explicit:
        return SizeDecision(explicit, "the plan names the instance type")
    if hardware is None:
        return SizeDecision(None, "no hardware profile was captured: the target's default size")
    cpus, memory = hardware.cpus, hardware.memory_mb
    if platform == "qemu":
        c, m = min(cpus, QEMU_MAX_CPUS), max(memory, QEMU_MIN_MEMORY_MIB)
        return SizeDecision(f"{c}c{m}m", f"as captured: {cpus} vCPUs, {memory} MiB")
    table = AWS_SIZES if platform == "aws" else AZURE_SIZES if platform == "azure" else None
    if table is None:
        return SizeDecision(None, f"no size table for {platform}: the target's default size")
    for name, c, m in table:
        if c >= cpus and m >= memory:
            return SizeDecision(name, f"smallest size with at least {cpus} vCPUs and {memory} MiB")
    name, c, m = table[-1]
    return SizeDecision(name, f"largest listed size ({c} vCPUs, {m} MiB) is below the captured {cpus}/{memory}")
