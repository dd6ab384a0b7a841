"""CLI of users and login lockouts: ``lifeboat users list|unlock|lockouts|unlock-address`` (API, admin)."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated

import typer

from cli.control import JsonOpt, _show, client, out
from shared.errors import InvalidInputError, NotFoundError


def register(app: typer.Typer) -> None:
    users = typer.Typer(help="Users and login lockouts (API, administer).", no_args_is_help=True)
    app.add_typer(users, name="users")

    @users.command("list")
    def users_list(as_json: JsonOpt = False) -> None:
        _show(client().pages("/users"), ["id", "username", "display_name", "roles", "disabled"], as_json)

    @users.command("lockouts")
    def users_lockouts(as_json: JsonOpt = False) -> None:
        """Usernames and client addresses locked out of login now."""
        rows = client().request("GET", "/auth/lockouts")["items"]
        _show(rows, ["scope", "key", "failures", "locked_until", "retry_after"], as_json)

    @users.command("unlock")
    def users_unlock(
        username: Annotated[
            str, typer.Argument(help="The user name (a name with no user clears its counter too).")
        ],
    ) -> None:
        """Clear a username's failed logins (lockout and backoff)."""
        c = client()
        matches = [u for u in c.pages("/users") if u["username"] == username]
        if matches:
            answer = c.request("POST", f"/users/{matches[0]['id']}/unlock")
        else:
            answer = c.request("POST", "/auth/lockouts/clear", {"username": username})
            if not answer["cleared"]:
                raise NotFoundError(f"no user {username!r} and no failed logins counted for that name")
        out.print_json(json.dumps(answer))

    @users.command("unlock-address")
    def users_unlock_address(
        address: Annotated[str, typer.Argument(help="The client's IP address.")],
    ) -> None:
        """Clear a client address's failed logins."""
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise InvalidInputError(f"not an IP address: {address!r}") from exc
        out.print_json(json.dumps(client().request("POST", "/auth/lockouts/clear", {"address": address})))
