"""Local-hypervisor validation: boot real disk images under QEMU (TCG) and look for a marker.

The disk is the tiny syslinux + busybox disk of ``tests/support/bootdisk.py`` (built
once per session; its kernel is cached across sessions). Each successful boot takes
about 6-10 s under TCG. Needs Debian ``qemu-system-x86 qemu-utils syslinux
syslinux-common mtools dosfstools busybox-static fdisk``; missing ones skip these
tests locally and fail the run when ``CI`` is set.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from node_runtime.recovery.qemu import BootResult, Nic, boot_and_validate, convert_image, qemu_command
from shared.errors import InvalidInputError, TargetError
from tests.servers import in_ci
from tests.support import bootdisk

BOOT_TIMEOUT_S = 120.0  # generous for a loaded CI machine; a healthy boot needs ~6-10 s
MiB = 1 << 20


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI is set, so missing tools fail the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def qemu_tools() -> None:
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        if not shutil.which(tool):
            _unavailable(f"{tool} not found: install the Debian package {package!r}")


@pytest.fixture(scope="session")
def boot_disk(qemu_tools: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(raw boot disk, its marker), built once per session."""
    marker = f"lb-{uuid.uuid4().hex[:12]}"
    path = tmp_path_factory.mktemp("bootdisk") / "boot.img"
    try:
        bootdisk.build_boot_disk(path, marker=marker)
    except (bootdisk.MissingToolError, bootdisk.KernelUnavailableError) as e:
        _unavailable(str(e))
    return path, marker


