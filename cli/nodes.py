"""CLI commands administering nodes: list, enrollment tokens, credential rotation, revocation.

They hang off ``lifeboat node`` (next to ``node run``) and call the API as the logged-in
user (an admin): secrets are printed once, as the API answers them once.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.control import JsonOpt, _show, client, err, out


def register(node_app: typer.Typer) -> None:
    @node_app.command("list")
    def node_list(as_json: JsonOpt = False) -> None:
        """Registered nodes: health, load, and whether they were revoked."""
        rows = client().pages("/nodes")
        _show(
            rows, ["id", "name", "site_id", "online", "revoked", "heartbeat_at", "software_version"], as_json
        )

    @node_app.command("enrollment-token")
    def node_enrollment_token(
        name: Annotated[str, typer.Option(help="What the token is for (e.g. the autoscaling group).")],
        ttl_days: Annotated[
            int | None, typer.Option(min=1, max=3650, help="Lifetime in days (default 7).")
        ] = None,
    ) -> None:
        """Create an enrollment token: it only registers new nodes (each gets its own credential).

        The token is printed once: put it where nodes read it (--token-file)."""
        answer = client().create_enrollment_token(name, ttl_days=ttl_days)
        err.print(f"enrollment token {answer['id']} (expires {answer['expires_at']}); shown once:")
        out.print(answer["secret"], highlight=False, soft_wrap=True)

    @node_app.command("rotate")
    def node_rotate(
        node_id: str,
        grace_seconds: Annotated[
            int, typer.Option(min=0, max=3600, help="How long the node's current credential keeps working.")
        ] = 300,
    ) -> None:
        """Issue the node a new credential (printed once, to hand to it); its others end after the grace.

        Nodes rotate their own credential on their own (node run --rotate-after-days)."""
        answer = client().reissue_node_credential(node_id, grace_seconds=grace_seconds)
        err.print(f"credential {answer['token_id']} of node {node_id}; shown once:")
        out.print(answer["secret"], highlight=False, soft_wrap=True)

    @node_app.command("revoke")
    def node_revoke(
        node_id: str,
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Revoke every credential of a node at once; it can return only by enrolling again."""
        if not yes:
            typer.confirm(f"Revoke node {node_id}? Its next call is refused.", abort=True)
        out.print_json(json.dumps(client().revoke_node(node_id)))
