"""An in-memory recovery target (all five capabilities) for flow tests.

It keeps real bytes (disks are reconstructed for real from the repository into
``bytearray``s) and a ledger of live resources, so tests can prove that cleanup leaves
nothing behind. ``fail`` injects a failure into one capability for one machine.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.base import (
    DiskArtifact,
    Evidence,
    Instance,
    InstanceSpec,
    NicSpec,
    Resource,
    Target,
    ValidationSpec,
)
from shared.errors import InvalidInputError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository


class _Buffer:
    """A BlockWriter into a bytearray."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.data[offset : offset + len(data)] = data

    def skip(self, offset: int, length: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


@dataclass
class FakeTarget:
    kind: str = "qemu"
    boot_seconds: float = 0.0
    disks: dict[str, bytearray] = field(default_factory=dict)
    live: dict[tuple[str, str], Resource] = field(default_factory=dict)
    created: list[Resource] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[tuple[str, str], Exception] = field(default_factory=dict)
    power_log: list[tuple[str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def _new(self, type_: str, machine_id: str, **detail: str) -> Resource:
        with self.lock:
            r = Resource(type=type_, id=f"{type_}-{next(self.ids)}", detail={"machine": machine_id, **detail})
            self.live[(r.type, r.id)] = r
            self.created.append(r)
        return r

    def _call(self, op: str, machine_id: str) -> None:
        with self.lock:
            self.calls.append((op, machine_id))
        exc = self.fail.get((op, machine_id))
        if exc is not None:
            raise exc

    # DiskTarget
    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress=None
    ) -> DiskArtifact:  # type: ignore[no-untyped-def]
        self._call("write_disk", spec.machine_id)
        buf = _Buffer(point.disk_size)
        stats = reconstruct(repo, point, buf, progress=progress)
        r = self._new("disk", spec.machine_id, disk=point.disk_id)
        self.disks[r.id] = buf.data
        return DiskArtifact(disk_id=point.disk_id, point_id=point.id, disk_size=point.disk_size, format="bytes",
                            location=r.id, bytes_written=stats.bytes_written, resources=[r])  # fmt: skip

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        return bytes(self.disks[artifact.location][offset : offset + length])

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        for offset, data in patches:
            self.disks[artifact.location][offset : offset + len(data)] = data
        return artifact

    # InstanceLauncher
    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        self._call("create_instance", spec.machine_id)
        if spec.instance_type == "no-such-type":
            raise InvalidInputError(f"unknown instance type {spec.instance_type}")
        r = self._new("vm", spec.machine_id)
        return Instance(
            instance_id=r.id, machine_id=spec.machine_id, resources=[r], detail={"tags": spec.tags}
        )

    def power_on(self, instance: Instance) -> Instance:
        self._call("power_on", instance.machine_id)
        with self.lock:
            self.power_log.append((instance.machine_id, time.monotonic()))
        r = self._new("process", instance.machine_id)
        return instance.model_copy(update={"state": "running", "resources": [*instance.resources, r]})

    # NetworkMapper
    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        self._call("attach_networks", instance.machine_id)
        made = [self._new("nic", instance.machine_id, network=n.network) for n in nics]
        addresses = [n.private_ip or "dhcp" for n in nics]
        return instance.model_copy(update={"resources": [*instance.resources, *made], "addresses": addresses,
                                           "detail": {**instance.detail, "nics": [n.model_dump() for n in nics]}})  # fmt: skip

    # BootValidator
    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        self._call("validate", instance.machine_id)
        time.sleep(self.boot_seconds)
        ok = spec.marker != "never"
        return Evidence(ok=ok, method="fake", seconds=self.boot_seconds, excerpt=f"BOOT {instance.machine_id}",
                        reason="" if ok else "marker never seen")  # fmt: skip

    # Cleaner
    def delete(self, resource: Resource) -> bool:
        self._call("delete", resource.detail.get("machine", "?"))
        with self.lock:
            if (resource.type, resource.id) == ("disk", "stuck"):
                raise TargetError("stuck")
            return self.live.pop((resource.type, resource.id), None) is not None

    def target(self) -> Target:
        return Target(kind=self.kind, disks=self, launcher=self, networks=self, validator=self, cleaner=self)
