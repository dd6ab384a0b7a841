"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_control_plane import Processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """``lifeboat`` processes started by the test, all stopped at its end."""
    p = Processes(tmp_path)
    yield p
    p.stop_all()
