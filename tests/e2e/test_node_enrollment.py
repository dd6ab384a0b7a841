"""``lifeboat up`` enrolls its local node like any other, and the ``lifeboat node`` admin
commands (enrollment token, rotate, revoke) work as a user runs them: separate processes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.api_client import ApiClient
from shared.errors import AuthenticationError, LifeboatError
from tests.e2e.test_control_plane import Processes, free_port, wait_for

pytestmark = pytest.mark.ops


def _cli(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIFEBOAT_API": url, "LIFEBOAT_CONFIG_DIR": str(config)}
    env.pop("LIFEBOAT_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)  # fmt: skip


def test_up_enrolls_its_local_node_and_the_cli_administers_nodes(procs: Processes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start("up", "up", "--data-dir", str(data), "--port", str(port), "--scheduler-seconds", "5")
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)
    admin = ApiClient(url)
    admin.login("admin", password)

    def local_node() -> dict[str, Any] | None:
        return next((n for n in admin.pages("/nodes") if n["name"] == "local-node" and n["online"]), None)

    node = wait_for("the local node online", local_node, 60)
    state_file = data / "secrets" / "node-state.json"
    state = json.loads(state_file.read_text())
    assert state["node_id"] == node["id"] and stat.S_IMODE(state_file.stat().st_mode) == 0o600
    enrollment = (data / "secrets" / "node.token").read_text().strip()
    tokens = {t["id"]: t for t in admin.pages("/tokens")}
    assert tokens[state["token_id"]]["node_id"] == node["id"]
    assert tokens[enrollment.removeprefix("lbt_").split("_", 1)[0]]["roles"] == ["enrollment"]
    assert state["secret"] not in procs.log("up")  # the node's log (the child's output) never shows it

    # the CLI, logged in as the admin: an enrollment token, a node enrolled with it, rotated, revoked
    config = tmp_path / "config"
    login = subprocess.run([sys.executable, "-m", "cli.main", "login", "--username", "admin", "--api", url],
                           env={**os.environ, "LIFEBOAT_CONFIG_DIR": str(config), "LIFEBOAT_API_PASSWORD": password},
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)  # fmt: skip
    assert login.returncode == 0, login.stderr
    made = _cli(url, config, "node", "enrollment-token", "--name", "rack2", "--ttl-days", "1")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("lbt_") and "expires" in made.stderr
    rack = ApiClient(url, secret).register_node(name="rack2-a", site_id="local")
    listed = _cli(url, config, "node", "list", "--json")
    assert listed.returncode == 0 and rack["id"] in listed.stdout
    rotated = _cli(url, config, "node", "rotate", rack["id"], "--grace-seconds", "0")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip()
    with pytest.raises(AuthenticationError):
        ApiClient(url, rack["credential"]["secret"]).heartbeat(rack["id"], 0)
    ApiClient(url, new_secret).heartbeat(rack["id"], 0)
    refused = _cli(url, config, "node", "rotate", rack["id"], "--grace-seconds", "-1")
    assert refused.returncode != 0 and ApiClient(url, new_secret).heartbeat(rack["id"], 0)
    revoked = _cli(url, config, "node", "revoke", rack["id"], "--yes")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked"] is True
    with pytest.raises(AuthenticationError):
        ApiClient(url, new_secret).heartbeat(rack["id"], 0)
    assert wait_for("the local node still online", local_node, 30)["id"] == node["id"]

    # a restart keeps the local node: it re-registers with its saved credential
    before = local_node()["heartbeat_at"]  # type: ignore[index]
    procs.stop_all()
    procs.start("up-again", "up", "--data-dir", str(data), "--port", str(port), "--scheduler-seconds", "5")
    wait_for("the API again", lambda: _alive(url), 60)
    admin.login("admin", password)
    wait_for(
        "the local node's heartbeat after the restart",
        lambda: (local_node() or {}).get("heartbeat_at", "") > before,
        60,
    )
    assert [n["id"] for n in admin.pages("/nodes") if n["name"] == "local-node"] == [node["id"]]
    assert json.loads(state_file.read_text())["node_id"] == node["id"]


def _alive(url: str) -> bool:
    try:
        return ApiClient(url).request("GET", "/health")["status"] == "ok"
    except LifeboatError:
        return False
