"""The sizing policy: plan instance types win; captured hardware picks the smallest fit."""

from shared.domain.hardware import HardwareProfile
from shared.policies.sizing import choose_size


def test_explicit_instance_type_wins() -> None:
    assert choose_size("aws", HardwareProfile(cpus=8, memory_mb=32768), "c5.large").instance_type == "c5.large"


def test_no_profile_means_the_target_default() -> None:
    assert choose_size("qemu", None, None).instance_type is None


def test_qemu_takes_the_captured_size_exactly() -> None:
    assert choose_size("qemu", HardwareProfile(cpus=2, memory_mb=1536), None).instance_type == "2c1536m"
    assert choose_size("qemu", HardwareProfile(cpus=1, memory_mb=32), None).instance_type == "1c64m"


def test_clouds_take_the_smallest_size_that_fits() -> None:
    hw = HardwareProfile(cpus=4, memory_mb=8192)
    assert choose_size("aws", hw, None).instance_type == "m6i.xlarge"
    assert choose_size("azure", hw, None).instance_type == "Standard_D4s_v5"
    assert choose_size("aws", HardwareProfile(cpus=2, memory_mb=2048), None).instance_type == "t3.small"


def test_a_machine_bigger_than_the_table_gets_the_largest_with_a_reason() -> None:
    decision = choose_size("aws", HardwareProfile(cpus=128, memory_mb=1 << 20), None)
    assert decision.instance_type == "m6i.16xlarge" and "below the captured" in decision.reason


def test_a_machine_with_more_networks_gets_a_size_that_takes_its_nics() -> None:
    hw = HardwareProfile(cpus=4, memory_mb=8192)
    assert choose_size("azure", hw, None, nics=1).instance_type == "Standard_D4s_v5"  # 2 NICs
    decision = choose_size("azure", hw, None, nics=3)
    assert decision.instance_type == "Standard_D8s_v5" and "3 NICs" in decision.reason
    assert choose_size("aws", HardwareProfile(cpus=2, memory_mb=1024), None, nics=3).instance_type == "t3.small"
    assert choose_size("qemu", hw, None, nics=8).instance_type == "4c8192m"  # QEMU takes any number


def test_more_nics_than_any_size_takes_is_said_in_the_reason() -> None:
    decision = choose_size("azure", HardwareProfile(cpus=2, memory_mb=2048), None, nics=9)
    assert decision.instance_type == "Standard_D64s_v5" and "no listed size takes 9 NICs" in decision.reason
