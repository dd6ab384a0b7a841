"""``lifeboat up``: the whole control plane on one machine (composition root, embedded mode).

API (the same powertools resolver as in Lambda) on 127.0.0.1:8080, SQLite metadata and
queue, the scheduler loop, and a local replication node in a child process, with all data
under one folder. First start creates an admin (password printed once) and a ``local`` site
whose repository lives in the data folder (passphrase in a 0600 file). The local node enrolls
like any other: every start makes sure ``secrets/node.token`` holds a valid enrollment token
(a new one if it expired or was revoked); the node registers with it once and keeps its own
credential in ``secrets/node-state.json`` (0600), rotating it on its own.
Metrics are scraped at ``GET /metrics`` (Prometheus) with a token that may read, or with
the scrape token in LIFEBOAT_METRICS_TOKEN.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from shared.adapters.local.sealed_secrets import SealedSecretVault
from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
from shared.adapters.local.sqlite_queue import SqliteJobQueue
from shared.adapters.metrics.prometheus import PrometheusMetrics
from shared.adapters.notifiers import ChannelRouter
from shared.domain.identity import Role, User
from shared.domain.inventory import Site, SiteKind
from shared.domain.recovery import QemuTargetConfig
from shared.errors import InvalidInputError, LifeboatError, NotFoundError
from shared.services import auth, node_credentials
from shared.services.context import Control
from shared.services.scheduler import tick

log = logging.getLogger("lifeboat.up")


def _secret_file(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make)
    return make


#: the shortest scrape token ``lifeboat up`` accepts (it opens GET /metrics without a user)
MIN_SCRAPE_TOKEN = 24


def _scrape_token() -> str | None:
    token = os.environ.get("LIFEBOAT_METRICS_TOKEN", "").strip()
    if token and len(token) < MIN_SCRAPE_TOKEN:
        raise InvalidInputError(f"LIFEBOAT_METRICS_TOKEN must be at least {MIN_SCRAPE_TOKEN} characters")
    return token or None


@dataclass
class Embedded:
    data_dir: Path
    ctl: Control
    admin_password: str | None  # set only on first start
    enrollment_token: str  # what the local node registers with (secrets/node.token)


def bootstrap(data_dir: Path, *, lease_seconds: float = 300.0) -> Embedded:
    """Open (or create) the embedded state under ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    jwt_secret = _secret_file(data_dir / "secrets" / "jwt.key", secrets.token_urlsafe(48))
    store = SqliteMetadataStore(data_dir / "metadata.db")
    server_key = _secret_file(data_dir / "secrets" / "server.key", secrets.token_hex(32))
    ctl = Control(
        store=store,
        secrets=SealedSecretVault(store, bytes.fromhex(server_key)),
        queue=SqliteJobQueue(data_dir / "queue.db", max_receives=5),
        jwt_secret=jwt_secret,
        lease=timedelta(seconds=lease_seconds),
        notifier=ChannelRouter(),
        # GET /metrics; the node (a child process) reports, this process counts (docs/monitoring.md)
        metrics=PrometheusMetrics(scrape_token=_scrape_token()),
    )
    admin_password = None
    if not ctl.store.query(User, where={"username": "admin"}, limit=1).items:
        admin_password = secrets.token_urlsafe(18)
        ctl.store.create(User(id="user-admin", username="admin", display_name="Administrator",
                              password_hash=auth.hash_password(admin_password), roles=[Role.ADMIN]))  # fmt: skip
    key_file = data_dir / "secrets" / "repository.key"
    _secret_file(key_file, secrets.token_urlsafe(32))
    try:
        ctl.store.get(Site, "local")
    except NotFoundError:
        ctl.store.create(Site(id="local", name="This machine", site_kind=SiteKind.LOCAL,
                              repository_url=str(data_dir / "repository"), credentials_ref=f"file:{key_file}",
                              recovery_target=QemuTargetConfig(work_dir=str(data_dir / "recovered"))))  # fmt: skip
    return Embedded(
        data_dir, ctl, admin_password, _enrollment_token(ctl, data_dir / "secrets" / "node.token")
    )


def _enrollment_token(ctl: Control, token_file: Path) -> str:
    """The local node's bootstrap token: the file's, while valid (an older install's node
    token counts), else a new enrollment token written over it."""
    if token_file.exists():
        token = token_file.read_text().strip()
        try:
            auth.principal_from_api_token(ctl.store, token, now=ctl.now())
            return token
        except LifeboatError:
            token_file.unlink()
    _, token = auth.create_api_token(ctl.store, name="local-node enrollment", owner="lifeboat up",
                                     roles=[Role.ENROLLMENT], expires_at=ctl.now() + node_credentials.ENROLLMENT_TTL)  # fmt: skip
    return _secret_file(token_file, token)


def run_up(
    data_dir: Path,
    host: str,
    port: int,
    *,
    node: bool,
    scheduler_seconds: float,
    lease_seconds: float = 300.0,
    echo: Callable[[str], None] = print,
    source_roots: list[Path] | None = None,
) -> None:
    env = bootstrap(data_dir, lease_seconds=lease_seconds)
    api.configure(env.ctl)
    server = make_server(api, host, port)
    url = f"http://{host}:{server.server_address[1]}"
    env.ctl.console_url = f"{url}/console/"
    serve_in_thread(server)
    stop = threading.Event()

    def scheduler() -> None:
        while not stop.is_set():
            try:
                report = tick(env.ctl)
                if report.created or report.alerts_opened:
                    log.info("scheduler: jobs %s, alerts %s", report.created, report.alerts_opened)
            except LifeboatError as exc:
                log.warning("scheduler tick failed: %s", exc)
            stop.wait(scheduler_seconds)

    threading.Thread(target=scheduler, name="scheduler", daemon=True).start()
    child = None
    if node:
        child = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "node", "run", "--api", url, "--site", "local", "--name", "local-node",
             "--token-file", str(data_dir / "secrets" / "node.token"),
             "--state-file", str(data_dir / "secrets" / "node-state.json"), "--source-site", "*",
             *(a for root in [data_dir, *(source_roots or [])] for a in ("--source-root", str(root)))],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    (data_dir / "api.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
    echo(
        f"Lifeboat is up: console {url}/console/  API {url}  (OpenAPI: {url}/openapi.json, docs: {url}/docs)"
    )
    echo(f"data folder: {data_dir}")
    if env.admin_password:
        echo(f"first start: user 'admin', password '{env.admin_password}' (shown once; change it)")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    stop.set()
    if child is not None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
    server.shutdown()
    echo("Lifeboat stopped")
