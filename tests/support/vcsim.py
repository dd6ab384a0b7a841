"""Lifeboat's vCenter simulator (tools/vcsim) for tests.

``start_vcsim(tmp_path)`` builds the simulator if needed (``tools/vcsim/build.sh``), starts
it on 127.0.0.1 with a free port and returns a :class:`Vcsim` once it answers. pyvmomi
talks to ``vcsim.url`` over HTTPS exactly as to vCenter (``SmartConnect(host=vcsim.host,
port=vcsim.port, user=vcsim.username, pwd=vcsim.password, disableSslCertValidation=True)``).

The helper methods call the simulator's test-only hooks under ``/lifeboat-sim/`` (plain
JSON, no session): they write into a VM's running disk, load an image, add a disk, reset
changed block tracking, and read the disk as the running VM sees it. ``vm`` arguments take
a VM's moref value (``"vm-59"``) or its name (``"DC0_H0_VM0"``).

A failed build raises :class:`VcsimError` with the build output; a simulator that does not
come up raises with the tail of its log. Nothing here skips.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "vcsim" / "build.sh"
BINARY = REPO / "build" / "vcsim" / "vcsim"
READY_TIMEOUT = 60.0
BUILD_TIMEOUT = 600.0
MiB = 1 << 20

_LISTENING = re.compile(r"^LISTENING (https?)://([0-9.]+):(\d+)/sdk$", re.MULTILINE)


class VcsimError(RuntimeError):
    """The simulator could not be built, started, or refused a test-hook call."""


def build() -> Path:
    """Build (or reuse) build/vcsim/vcsim; raise VcsimError with the output on failure."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0 or not BINARY.is_file():
        raise VcsimError(
            f"building the vCenter simulator failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return BINARY


@dataclass
class Vcsim:
    """A running simulator. ``url`` is ``https://127.0.0.1:PORT/sdk``."""

    url: str
    host: str
    port: int
    username: str
    password: str
    datastore_dir: Path  # the -dir root: each datastore is a folder below it
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    _ssl: ssl.SSLContext = field(repr=False, default_factory=ssl._create_unverified_context)

    # --- test hooks ------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.url[: -len("/sdk")]

    def _call(self, method: str, hook: str, params: dict[str, Any], body: bytes | None = None) -> Any:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        req = urllib.request.Request(f"{self.base}/lifeboat-sim/{hook}?{query}", data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=120) as resp:
                data = resp.read()
                if resp.headers.get("Content-Type", "").startswith("application/json"):
                    return json.loads(data)
                return data
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise VcsimError(f"{method} /lifeboat-sim/{hook} failed: {e.code} {detail}") from None

    def vms(self) -> list[dict[str, Any]]:
        """``[{"name", "moref", "uuid", "disks": [{"key", "file", "flat_path", "capacity", ...}],
        "snapshots": n, ...}]``: ``file`` is the current datastore path, ``flat_path`` the
        local path of the current flat file."""
        return list(self._call("GET", "vms", {}))

    def vm(self, vm: str) -> dict[str, Any]:
        for v in self.vms():
            if vm in (v["moref"], v["name"]):
                return v
        raise VcsimError(f"no VM {vm!r}")

    def disk(self, vm: str, disk_key: int) -> dict[str, Any]:
        for d in self.vm(vm)["disks"]:
            if d["key"] == disk_key:
                return dict(d)
        raise VcsimError(f"VM {vm!r} has no disk {disk_key}")

    def write(self, vm: str, disk_key: int, offset: int, data: bytes) -> None:
        """Write into the VM's current disk (the delta while a snapshot exists); recorded by CBT."""
        self._call("POST", "write", {"vm": vm, "disk": disk_key, "offset": offset}, bytes(data))

    def load(self, vm: str, disk_key: int, local_path: str | os.PathLike[str]) -> None:
        """Replace the disk's content with a local raw image (capacity: the image size rounded
        up to 1 MiB; the whole extent counts as changed)."""
        self._call("POST", "load", {"vm": vm, "disk": disk_key, "path": os.path.abspath(local_path)}, b"")

    def add_disk(self, vm: str, capacity_bytes: int) -> int:
        """Add a disk with real files on the first disk's controller; returns its device key."""
        return int(self._call("POST", "add-disk", {"vm": vm, "capacity": capacity_bytes}, b"")["key"])

    def reset_cbt(self, vm: str, disk_key: int) -> None:
        """A CBT reset: the disk's changeIds get a new id; every earlier changeId becomes invalid."""
        self._call("POST", "reset-cbt", {"vm": vm, "disk": disk_key}, b"")

    def read_current(self, vm: str, disk_key: int) -> bytes:
        """The disk's bytes as the running VM sees them now."""
        return bytes(self._call("GET", "read", {"vm": vm, "disk": disk_key}))

    # --- lifecycle -------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Vcsim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_vcsim(
    tmp_path: str | os.PathLike[str],
    *,
    vms: int = 2,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    username: str = "user",
    password: str = "pass",
    disk_size: int = 8 * MiB,
    max_changed_bytes: int | None = None,
    extra_args: list[str] | tuple[str, ...] = (),
) -> Vcsim:
    """Build if needed, start on 127.0.0.1 (free port), wait until it answers.

    ``vms`` is the number of VMs per resource pool (the default inventory has a standalone
    host and a cluster: 2 pools). The datastores live under ``tmp_path/vcsim-datastores``.
    """
    binary = build()
    tmp = Path(tmp_path)
    datastores = tmp / "vcsim-datastores"
    datastores.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "vcsim.log"
    args = [
        str(binary),
        "-l", "127.0.0.1:0",
        "-vm", str(vms),
        "-dir", str(datastores),
        "-disk-size", str(disk_size),
        "-username", username,
        "-password", password,
    ]  # fmt: skip
    if max_changed_bytes is not None:
        args += ["-max-changed-bytes", str(max_changed_bytes)]
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise ValueError("tls_cert and tls_key go together")
        args += ["-tlscert", os.fspath(tls_cert), "-tlskey", os.fspath(tls_key)]
    args += list(extra_args)

    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    try:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()

    def tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    deadline = time.monotonic() + READY_TIMEOUT
    match = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VcsimError(f"vcsim exited with {proc.returncode}:\n{tail()}")
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            break
        time.sleep(0.05)
    if match is None:
        proc.kill()
        proc.wait(timeout=10)
        raise VcsimError(f"vcsim did not start within {READY_TIMEOUT:.0f}s:\n{tail()}")

    scheme, host, port = match.group(1), match.group(2), int(match.group(3))
    sim = Vcsim(
        url=f"{scheme}://{host}:{port}/sdk",
        host=host,
        port=port,
        username=username,
        password=password,
        datastore_dir=datastores,
        log_path=log_path,
        process=proc,
    )
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            sim.vms()
            return sim
        except (OSError, VcsimError) as e:
            last = e
            time.sleep(0.1)
    sim.stop()
    raise VcsimError(f"vcsim did not answer: {last}\n{tail()}")
