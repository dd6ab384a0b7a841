"""Fixtures for the Prep Node tests: libguestfs settings and a real Debian guest on a disk.

libguestfs runs its appliance with the ``direct`` backend under TCG here (KVM aborts on
these machines; tests/conftest.py sets it unless the environment says otherwise). ``debian_root`` builds a Debian
bookworm root with mmdebstrap once per session (25-80 s; needs root and the Debian mirror),
``debian_base_image`` puts it on a bootable disk once per session (20-35 s), and
``debian_image`` gives each test its own sparse copy, so no test sees another's changes.
Nothing is cached between sessions. Missing tools skip locally and fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prep import debian_image as image_kit
from tests.servers import in_ci


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI is set, so missing tools fail the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A configured Debian bookworm root directory (see :mod:`tests.prep.debian_image`)."""
    try:
        image_kit.need_tools()
    except image_kit.MissingToolError as exc:
        _unavailable(str(exc))
    if os.geteuid() != 0:
        _unavailable("building the Debian test root needs root (mmdebstrap --mode=root, chroot)")
    root = image_kit.build_debian_root(tmp_path_factory.mktemp("debian"))
    yield root
    shutil.rmtree(root, ignore_errors=True)  # ~650 MB; pytest keeps its last temp folders


@pytest.fixture(scope="session")
def debian_base_image(debian_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's unprepared 2 GiB raw disk; tests use copies (``debian_image``)."""
    image = image_kit.make_disk(debian_root, tmp_path_factory.mktemp("debian-disk") / "base.img")
    yield image
    image.unlink(missing_ok=True)


@pytest.fixture
def debian_image(debian_base_image: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh sparse copy of the unprepared Debian disk, this test's own (deleted afterwards;
    the test's serial logs stay in its tmp_path)."""
    copy = tmp_path / "debian.img"
    subprocess.run(["cp", "--sparse=always", str(debian_base_image), str(copy)], check=True)
    yield copy
    copy.unlink(missing_ok=True)
