"""Instance sizing: the target platform's size for a machine's captured hardware (pure).

An explicit ``instance_type`` in the plan always wins. Otherwise the captured CPUs and
memory pick: on QEMU the exact ``<cpus>c<memory>m``; on AWS and Azure the smallest size of
a general-purpose family that has at least as many vCPUs and as much memory and takes as
many NICs as the machine has networks, else the largest listed that takes its NICs, and
the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.hardware import HardwareProfile

#: (name, vCPUs, memory MiB, most NICs), smallest first (NICs: EC2 ENIs per type, Azure's
#: "max NICs" of the size's documentation)
AWS_SIZES: list[tuple[str, int, int, int]] = [
    ("t3.micro", 2, 1024, 2), ("t3.small", 2, 2048, 3), ("t3.medium", 2, 4096, 3), ("m6i.large", 2, 8192, 3),
    ("m6i.xlarge", 4, 16384, 4), ("m6i.2xlarge", 8, 32768, 4), ("m6i.4xlarge", 16, 65536, 8),
    ("m6i.8xlarge", 32, 131072, 8), ("m6i.16xlarge", 64, 262144, 15),
]  # fmt: skip
AZURE_SIZES: list[tuple[str, int, int, int]] = [
    ("Standard_B1s", 1, 1024, 2), ("Standard_B1ms", 1, 2048, 2), ("Standard_B2s", 2, 4096, 3),
    ("Standard_D2s_v5", 2, 8192, 2), ("Standard_D4s_v5", 4, 16384, 2), ("Standard_D8s_v5", 8, 32768, 4),
    ("Standard_D16s_v5", 16, 65536, 8), ("Standard_D32s_v5", 32, 131072, 8), ("Standard_D64s_v5", 64, 262144, 8),
]  # fmt: skip
QEMU_MAX_CPUS = 64
QEMU_MIN_MEMORY_MIB = 64


@dataclass(frozen=True)
class SizeDecision:
    instance_type: str | None  # None: the target's default
    reason: str


def choose_size(
    platform: str, hardware: HardwareProfile | None, explicit: str | None, *, nics: int = 1
) -> SizeDecision:
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
    nic_note = f" and {nics} NICs" if nics > 1 else ""
    for name, c, m, n in table:
        if c >= cpus and m >= memory and n >= nics:
            return SizeDecision(name, f"smallest size with at least {cpus} vCPUs, {memory} MiB{nic_note}")
    fitting = [row for row in table if row[3] >= nics] or table
    name, c, m, n = fitting[-1]
    if n < nics:
        return SizeDecision(name, f"no listed size takes {nics} NICs; the largest ({n} NICs) is used")
    return SizeDecision(
        name, f"largest listed size ({c} vCPUs, {m} MiB) is below the captured {cpus}/{memory}"
    )
