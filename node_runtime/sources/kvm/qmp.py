"""A QMP connection to one QEMU process (a VM, or a qemu-storage-daemon) over its unix socket.

A thin shell over the QEMU project's own client (``qemu.qmp``): errors become
:class:`SourceError` naming the socket, and the block layer is read back as small records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from shared.errors import SourceError

TIMEOUT = 30.0


@dataclass(frozen=True)
class Bitmap:
    name: str
    recording: bool
    persistent: bool
    inconsistent: bool
    busy: bool
    granularity: int


@dataclass(frozen=True)
class BlockDisk:
    """A disk of the VM as ``query-block`` reports it (CD-ROMs and empty drives excluded).

    ``key``: its position among the VM's disks, what plans name (``device:<key>``);
    ``node``: the top block node, where dirty bitmaps live and fleecing reads from.
    """

    key: int
    device: str
    qdev: str
    node: str
    filename: str
    format: str
    size: int
    bitmaps: tuple[Bitmap, ...] = field(default=())

    @property
    def persistent_bitmaps(self) -> bool:
        """Only qcow2 stores bitmaps across QEMU restarts."""
        return self.format == "qcow2"


class Qmp:
    """One QMP session; use as a context manager. Calls are synchronous and not thread-safe.

    QEMU serves one client per QMP socket at a time: while a run holds the session, other
    clients of that socket wait (connect fails after ``timeout``).
    """

    def __init__(self, socket_path: str, *, timeout: float = TIMEOUT) -> None:
        self.socket_path = socket_path
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: QMPClient | None = None

    def __enter__(self) -> Qmp:
        loop = asyncio.new_event_loop()
        client = QMPClient("lifeboat")
        try:
            loop.run_until_complete(asyncio.wait_for(client.connect(self.socket_path), self._timeout))
        except (OSError, QMPError, TimeoutError) as exc:
            loop.run_until_complete(client.disconnect())
            loop.close()
            why = "no answer (another client holds it?)" if isinstance(exc, TimeoutError) else str(exc)
            raise SourceError(f"cannot reach QEMU's QMP socket {self.socket_path}: {why}",
                              socket=self.socket_path) from exc  # fmt: skip
        self._loop, self._client = loop, client
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is not None and client is not None:
            try:
                loop.run_until_complete(client.disconnect())
            except (OSError, QMPError):
                pass
            finally:
                loop.close()

    def cmd(self, name: str, /, **args: Any) -> Any:
        if self._client is None or self._loop is None:
            raise SourceError(f"QMP session to {self.socket_path} is closed", socket=self.socket_path)
        try:
            return self._loop.run_until_complete(asyncio.wait_for(self._client.execute(name, args), self._timeout))
        except ExecuteError as exc:
            raise SourceError(f"QEMU refused {name}: {exc}", socket=self.socket_path,
                              qmp_class=exc.error_class) from exc  # fmt: skip
        except (OSError, QMPError, TimeoutError) as exc:
            raise SourceError(f"QMP {name} on {self.socket_path} failed: {exc!r}", socket=self.socket_path) from exc

    def transaction(self, actions: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """All ``actions`` atomically, or none (QEMU's ``transaction``)."""
        self.cmd("transaction", actions=[{"type": t, "data": d} for t, d in actions])

    def identity(self) -> tuple[str, str]:
        """(name, uuid) of the VM; the name may be empty, the uuid all zeros."""
        name = str((self.cmd("query-name") or {}).get("name", ""))
        try:
            uuid = str(self.cmd("query-uuid").get("UUID", ""))
        except SourceError:  # qemu-storage-daemon has no machine
            uuid = ""
        return name, uuid

    def disks(self) -> list[BlockDisk]:
        """The VM's disks in ``query-block`` order, with the dirty bitmaps of their top nodes."""
        bitmaps = self._bitmaps_by_node()
        found: list[BlockDisk] = []
        for info in self.cmd("query-block"):
            inserted = info.get("inserted")
            if not inserted or info.get("removable"):  # empty drives, CD-ROMs, floppies
                continue
            image = inserted.get("image") or {}
            node = str(inserted.get("node-name", ""))
            found.append(BlockDisk(
                key=len(found), device=str(info.get("device", "")), qdev=str(info.get("qdev", "")), node=node,
                filename=str(image.get("filename", inserted.get("file", ""))), format=str(inserted.get("drv", "")),
                size=int(image.get("virtual-size", 0)), bitmaps=tuple(bitmaps.get(node, ())),
            ))  # fmt: skip
        return found

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every named block node by node name (``query-named-block-nodes``, flat)."""
        return {str(n["node-name"]): n for n in self.cmd("query-named-block-nodes", flat=True)}

    def _bitmaps_by_node(self) -> dict[str, list[Bitmap]]:
        out: dict[str, list[Bitmap]] = {}
        for name, node in self.nodes().items():
            for b in node.get("dirty-bitmaps", []) or []:
                if not b.get("name"):  # a block job's own anonymous bitmap
                    continue
                out.setdefault(name, []).append(Bitmap(
                    name=str(b["name"]), recording=bool(b.get("recording", True)),
                    persistent=bool(b.get("persistent", False)), inconsistent=bool(b.get("inconsistent", False)),
                    busy=bool(b.get("busy", False)), granularity=int(b.get("granularity", 65536)),
                ))  # fmt: skip
        return out

    def wait_until(self, what: str, done: Callable[[], bool], *, timeout: float = TIMEOUT) -> None:
        """Poll ``done`` (QMP queries) until true; SourceError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise SourceError(f"QEMU at {self.socket_path}: timed out waiting for {what}",
                                  socket=self.socket_path)  # fmt: skip
            time.sleep(0.05)
