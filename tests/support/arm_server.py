"""An HTTPS server speaking the Azure Resource Manager REST that the recovery adapter uses.

The real ``azure-mgmt-compute`` / ``azure-mgmt-network`` clients talk to it through
``base_url`` with a static bearer token. It owns no rules of its own: every create, read
and delete goes to :class:`~tests.support.fake_azure_compute.InMemoryAzureCompute`, which
checks what ARM checks; this module adds what ARM's wire protocol adds:

* ``api-version`` is required on every call (400 ``MissingApiVersionParameter``) and a
  bearer token on every call but the SAS-signed blob (401 ``AuthenticationFailed``).
* Creates are ``PUT`` answering 201/200 with ``Azure-AsyncOperation``; deletes ``DELETE``
  answering 202 with ``Azure-AsyncOperation`` and ``Location`` (204 when already gone).
  The operation reports ``InProgress`` at least once, then ``Succeeded`` or ``Failed``
  with an ARM error body; a failed create leaves the resource in state ``Failed``.
* Errors are ARM bodies ``{"error": {"code", "message"}}`` with ARM's status codes;
  :meth:`ArmServer.throttle` answers the next calls 429 with ``Retry-After``.
* A disk import copies the page blob into a raw file and a VM create boots it with QEMU
  (:class:`~tests.support.arm_hypervisor.QemuHypervisor`); the instance view reports the
  QEMU process's power state and ``retrieveBootDiagnosticsData`` hands out a SAS URI of
  this server from which the serial console log is read as a blob.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from node_runtime.recovery.targets.azure.compute import DISK, NIC, VM, VNET
from shared.errors import InvalidInputError, LifeboatError
from tests.support.arm_hypervisor import QemuHypervisor
from tests.support.fake_azure_compute import InMemoryAzureCompute
from tests.support.pki import ca_and_server_cert

TOKEN = "lifeboat-test-arm-token"
TYPES = {"disks": DISK, "networkInterfaces": NIC, "virtualMachines": VM, "virtualNetworks": VNET}
RESOURCE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<ns>Microsoft\.\w+)/"
    r"(?P<kind>\w+)(?:/(?P<name>[^/]+)(?:/(?P<action>\w+))?)?$",
    re.I,
)
SUBNET_PATH = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Network/virtualNetworks/"
    r"(?P<vnet>[^/]+)/subnets/(?P<subnet>[^/]+)$",
    re.I,
)
SIZES_PATH = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/vmSizes$", re.I
)
OPERATION_PATH = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.\w+/locations/[^/]+/(?P<what>operations|operationResults)/(?P<op>[^/]+)$", re.I)  # fmt: skip
_BLOB = re.compile(r"^/bootdiagnostics/(?P<vm>[^/]+)/serial\.log$")
_IN_USE = {"NicInUse", "OperationNotAllowed", "InUseSubnetCannotBeDeleted"}


@dataclass
class Operation:
    """One long-running operation: done once ``work`` finished and ``polls`` reached zero."""

    id: str
    polls: int
    done: threading.Event = field(default_factory=threading.Event)
    error: dict[str, str] | None = None


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _status_of(exc: LifeboatError) -> int:
    code = str(exc.fields.get("code", ""))
    if code in ("NotFound", "ResourceNotFound", "ResourceGroupNotFound"):
        return 404
    if exc.fields.get("transient"):
        return 500
    return 400 if isinstance(exc, InvalidInputError) or code in _IN_USE else 409


class ArmServer:
    """Serve ``compute`` over ARM REST on ``https://127.0.0.1:<port>`` (see the module docstring)."""

    def __init__(self, compute: InMemoryAzureCompute, workdir: Path, *, min_polls: int = 1) -> None:
        self.compute = compute
        self.hypervisor = QemuHypervisor(workdir / "hypervisor", compute.blob_client)
        self.min_polls = min_polls
        self.tls = ca_and_server_cert(workdir / "tls", ca_name="Lifeboat ARM test CA")
        self.ca_file = workdir / "tls" / "ca.pem"
        self.ca_file.write_text(self.tls.ca_pem)
        self.requests: list[tuple[str, str]] = []
        self.operations: dict[str, Operation] = {}
        self.lro_failures: dict[str, list[dict[str, str]]] = {}
        self._throttled = 0
        self.throttled_answers = 0  # 429s sent
        self._retry_after = 1
        self._sas = secrets.token_urlsafe(16)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ArmServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.hypervisor.close()

    # --- test hooks --------------------------------------------------------------------------
    def throttle(self, count: int, retry_after: int = 1) -> None:
        """Answer the next ``count`` calls 429 ``TooManyRequests`` with ``Retry-After``."""
        with self._lock:
            self._throttled, self._retry_after = count, retry_after

    def fail_operation(self, kind: str, code: str = "InternalOperationError", message: str = "") -> None:
        """Make the next long-running create of ``kind`` (disks, virtualMachines ...) end ``Failed``."""
        with self._lock:
            self.lro_failures.setdefault(kind, []).append(
                {"code": code, "message": message or f"injected failure of a {kind} operation"}
            )

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    # --- operations -----------------------------------------------------------------------------
    def start_operation(
        self, location: str, work: Callable[[], None], error: dict[str, str] | None
    ) -> tuple[str, str]:
        """Run ``work`` in the background; (operation URL, operation-result URL) to poll."""
        op = Operation(f"op-{next(self._ids)}-{secrets.token_hex(4)}", self.min_polls, error=error)

        def run() -> None:
            try:
                work()
            except Exception as exc:  # the operation fails, as ARM's would
                op.error = op.error or {"code": "InternalOperationError", "message": str(exc)}
            finally:
                op.done.set()

        with self._lock:
            self.operations[op.id] = op
        threading.Thread(target=run, daemon=True).start()
        base = f"{self.url}/subscriptions/{self.compute.subscription_id}/providers/Microsoft.Compute/locations/{location}"
        return (f"{base}/operations/{op.id}?api-version=2024-01-01",
                f"{base}/operationResults/{op.id}?api-version=2024-01-01")  # fmt: skip

    def operation_status(self, op_id: str) -> dict[str, Any]:
        op = self.operations.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", f"operation {op_id} not found")
        if op.polls > 0 or not op.done.is_set():
            op.polls -= 1
            return {"name": op_id, "status": "InProgress"}
        if op.error is not None:
            return {"name": op_id, "status": "Failed", "error": op.error}
        return {"name": op_id, "status": "Succeeded"}

    def sas_url(self, vm_name: str) -> str:
        return f"{self.url}/bootdiagnostics/{vm_name}/serial.log?sv=2024-11-04&sr=b&sp=r&sig={self._sas}"

    def check_sas(self, query: dict[str, list[str]]) -> None:
        if query.get("sig") != [self._sas]:
            raise ArmError(403, "AuthenticationFailed", "the SAS signature does not match")

    def serial_text(self, vm_name: str) -> bytes:
        vm = next((v for v in self.compute.vms.values() if v.name.lower() == vm_name.lower()), None)
        if vm is None:
            raise ArmError(404, "BlobNotFound", "the specified blob does not exist")
        text = vm.serial.encode() + self.hypervisor.serial(vm_name)
        if not text:  # Azure writes the log blob once the guest printed something
            raise ArmError(404, "BlobNotFound", "the specified blob does not exist")
        return text

    def take_lro_failure(self, kind: str) -> dict[str, str] | None:
        with self._lock:
            queue = self.lro_failures.get(kind)
            return queue.pop(0) if queue else None

    def take_throttle(self) -> int | None:
        with self._lock:
            if self._throttled <= 0:
                return None
            self._throttled -= 1
            self.throttled_answers += 1
            return self._retry_after


