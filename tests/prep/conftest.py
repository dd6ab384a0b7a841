"""Fixtures for the Prep Node tests: libguestfs settings and a real Debian guest on a disk.

libguestfs runs its appliance with the ``direct`` backend under TCG here (KVM aborts on
these machines), unless the environment says otherwise. ``debian_root`` builds a Debian
bookworm root with mmdebstrap once per session (~40 s; needs root and the Debian mirror),
``debian_base_image`` puts it on a bootable disk once per session (~20 s), and
``debian_image`` gives each test its own sparse copy, so no test sees another's changes.
Nothing is cached between sessions. Missing tools skip locally and fail under CI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.prep import debian_image as image_kit
from tests.servers import in_ci

for _name, _value in image_kit.GUESTFS_ENV.items():
    os.environ.setdefault(_name, _value)


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI is set, so missing tools fail the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configured Debian bookworm root directory (see :mod:`tests.prep.debian_image`)."""
    try:
        image_kit.need_tools()
    except image_kit.MissingToolError as exc:
        _unavailable(str(exc))
    if os.geteuid() != 0:
        _unavailable("building the Debian test root needs root (mmdebstrap --mode=root, chroot)")
    return image_kit.build_debian_root(tmp_path_factory.mktemp("debian"))


@pytest.fixture(scope="session")
def debian_base_image(debian_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's unprepared 2 GiB raw disk; tests use copies (``debian_image``)."""
    return image_kit.make_disk(debian_root, tmp_path_factory.mktemp("debian-disk") / "base.img")


@pytest.fixture
def debian_image(debian_base_image: Path, tmp_path: Path) -> Path:
    """A fresh sparse copy of the unprepared Debian disk, this test's own."""
    copy = tmp_path / "debian.img"
    subprocess.run(["cp", "--sparse=always", str(debian_base_image), str(copy)], check=True)
    return copy