def _processes_using(image: Path) -> list[int]:
    """Pids whose command line names ``image``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(image).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _boot(image: Path, marker: str, log: Path, **kw: object) -> BootResult:
    kw.setdefault("timeout_s", BOOT_TIMEOUT_S)
    return boot_and_validate(image, marker=bootdisk.boot_line(marker), serial_log=log, **kw)  # type: ignore[arg-type]


def _assert_booted(result: BootResult, marker: str, log: Path) -> None:
    assert result.ok, f"{result.reason}\n{result.log_excerpt}"
    assert result.seconds_to_marker is not None and 0 < result.seconds_to_marker < BOOT_TIMEOUT_S
    assert result.exit_code == 0, result.log_excerpt  # the guest powered itself off
    assert not result.timed_out and result.failed_on is None
    assert bootdisk.boot_line(marker) in result.log_excerpt
    assert bootdisk.boot_line(marker).encode() in log.read_bytes()


def test_raw_disk_boots_to_its_marker(boot_disk: tuple[Path, str], tmp_path: Path) -> None:
    image, marker = boot_disk
    before = image.read_bytes()[: 2 * MiB]
    log = tmp_path / "serial.log"
    result = _boot(image, marker, log, fmt="raw")
    _assert_booted(result, marker, log)
    print(f"raw boot: marker after {result.seconds_to_marker:.1f}s, run {result.seconds:.1f}s")
    assert "SYSLINUX" in log.read_text(errors="replace")
    assert image.read_bytes()[: 2 * MiB] == before  # validation ran on a snapshot


def test_qcow2_conversion_boots_to_the_same_marker(boot_disk: tuple[Path, str], tmp_path: Path) -> None:
    image, marker = boot_disk
    qcow2 = convert_image(image, tmp_path / "boot.qcow2", "qcow2")
    assert qcow2.read_bytes()[:4] == b"QFI\xfb"
    assert qcow2.stat().st_size < image.stat().st_size
    log = tmp_path / "serial.log"
    _assert_booted(_boot(qcow2, marker, log, fmt="qcow2"), marker, log)


def test_a_disk_with_another_marker_fails_validation(boot_disk: tuple[Path, str], tmp_path: Path) -> None:
    image, marker = boot_disk
    other = bootdisk.copy_with_marker(image, tmp_path / "other.img", marker="other-disk")
    assert (bootdisk.disk_marker(image), bootdisk.disk_marker(other)) == (marker, "other-disk")

    result = _boot(other, marker, tmp_path / "serial.log", fmt="raw")
    assert not result.ok, result.log_excerpt
    assert result.seconds_to_marker is None
    assert not result.timed_out, "the guest powers off by itself, well within the timeout"
    assert result.seconds < BOOT_TIMEOUT_S
    assert "BOOT-OK other-disk " in result.log_excerpt  # evidence: what the disk did print
    assert "without the marker" in result.reason


@pytest.fixture
def corrupted_disk(boot_disk: tuple[Path, str], tmp_path: Path) -> Path:
    """The boot disk with its first MiB (MBR, partition table) zeroed."""
    image, _ = boot_disk
    bad = tmp_path / "corrupted.img"
    shutil.copyfile(image, bad)
    with open(bad, "r+b") as f:
        f.write(bytes(MiB))
    return bad


def test_a_corrupted_disk_fails_as_soon_as_the_firmware_gives_up(
    boot_disk: tuple[Path, str], corrupted_disk: Path, tmp_path: Path
) -> None:
    _, marker = boot_disk
    result = _boot(corrupted_disk, marker, tmp_path / "serial.log", fmt="raw")
    assert not result.ok and not result.timed_out
    assert result.failed_on == "No bootable device"
    assert result.exit_code is None
    assert "No bootable device" in result.log_excerpt
    assert result.seconds < 30, "SeaBIOS gives up in about a second"


def test_the_timeout_is_hard_and_stops_qemu(
    boot_disk: tuple[Path, str], corrupted_disk: Path, tmp_path: Path
) -> None:
    _, marker = boot_disk
    # without fail patterns SeaBIOS would wait 60 s and reboot; the timeout must end it first
    result = _boot(corrupted_disk, marker, tmp_path / "serial.log", fmt="raw", timeout_s=4.0, fail_on=())
    assert not result.ok and result.timed_out
    assert 4.0 <= result.seconds < 15.0
    assert result.exit_code is None  # stopped by us, not exited by itself
    assert not _processes_using(corrupted_disk), "qemu must be gone when boot_and_validate returns"
    assert "marker not seen within" in result.reason
    assert "Boot failed" in result.log_excerpt


def test_the_wrong_format_is_reported_with_qemus_error(boot_disk: tuple[Path, str], tmp_path: Path) -> None:
    image, marker = boot_disk
    result = _boot(image, marker, tmp_path / "serial.log", fmt="qcow2", timeout_s=30.0)
    assert not result.ok and not result.timed_out
    assert result.exit_code not in (0, None)
    assert "qemu: " in result.log_excerpt and "qcow2" in result.log_excerpt


def test_failed_conversion_raises_and_leaves_nothing(boot_disk: tuple[Path, str], tmp_path: Path) -> None:
    image, _ = boot_disk
    dst = tmp_path / "out.vmdk"
    with pytest.raises(TargetError, match="qemu-img could not convert"):
        convert_image(image, dst, "vmdk", src_fmt="qcow2")
    assert not dst.exists()


def test_missing_qemu_is_a_target_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(MiB))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TargetError, match="qemu-system-x86"):
        boot_and_validate(image, marker="x", timeout_s=5, serial_log=tmp_path / "log")
    with pytest.raises(TargetError, match="qemu-utils"):
        convert_image(image, tmp_path / "disk.qcow2", "qcow2")


def test_bad_arguments_are_invalid_input(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with pytest.raises(InvalidInputError, match="does not exist"):
        boot_and_validate(tmp_path / "nope.img", marker="x", timeout_s=5, serial_log=log)
    with pytest.raises(InvalidInputError, match="unsupported image format"):
        boot_and_validate(tmp_path / "nope.img", fmt="iso", marker="x", timeout_s=5, serial_log=log)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timeout"):
        boot_and_validate(tmp_path / "nope.img", marker="x", timeout_s=0, serial_log=log)


def test_command_line_escapes_paths_and_isolates_nics() -> None:
    cmd = qemu_command(Path("/d/a,b.img"), fmt="raw", memory_mib=512, qemu="qemu")
    assert cmd[:5] == ["qemu", "-accel", "tcg", "-m", "512"]
    assert "file=/d/a,,b.img,format=raw,if=ide,snapshot=on" in cmd
    assert cmd[-2:] == ["-nic", "none"]
    cmd = qemu_command(
        Path("/d/a.img"),
        fmt="qcow2",
        memory_mib=256,
        nics=[Nic(), Nic("virtio-net-pci", "52:54:00:00:00:01")],
    )
    assert "-nic" not in cmd
    assert cmd.count("-netdev") == 2 and "user,id=net0,restrict=on" in cmd
    assert "virtio-net-pci,netdev=net1,romfile=,mac=52:54:00:00:00:01" in cmd