def _handler(server: ArmServer) -> type[BaseHTTPRequestHandler]:
    from tests.support.arm_routes import Routes

    routes = Routes(server)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.requests.append((method, url.path))
            try:
                blob = _BLOB.match(url.path)
                if blob is not None and method in ("GET", "HEAD"):
                    server.check_sas(query)
                    return self._blob(server.serial_text(blob.group("vm")), method)
                if "api-version" not in query:
                    raise ArmError(
                        400, "MissingApiVersionParameter", "The api-version query parameter is required"
                    )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    raise ArmError(401, "AuthenticationFailed", "missing or wrong bearer token")
                retry_after = server.take_throttle()
                if retry_after is not None:
                    raise ArmError(429, "TooManyRequests", "throttled", {"Retry-After": str(retry_after)})
                status, payload, headers = routes.dispatch(method, url.path, body)
            except ArmError as exc:
                status, payload, headers = (
                    exc.status,
                    {"error": {"code": exc.code, "message": exc.message}},
                    exc.headers,
                )
                if exc.code == "BlobNotFound":
                    headers = {**headers, "x-ms-error-code": "BlobNotFound"}
            except LifeboatError as exc:
                code = str(exc.fields.get("code", "BadRequest"))
                status, payload, headers = _status_of(exc), {"error": {"code": code, "message": str(exc)}}, {}
            self._send(status, payload, headers)

        def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", secrets.token_hex(8))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _blob(self, data: bytes, method: str) -> None:
            """Get Blob as the storage SDK reads it: whole, or the ``x-ms-range`` asked for."""
            asked = self.headers.get("x-ms-range") or self.headers.get("Range")
            status, start, end = 200, 0, len(data) - 1
            if asked and data:
                lo, _, hi = asked.removeprefix("bytes=").partition("-")
                start, end = int(lo), min(int(hi) if hi else len(data) - 1, len(data) - 1)
                status = 206
            part = data[start : end + 1] if data else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(part)))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("x-ms-blob-type", "BlockBlob")
            self.send_header("x-ms-version", "2024-11-04")
            self.send_header("ETag", f'"0x{len(data):X}"')
            self.send_header("Last-Modified", formatdate(usegmt=True))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if method == "GET":
                self.wfile.write(part)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

    return Handler
