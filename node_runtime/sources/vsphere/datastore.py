"""Read a snapshot's base disk over vCenter's datastore file access (HTTPS + Range).

``GET https://<vcenter>/folder/<path>?dcPath=<datacenter>&dsName=<datastore>`` under the
SOAP session's cookie. The disk's descriptor (``vm.vmdk``) names its flat extent
(``vm-flat.vmdk``), whose bytes are the raw disk. Only monolithic flat disks can be read
this way; sparse/SEsparse/vSAN objects need an NBD/VDDK transport behind the same
:class:`DiskReader` shape.
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import quote

import urllib3

from node_runtime.sources.vsphere.connection import Session
from shared.errors import SourceError

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.+)$")
_EXTENT = re.compile(r'^(RW|RDONLY)\s+(?P<sectors>\d+)\s+(?P<type>\w+)\s+"(?P<file>[^"]+)"', re.MULTILINE)
RETRIES = urllib3.Retry(total=4, connect=4, read=4, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504))


class DiskReader(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


def split_datastore_path(path: str) -> tuple[str, str]:
    """``"[ds1] vm/vm.vmdk"`` -> ``("ds1", "vm/vm.vmdk")``."""
    m = _DS_PATH.match(path.strip())
    if not m:
        raise SourceError(f"not a datastore path: {path!r}")
    return m["ds"], m["path"]


class DatastoreFile:
    """One file on a datastore, read by ranges (thread-safe: urllib3 pools connections)."""

    def __init__(self, session: Session, datacenter: str, datastore_path: str, *, pool_size: int = 8) -> None:
        ep = session.endpoint
        self.session = session
        self.datacenter = datacenter
        self.datastore, self.path = split_datastore_path(datastore_path)
        tls = ep.tls
        self.http = urllib3.PoolManager(
            maxsize=pool_size, retries=RETRIES, timeout=urllib3.Timeout(connect=30, read=120),
            cert_reqs="CERT_NONE" if (tls.insecure or tls.thumbprint) else "CERT_REQUIRED",
            assert_fingerprint=tls.thumbprint, ca_cert_data=tls.ca_pem,
            assert_hostname=False if (tls.insecure or tls.thumbprint) else None,
        )  # fmt: skip

    def url(self, path: str | None = None) -> str:
        ep = self.session.endpoint
        rel = quote(path or self.path)
        return (f"https://{ep.host}:{ep.port}/folder/{rel}?dcPath={quote(self.datacenter)}"
                f"&dsName={quote(self.datastore)}")  # fmt: skip

    def get(self, path: str | None = None, byte_range: tuple[int, int] | None = None) -> bytes:
        headers = {"Cookie": self.session.cookie}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[0] + byte_range[1] - 1}"
        where = f"[{self.datastore}] {path or self.path}"
        try:
            resp = self.http.request("GET", self.url(path), headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as exc:
            raise SourceError(f"reading {where} failed: {exc}") from exc
        if resp.status == 401:
            raise SourceError(f"reading {where}: the vCenter session is not authorised (401)")
        if resp.status == 404:
            raise SourceError(f"reading {where}: no such file on the datastore")
        expected = 206 if byte_range is not None else 200
        if resp.status != expected:
            raise SourceError(f"reading {where}: HTTP {resp.status}")
        return bytes(resp.data)


class FlatDisk:
    """The raw bytes of a monolithic flat VMDK, located through its descriptor."""

    def __init__(self, session: Session, datacenter: str, descriptor_path: str, capacity: int) -> None:
        self.file = DatastoreFile(session, datacenter, descriptor_path)
        descriptor = self.file.get().decode("utf-8", "replace")
        extents = list(_EXTENT.finditer(descriptor))
        if len(extents) != 1 or extents[0]["type"] not in ("VMFS", "FLAT"):
            kinds = ", ".join(e["type"] for e in extents) or "none"
            raise SourceError(
                f"{descriptor_path}: only monolithic flat disks are read over HTTPS (extents: {kinds})"
            )
        folder = self.file.path.rsplit("/", 1)[0] + "/" if "/" in self.file.path else ""
        self.flat_path = folder + extents[0]["file"]
        self.size = int(extents[0]["sectors"]) * 512
        if capacity and self.size != capacity:
            raise SourceError(f"{descriptor_path}: descriptor says {self.size} bytes, the VM {capacity}")

    def read(self, offset: int, length: int) -> bytes:
        data = self.file.get(self.flat_path, (offset, length))
        if len(data) != length:
            raise SourceError(
                f"[{self.file.datastore}] {self.flat_path}: short read at {offset} ({len(data)} of {length} bytes)"
            )
        return data
