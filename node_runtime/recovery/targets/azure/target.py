"""The Azure recovery target: page-blob VHDs, managed disks, NICs and VMs.

How a machine is recovered (each step lists what it creates before creating the next):

1. :meth:`AzureTarget.write_disk` reconstructs a point into the page blob
   ``<run_id>/<machine_id>/<disk_id>.vhd`` of the target's container: a fixed VHD
   (:class:`~node_runtime.recovery.azure_vhd.AzurePageBlobVhdWriter`: only non-zero
   ranges are sent, the footer last). The blob carries metadata ``lifeboat_run``,
   ``lifeboat_machine``, ``lifeboat_disk``, ``lifeboat_point`` (metadata names must be
   C# identifiers, so no ``:``). A retried step replaces the blob of the same name.
   :meth:`~AzureTarget.read_disk` / :meth:`~AzureTarget.patch_disk` work on that blob
   (ranged reads; read-modify-write Put Page of the 512-byte pages a patch touches), so
   OS preparation must happen before step 2.
2. :meth:`AzureTarget.create_instance` imports each blob as a managed disk (the first is
   the OS disk). Azure has no "defined but never started" VM, so the instance is
   ``defined``: its ``instance_id`` is the id the VM *will* have.
3. :meth:`AzureTarget.attach_networks` creates one NIC per :class:`NicSpec` in the subnet
   ``nic.network`` (an ARM subnet id), with at most one NSG (an Azure NIC has one) and
   the static ``private_ip`` if given. An *isolated* NIC is only placed in a subnet the
   target was told is isolated (``isolated_subnets``), and is tagged
   ``lifeboat:isolated=true``: Azure cannot prove from a subnet id that it has no route
   to production, so the administrator declares it.
4. :meth:`AzureTarget.power_on` creates the VM over the disks and NICs (the first NIC is
   primary) with boot diagnostics on, and waits until it runs.
5. :meth:`AzureTarget.validate` checks provisioning ``succeeded`` and power ``running``
   and, with a marker, waits for it in the boot-diagnostics serial log (which Azure
   refreshes every few minutes: allow for it in the timeout).

ARM names are ``lb-<name>-<hash of run and machine>`` (plus ``-diskN`` / ``-nicN``),
sanitised and cut to ARM's limits, so they are unique per run and machine and a retried
step addresses the same resources (creates are idempotent PUTs). Every ARM resource is
tagged ``lifeboat:run`` and ``lifeboat:machine`` (plus the plan's tags), which is how
:meth:`AzureTarget.find_tagged` finds what a run left behind.

A call that fails deletes what it created itself (best effort, reverse order) and
raises with ``resources`` naming whatever it could not delete.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, NoReturn

from azure.core.exceptions import AzureError, ResourceNotFoundError

from node_runtime.recovery.azure_vhd import MAX_PAGE_WRITE, SECTOR, AzurePageBlobVhdWriter
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.azure.compute import DISK, NIC, VM, AzureCompute, VmView
from node_runtime.recovery.targets.base import (
    DiskArtifact,
    Evidence,
    Instance,
    InstanceSpec,
    NicSpec,
    Progress,
    Resource,
    Target,
    ValidationSpec,
)
from shared.errors import InvalidInputError, LifeboatError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

log = logging.getLogger(__name__)

KIND = "azure"
DEFAULT_VM_SIZE = "Standard_B2s"
RUN_TAG = "lifeboat:run"
MACHINE_TAG = "lifeboat:machine"

RESOURCE_TYPES = {DISK.lower(): "managed-disk", NIC.lower(): "azure-nic", VM.lower(): "azure-vm"}
_VM_SIZE = re.compile(r"^(Standard|Basic)_[A-Za-z0-9_]+$")
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+$",
    re.I,
)
_NSG_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/networkSecurityGroups/[^/]+$",
    re.I,
)
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_EXCERPT = 2000


def arm_name(parts: Iterable[str], limit: int) -> str:
    """``parts`` joined by ``-`` as a valid ARM name of at most ``limit`` characters.

    Characters ARM refuses become ``-``; a name that had to be changed or cut gets a
    hash of the original appended, so different inputs never collide.
    """
    raw = "-".join(parts)
    name = _NOT_IN_NAME.sub("-", raw).strip("-.")
    if name == raw and len(name) <= limit:
        return name
    digest = hashlib.blake2b(raw.encode(), digest_size=4).hexdigest()
    return f"{name[: limit - len(digest) - 1].rstrip('-.')}-{digest}"


def _fields(exc: BaseException) -> dict[str, Any]:
    return dict(exc.fields) if isinstance(exc, LifeboatError) else {}


def _transient(exc: BaseException) -> bool:
    return bool(_fields(exc).get("transient"))


def _merge(resources: list[Resource], *new: Resource) -> list[Resource]:
    """``resources`` plus ``new`` not already listed (a retried step lists a resource once)."""
    seen = {(r.type, r.id.lower()) for r in resources}
    return [*resources, *(r for r in new if (r.type, r.id.lower()) not in seen)]


class AzureTarget:
    """DiskTarget, InstanceLauncher, NetworkMapper, BootValidator and Cleaner on Azure.

    ``container`` is the ``ContainerClient`` of the staging container (in a storage
    account in ``location``, which the compute adapter is configured with for imports);
    ``compute`` the :class:`AzureCompute` port for ``resource_group`` in ``location``.
    """

    kind = KIND

    def __init__(
        self,
        container: Any,
        compute: AzureCompute,
        *,
        location: str,
        resource_group: str,
        default_vm_size: str = DEFAULT_VM_SIZE,
        os_type: str = "Linux",
        isolated_subnets: Collection[str] = (),
        write_threads: int = 8,
        read_threads: int = 4,
        power_on_timeout: float = 900.0,
        poll_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _VM_SIZE.match(default_vm_size):
            raise InvalidInputError(f"{default_vm_size!r} is not an Azure VM size", vm_size=default_vm_size)
        self.container = container
        self.compute = compute
        self.location = location
        self.resource_group = resource_group
        self.default_vm_size = default_vm_size
        self.os_type = os_type
        self.isolated_subnets = frozenset(s.lower() for s in isolated_subnets)
        self.write_threads = write_threads
        self.read_threads = read_threads
        self.power_on_timeout = power_on_timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep

    # --- DiskTarget ---------------------------------------------------------------------------
    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        if point.disk_size <= 0:
            raise InvalidInputError(f"point {point.id} has an empty disk", point_id=point.id)
        self._tags(spec)  # refuse conflicting tags before writing anything
        name = f"{spec.run_id}/{spec.machine_id}/{point.disk_id}.vhd"
        blob = self.container.get_blob_client(name)
        metadata = {
            "lifeboat_run": spec.run_id,
            "lifeboat_machine": spec.machine_id,
            "lifeboat_disk": point.disk_id,
            "lifeboat_point": point.id,
        }
        writer = AzurePageBlobVhdWriter(
            blob, None, point.disk_size, threads=self.write_threads, overwrite=True, metadata=metadata
        )
        resource = Resource(
            type="page-blob",
            id=str(blob.url),
            detail={"container": str(self.container.container_name), "blob": name},
        )
        try:
            stats = reconstruct(repo, point, writer, threads=self.read_threads, progress=progress)
        except BaseException as exc:
            if self._blob_exists(blob):  # the writer's abort could not delete it
                raise TargetError(
                    f"reconstructing {point.id} into {name} failed and the blob is left: {exc}",
                    resources=[resource.model_dump()],
                ) from exc
            raise
        resource.detail.update(
            virtual_size=str(writer.virtual_size),
            vhd_uuid=str(writer.uuid),
            pages_written=str(writer.pages_written),
            bytes_sent=str(writer.bytes_sent),
        )
        log.info(
            "disk written to page blob",
            extra={
                "disk_id": point.disk_id,
                "point_id": point.id,
                "blob": name,
                "bytes_sent": writer.bytes_sent,
            },
        )
        return DiskArtifact(
            disk_id=point.disk_id,
            point_id=point.id,
            disk_size=point.disk_size,
            format="vhd",
            location=str(blob.url),
            bytes_written=stats.bytes_written,
            resources=[resource],
        )

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidInputError(f"bad range {offset}+{length}", offset=offset, length=length)
        length = max(0, min(length, artifact.disk_size - offset))
        if length == 0:
            return b""
        blob = self._artifact_blob(artifact)
        try:
            return bytes(blob.download_blob(offset=offset, length=length).readall())
        except AzureError as exc:
            raise TargetError(f"cannot read {blob.blob_name}: {exc}", blob=blob.blob_name) from exc

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """Write each patch, in order, by read-modify-write of the 512-byte pages it touches.

        Patches the page blob in place (same artifact); not atomic across patches. Only
        bytes of the disk may be patched, never the padding or the VHD footer.
        """
        for offset, data in patches:
            if offset < 0 or offset + len(data) > artifact.disk_size:
                raise InvalidInputError(
                    f"patch {offset}+{len(data)} is outside the disk ({artifact.disk_size} bytes)",
                    offset=offset,
                    length=len(data),
                )
        blob = self._artifact_blob(artifact)
        try:
            for offset, data in patches:
                if not data:
                    continue
                start = offset - offset % SECTOR
                end = -(-(offset + len(data)) // SECTOR) * SECTOR  # within the VHD: it is padded to 1 MiB
                for chunk in range(start, end, MAX_PAGE_WRITE):
                    chunk_end = min(end, chunk + MAX_PAGE_WRITE)
                    page = bytearray(blob.download_blob(offset=chunk, length=chunk_end - chunk).readall())
                    lo, hi = max(offset, chunk), min(offset + len(data), chunk_end)
                    page[lo - chunk : hi - chunk] = data[lo - offset : hi - offset]
                    blob.upload_page(bytes(page), offset=chunk, length=len(page))
        except AzureError as exc:
            raise TargetError(f"cannot patch {blob.blob_name}: {exc}", blob=blob.blob_name) from exc
        return artifact

    # --- InstanceLauncher -----------------------------------------------------------------------
    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Import each disk's VHD as a managed disk (boot disk first); the VM comes with :meth:`power_on`."""
        if not disks:
            raise InvalidInputError(f"machine {spec.machine_id} has no disks", machine_id=spec.machine_id)
        for disk in disks:
            if disk.format != "vhd":
                raise InvalidInputError(
                    f"Azure imports VHDs, not {disk.format} ({disk.disk_id})", disk_id=disk.disk_id
                )
        size = spec.instance_type or self.default_vm_size
        if not _VM_SIZE.match(size):
            raise InvalidInputError(f"{size!r} is not an Azure VM size", vm_size=size)
        tags = self._tags(spec)
        base = self._base_name(spec)
        vm_name = arm_name([base], 64)
        created: list[Resource] = []
        disk_ids: list[str] = []
        for i, disk in enumerate(disks):
            name = arm_name([base, f"disk{i}"], 80)
            resource = Resource(
                type="managed-disk",
                id=self.compute.resource_id(DISK, self.resource_group, name),
                detail={"name": name, "source": disk.location, "disk_id": disk.disk_id},
            )
            created.append(resource)
            try:
                disk_ids.append(
                    self.compute.create_disk_from_vhd(
                        self.resource_group,
                        name,
                        location=self.location,
                        blob_url=disk.location,
                        size_gib=None,
                        os_type=self.os_type if i == 0 else None,
                        tags={**tags, "lifeboat:disk": disk.disk_id},
                    )
                )
            except Exception as exc:
                self._fail(f"cannot create managed disk {name} from {disk.location}", exc, created)
        return Instance(
            instance_id=self.compute.resource_id(VM, self.resource_group, vm_name),
            machine_id=spec.machine_id,
            state="defined",
            resources=created,
            detail={
                "vm_name": vm_name,
                "base_name": base,
                "vm_size": size,
                "resource_group": self.resource_group,
                "location": self.location,
                "os_disk_id": disk_ids[0],
                "data_disk_ids": disk_ids[1:],
                "nic_ids": [],
                "tags": tags,
            },
        )

    def power_on(self, instance: Instance) -> Instance:
        """Create the VM (boot diagnostics on) over the instance's disks and NICs; wait until it runs."""
        d = instance.detail
        if not d.get("nic_ids"):
            raise InvalidInputError(
                f"{d.get('vm_name')}: an Azure VM needs at least one NIC; attach networks first",
                machine_id=instance.machine_id,
            )
        vm = Resource(type="azure-vm", id=instance.instance_id, detail={"name": str(d["vm_name"])})
        resources = _merge(instance.resources, vm)
        try:
            self.compute.create_vm(
                self.resource_group,
                d["vm_name"],
                location=self.location,
                size=d["vm_size"],
                os_disk_id=d["os_disk_id"],
                data_disk_ids=list(d["data_disk_ids"]),
                nic_ids=list(d["nic_ids"]),
                tags=dict(d["tags"]),
                boot_diagnostics=True,
            )
            view = self._wait_running(instance.instance_id)
        except Exception as exc:
            self._fail(f"cannot start VM {d['vm_name']}", exc, [vm])
        return instance.model_copy(
            update={
                "state": "running",
                "resources": resources,
                "detail": {
                    **d,
                    "power_state": view.power_state,
                    "provisioning_state": view.provisioning_state,
                },
            }
        )

    # --- NetworkMapper ---------------------------------------------------------------------------
    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        """One NIC per spec, in order (the first becomes the VM's primary NIC)."""
        for nic in nics:
            self._check_nic(nic)
        d = instance.detail
        nic_ids = list(d.get("nic_ids", []))
        addresses = list(instance.addresses)
        created: list[Resource] = []
        for nic in nics:
            name = arm_name([d["base_name"], f"nic{len(nic_ids)}"], 80)
            resource = Resource(
                type="azure-nic",
                id=self.compute.resource_id(NIC, self.resource_group, name),
                detail={"name": name, "subnet": nic.network, "source_network": nic.source_network},
            )
            created.append(resource)
            tags = {**d["tags"], "lifeboat:source-network": nic.source_network[:256]}
            if nic.isolated:
                tags["lifeboat:isolated"] = "true"
            try:
                info = self.compute.create_nic(
                    self.resource_group,
                    name,
                    location=self.location,
                    subnet_id=nic.network,
                    nsg_id=nic.security_groups[0] if nic.security_groups else None,
                    private_ip=nic.private_ip,
                    tags=tags,
                )
            except Exception as exc:
                self._fail(f"cannot create NIC {name} in {nic.network}", exc, created)
            resource.detail["private_ip"] = info.private_ip
            nic_ids.append(info.id)
            addresses.append(info.private_ip)
        return instance.model_copy(
            update={
                "resources": _merge(instance.resources, *created),
                "addresses": addresses,
                "detail": {**d, "nic_ids": nic_ids},
            }
        )

    # --- BootValidator ---------------------------------------------------------------------------
    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Status checks, then (with a marker) the serial log, until ``spec.timeout_seconds``."""
        start = self.clock()
        deadline = start + spec.timeout_seconds
        view = self._poll(lambda: self.compute.instance_view(instance.instance_id), deadline, _settled)
        detail: dict[str, Any] = {
            "provisioning_state": view.provisioning_state,
            "power_state": view.power_state,
            "statuses": list(view.statuses),
        }
        summary = ", ".join(view.statuses)
        if not _healthy(view):
            return Evidence(
                ok=False,
                method="status-checks",
                seconds=self.clock() - start,
                excerpt=summary,
                reason=f"VM is {view.power_state or 'not started'} (provisioning {view.provisioning_state})",
                detail=detail,
            )
        marker = spec.marker
        if not marker:
            return Evidence(
                ok=True, method="status-checks", seconds=self.clock() - start, excerpt=summary, detail=detail
            )
        serial = self._poll(
            lambda: self.compute.serial_log(instance.instance_id), deadline, lambda s: marker in s
        )
        detail["serial_bytes"] = len(serial)
        if marker in serial:
            return Evidence(
                ok=True,
                method="serial-marker",
                seconds=self.clock() - start,
                excerpt=_excerpt(serial, marker),
                detail=detail,
            )
        return Evidence(
            ok=False,
            method="serial-marker",
            seconds=self.clock() - start,
            excerpt=serial[-_EXCERPT:],
            reason=f"marker {marker!r} not on the serial console within {spec.timeout_seconds}s",
            detail=detail,
        )

    # --- Cleaner ------------------------------------------------------------------------------------
    def delete(self, resource: Resource) -> bool:
        if resource.type == "page-blob":
            return self._delete_blob(resource)
        if resource.type in ("managed-disk", "azure-nic", "azure-vm"):
            try:
                return self.compute.delete(resource.id)
            except (InvalidInputError, TargetError):
                raise
            except Exception as exc:
                raise TargetError(
                    f"cannot delete {resource.type} {resource.id}: {exc}", resource=resource.id
                ) from exc
        raise InvalidInputError(
            f"the Azure target does not create {resource.type!r}", resource_type=resource.type
        )

    def find_tagged(self, run_id: str) -> list[Resource]:
        """What run ``run_id`` still has here: ARM resources tagged with it and its page blobs."""
        found = []
        for resource_id in self.compute.list_tagged(self.resource_group, {RUN_TAG: run_id}):
            m = re.search(r"/providers/([^/]+/[^/]+)/[^/]+$", resource_id)
            kind = RESOURCE_TYPES.get(m.group(1).lower(), "azure-resource") if m else "azure-resource"
            found.append(Resource(type=kind, id=resource_id))
        try:
            for item in self.container.list_blobs(name_starts_with=f"{run_id}/", include=["metadata"]):
                if (item.metadata or {}).get("lifeboat_run") == run_id:
                    url = str(self.container.get_blob_client(item.name).url)
                    found.append(
                        Resource(
                            type="page-blob",
                            id=url,
                            detail={"container": str(self.container.container_name), "blob": item.name},
                        )
                    )
        except AzureError as exc:
            raise TargetError(f"cannot list the blobs of run {run_id}: {exc}", run_id=run_id) from exc
        return found

    # --- helpers ----------------------------------------------------------------------------------
    def _tags(self, spec: InstanceSpec) -> dict[str, str]:
        tags = dict(spec.tags)
        for key, value in ((RUN_TAG, spec.run_id), (MACHINE_TAG, spec.machine_id)):
            if tags.setdefault(key, value) != value:
                raise InvalidInputError(f"tag {key}={tags[key]!r} contradicts the spec ({value!r})", tag=key)
        return tags

    @staticmethod
    def _base_name(spec: InstanceSpec) -> str:
        digest = hashlib.blake2b(f"{spec.run_id}\0{spec.machine_id}".encode(), digest_size=4).hexdigest()
        return arm_name(["lb", spec.name[:40]], 48) + f"-{digest}"

    def _check_nic(self, nic: NicSpec) -> None:
        if not _SUBNET_ID.match(nic.network):
            raise InvalidInputError(f"{nic.network!r} is not an Azure subnet id", network=nic.network)
        if len(nic.security_groups) > 1:
            raise InvalidInputError(
                f"an Azure NIC takes one network security group, not {len(nic.security_groups)}",
                network=nic.network,
            )
        for nsg in nic.security_groups:
            if not _NSG_ID.match(nsg):
                raise InvalidInputError(f"{nsg!r} is not a network security group id", nsg=nsg)
        if nic.private_ip is not None and not _IPV4.match(nic.private_ip):
            raise InvalidInputError(f"{nic.private_ip!r} is not an IPv4 address", private_ip=nic.private_ip)
        if nic.isolated and nic.network.lower() not in self.isolated_subnets:
            raise InvalidInputError(
                f"a test recovery's NIC may only go to a subnet declared isolated; {nic.network} is not",
                network=nic.network,
            )

    def _artifact_blob(self, artifact: DiskArtifact) -> Any:
        for r in artifact.resources:
            if r.type == "page-blob" and r.detail.get("blob"):
                self._check_container(r)
                return self.container.get_blob_client(r.detail["blob"])
        raise InvalidInputError(f"disk {artifact.disk_id} has no page blob here", disk_id=artifact.disk_id)

    def _check_container(self, resource: Resource) -> None:
        container = resource.detail.get("container")
        if container and container != self.container.container_name:
            raise InvalidInputError(
                f"{resource.id} is in container {container}, not {self.container.container_name}",
                resource=resource.id,
            )

    def _delete_blob(self, resource: Resource) -> bool:
        self._check_container(resource)
        name = resource.detail.get("blob")
        if not name:
            raise InvalidInputError(f"page-blob resource {resource.id} names no blob", resource=resource.id)
        try:
            self.container.get_blob_client(name).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise TargetError(f"cannot delete blob {name}: {exc}", resource=resource.id) from exc
        return True

    @staticmethod
    def _blob_exists(blob: Any) -> bool:
        try:
            return bool(blob.exists())
        except Exception:
            log.warning("cannot tell whether %s was deleted", blob.blob_name, exc_info=True)
            return True

    def _wait_running(self, vm_id: str) -> VmView:
        view = self._poll(
            lambda: self.compute.instance_view(vm_id), self.clock() + self.power_on_timeout, _settled
        )
        if not _healthy(view):
            raise TargetError(
                f"VM {vm_id} is {view.power_state or 'not started'} (provisioning {view.provisioning_state})",
                code="VMNotRunning",
                statuses=list(view.statuses),
            )
        return view

    def _poll(self, read: Callable[[], Any], deadline: float, done: Callable[[Any], bool]) -> Any:
        """``read()`` until ``done`` or ``deadline``; transient errors are retried until then."""
        while True:
            try:
                value = read()
            except Exception as exc:
                if not _transient(exc) or self.clock() >= deadline:
                    raise
                log.warning("transient error while polling Azure: %s", exc)
            else:
                if done(value) or self.clock() >= deadline:
                    return value
            self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))

    def _fail(self, message: str, exc: Exception, created: list[Resource]) -> NoReturn:
        """Undo ``created`` (reverse order, best effort), then raise naming what is left."""
        leftovers: list[Resource] = []
        for resource in reversed(created):
            try:
                self.delete(resource)
            except Exception:
                log.warning("cannot delete %s %s after a failure", resource.type, resource.id, exc_info=True)
                leftovers.insert(0, resource)
        fields = _fields(exc)
        fields["resources"] = [r.model_dump() for r in leftovers]
        text = f"{message}: {exc}"
        if isinstance(exc, InvalidInputError) and not leftovers:
            raise InvalidInputError(text, **fields) from exc
        raise TargetError(text, **fields) from exc


def _settled(view: VmView) -> bool:
    return (
        _healthy(view)
        or view.provisioning_state == "failed"
        or view.power_state in ("stopped", "deallocated")
    )


def _healthy(view: VmView) -> bool:
    return view.provisioning_state == "succeeded" and view.power_state == "running"


def _excerpt(serial: str, marker: str) -> str:
    """The lines before and including the marker's, at most :data:`_EXCERPT` characters."""
    end = serial.find("\n", serial.index(marker))
    end = len(serial) if end < 0 else end
    return serial[max(0, end - _EXCERPT) : end]


def azure_target(
    container: Any, compute: AzureCompute, *, location: str, resource_group: str, **options: Any
) -> Target:
    """The Azure :class:`Target`: one :class:`AzureTarget` behind all five capabilities.

    ``options`` are :class:`AzureTarget`'s other keyword arguments.
    """
    target = AzureTarget(container, compute, location=location, resource_group=resource_group, **options)
    return Target(kind=KIND, disks=target, launcher=target, networks=target, validator=target, cleaner=target)
