"""CLI commands of the control plane: ``up``, ``node run``, ``login`` and API resources."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shared.api_client import ApiClient
from shared.errors import InvalidInputError

out = Console()
err = Console(stderr=True)
DEFAULT_API = "http://127.0.0.1:8080"


def _session_file() -> Path:
    base = os.environ.get("LIFEBOAT_CONFIG_DIR") or os.path.join(Path.home(), ".config", "lifeboat")
    return Path(base) / "session.json"


def client() -> ApiClient:
    """The API client: LIFEBOAT_API/LIFEBOAT_TOKEN, else the session saved by ``login``."""
    session: dict[str, str] = {}
    path = _session_file()
    if path.exists():
        session = json.loads(path.read_text())
    api = os.environ.get("LIFEBOAT_API") or session.get("api") or DEFAULT_API
    token = os.environ.get("LIFEBOAT_TOKEN") or session.get("token")
    return ApiClient(api, token)


def _show(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*[str(row.get(c, "")) if row.get(c) is not None else "-" for c in columns])
    out.print(table)


def _load_json(path: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text() if path != "-" else typer.get_text_stream("stdin").read())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read JSON from {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path} must hold a JSON object")
    return doc


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SourceRootOpt = Annotated[
    list[Path] | None,
    typer.Option(help="A folder or device path the node may read sources under (repeatable)."),
]


def register(app: typer.Typer) -> None:
    """Add the control-plane commands to the ``lifeboat`` app."""

    @app.command()
    def up(
        data_dir: Annotated[Path, typer.Option(help="Where all state lives.")] = Path("lifeboat-data"),
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")] = 8080,
        node: Annotated[
            bool, typer.Option("--node/--no-node", help="Start a local replication node.")
        ] = True,
        scheduler_seconds: Annotated[float, typer.Option(min=0.5, help="Scheduler interval.")] = 60.0,
        job_lease_seconds: Annotated[
            float, typer.Option(min=5, help="A job whose node is silent this long is given to another node.")
        ] = 300.0,
        source_root: SourceRootOpt = None,
    ) -> None:
        """Run the control plane on this machine: API, scheduler and a local node.

        The local node reads image files and block devices only under the data folder and
        each --source-root, and the VMs of every vmware site of this control plane."""
        from cli.embedded import run_up

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        run_up(
            data_dir.absolute(), host, port, node=node, scheduler_seconds=scheduler_seconds,
            lease_seconds=job_lease_seconds, echo=out.print, source_roots=source_root or [],
        )  # fmt: skip

    node_app = typer.Typer(
        help="Replication nodes: run one; enroll, rotate, revoke (admin).", no_args_is_help=True
    )
    app.add_typer(node_app, name="node")
    from cli import nodes  # list, enrollment-token, rotate, revoke

    nodes.register(node_app)

    @node_app.command("run")
    def node_run(
        site: Annotated[str, typer.Option(help="Site this node serves.")],
        api: Annotated[str, typer.Option(help="API base URL.")] = DEFAULT_API,
        token_file: Annotated[
            Path | None,
            typer.Option(help="File holding the node's enrollment token (or an older node token)."),
        ] = None,
        state_file: Annotated[
            Path | None,
            typer.Option(
                help="Where the node keeps its own credential (0600); without it, it enrolls at each start."
            ),
        ] = None,
        rotate_after_days: Annotated[
            float, typer.Option(min=0, help="Rotate the node's credential when older than this (0: never).")
        ] = 30.0,
        name: Annotated[str, typer.Option(help="Node name.")] = os.uname().nodename,
        capacity: Annotated[int, typer.Option(min=1, max=1000, help="Concurrent disks.")] = 40,
        poll_seconds: Annotated[float, typer.Option(min=0.1)] = 2.0,
        source_root: SourceRootOpt = None,
        source_site: Annotated[
            list[str] | None,
            typer.Option(help="A vmware site whose VMs this node may read (repeatable; '*': every one)."),
        ] = None,
    ) -> None:
        """Register with the API (token from --token-file or LIFEBOAT_NODE_TOKEN) and run jobs.

        An enrollment token registers the node and gets it its own credential, kept in
        --state-file and rotated every --rotate-after-days; on restart the node uses the saved
        credential, and enrolls again only if it was revoked.

        The node reads files and block devices only under each --source-root (none by
        default) and VMs only of each --source-site; a job naming anything else fails
        before a byte is read."""
        from node_runtime.agent import NodeAgent
        from node_runtime.sources.resolve import SourcePolicy

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        token = token_file.read_text().strip() if token_file else os.environ.get("LIFEBOAT_NODE_TOKEN")
        if not token and not (state_file and state_file.exists()):
            raise InvalidInputError("a node needs a token: --token-file or LIFEBOAT_NODE_TOKEN")
        from functions.recovery.node_jobs import job_runners
        from functions.recovery.targets import build_target
        from node_runtime.credentials import NodeIdentity, StateFile

        api_client = ApiClient(api, token)
        identity = NodeIdentity(api_client, state=StateFile(state_file.absolute()) if state_file else None,
                                rotate_after=timedelta(days=rotate_after_days))  # fmt: skip
        agent = NodeAgent(
            api_client, name=name, site_id=site, capacity=capacity, poll_seconds=poll_seconds,
            runners=job_runners(build_target), identity=identity,
            source_policy=SourcePolicy(allowed_roots=[p.absolute() for p in source_root or []],
                                       source_sites=source_site or []),
        )  # fmt: skip
        stop = threading.Event()
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            agent.run(stop)
        except KeyboardInterrupt:
            stop.set()

    @app.command()
    def login(
        username: Annotated[str, typer.Option(prompt=True)],
        api: Annotated[str, typer.Option(help="API base URL.")] = DEFAULT_API,
    ) -> None:
        """Log in (password from LIFEBOAT_API_PASSWORD or a prompt) and save the session."""
        password = os.environ.get("LIFEBOAT_API_PASSWORD") or typer.prompt("Password", hide_input=True)
        token = ApiClient(api).login(username, password)
        path = _session_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"api": api, "token": token}, f)
        out.print(f"logged in to {api} as {username}")

    from cli import users  # users, login lockouts and unlocking

    users.register(app)

    sites = typer.Typer(help="Sites (API).", no_args_is_help=True)
    app.add_typer(sites, name="sites")
    from cli import inventory  # its commands hang off `sites` and the app

    inventory.register(app, sites)

    @sites.command("list")
    def sites_list(as_json: JsonOpt = False) -> None:
        _show(client().pages("/sites"), ["id", "name", "site_kind", "region", "repository_url"], as_json)

    @sites.command("create")
    def sites_create(
        file: Annotated[str, typer.Argument(help="JSON file with the site ('-' = stdin).")],
    ) -> None:
        out.print_json(json.dumps(client().create_site(**_load_json(file))))

    plans = typer.Typer(help="Protection plans (API).", no_args_is_help=True)
    app.add_typer(plans, name="plans")
    from cli import failback  # reverse protection and failback hang off `plans`

    failback.register(plans)

    @plans.command("list")
    def plans_list(as_json: JsonOpt = False) -> None:
        _show(client().pages("/plans"), ["id", "name", "state", "rpo_minutes", "target_site_id"], as_json)

    @plans.command("create")
    def plans_create(
        file: Annotated[str, typer.Argument(help="JSON file with the plan ('-' = stdin).")],
    ) -> None:
        out.print_json(json.dumps(client().create_plan(**_load_json(file))))

    @plans.command("action")
    def plans_action(
        plan_id: str,
        action: Annotated[
            str, typer.Argument(help="protect | pause | resume | replicate-now | recover | cleanup-test")
        ],
        mode: Annotated[
            str, typer.Option(help="Recovery mode for 'recover': test | failover | migration.")
        ] = "test",
        at: Annotated[
            str | None,
            typer.Option(
                help="For 'recover': the latest point at or before this ISO time (default: latest)."
            ),
        ] = None,
    ) -> None:
        allowed = {"protect", "pause", "resume", "replicate-now", "recover", "cleanup-test"}
        if action not in allowed:
            raise InvalidInputError(f"unknown action {action!r}; one of {', '.join(sorted(allowed))}")
        body = {"mode": mode, "point_time": at} if action == "recover" else None
        out.print_json(json.dumps(client().plan_action(plan_id, action, body)))

    jobs_app = typer.Typer(help="Jobs (API).", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("list")
    def jobs_list(
        state: Annotated[str | None, typer.Option()] = None,
        plan: Annotated[str | None, typer.Option()] = None,
        as_json: JsonOpt = False,
    ) -> None:
        rows = client().jobs(state=state, plan_id=plan)
        _show(rows, ["id", "job_kind", "plan_id", "state", "attempts", "node_id", "created_at"], as_json)

    @jobs_app.command("show")
    def jobs_show(job_id: str) -> None:
        out.print_json(json.dumps(client().job(job_id)))

    @jobs_app.command("cancel")
    def jobs_cancel(job_id: str) -> None:
        out.print_json(json.dumps(client().request("POST", f"/jobs/{job_id}/cancel")))

    from cli import notifications

    notifications.register(app)

    recoveries = typer.Typer(help="Recovery runs and their reports (API).", no_args_is_help=True)
    app.add_typer(recoveries, name="recoveries")

    @recoveries.command("list")
    def recoveries_list(plan: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False) -> None:
        rows = client().pages("/recoveries", {"plan_id": plan} if plan else None)
        _show(rows, ["id", "plan_id", "mode", "state", "rto_seconds", "cleanup_state", "started_at"], as_json)

    @recoveries.command("show")
    def recoveries_show(
        report_id: str,
        html: Annotated[Path | None, typer.Option(help="Also save the HTML report to this file.")] = None,
    ) -> None:
        """A recovery report: per machine and per stage timings, validation evidence, errors."""
        c = client()
        out.print_json(json.dumps(c.request("GET", f"/recoveries/{report_id}")))
        if html is not None:
            html.write_text(c.text(f"/recoveries/{report_id}/html"))
            err.print(f"saved {html}")

    @app.command("recovery-points")
    def recovery_points(
        plan: Annotated[str | None, typer.Option()] = None,
        machine: Annotated[str | None, typer.Option()] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Recovery points known to the control plane (API), newest first."""
        rows = client().points(plan_id=plan, machine_id=machine)
        _show(rows, ["id", "plan_id", "machine_id", "time", "run_id", "direction"], as_json)

    from cli import reports  # `lifeboat report ...`

    reports.register(app)
