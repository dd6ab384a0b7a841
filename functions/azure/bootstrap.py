"""Create the first administrator of an Azure deployment (``python -m functions.azure.bootstrap``).

The API has no user until one exists, and creating users needs an administrator. This
writes the first one straight into the metadata table, with the operator's own Entra ID
credentials (``az login``; the operator needs 'Storage Table Data Contributor' on the data
account and an allowed IP) or ``LIFEBOAT_STORAGE`` as a connection string. The password
is generated and printed once. With Entra ID sign-in (``entraClientId``) this is not
needed: give a user the ``Lifeboat.Admin`` app role instead.
"""

from __future__ import annotations

import argparse
import os
import secrets

from functions.azure.composition import build_control
from shared.domain.base import new_id
from shared.domain.identity import Role, User
from shared.errors import ConflictError
from shared.services import auth


def create_admin(env: dict[str, str], username: str) -> str:
    """Create ``username`` as admin; return its generated password. ConflictError if it exists."""
    ctl = build_control({"LIFEBOAT_JWT_SECRET": "x" * 32, **env})  # the key is not used here
    if ctl.store.query(User, where={"username": username}, limit=1).items:
        raise ConflictError(f"user {username!r} exists")
    password = secrets.token_urlsafe(18)
    ctl.store.create(User(id=new_id("user"), username=username, password_hash=auth.hash_password(password),
                          roles=[Role.ADMIN]))  # fmt: skip
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account", help="data storage account name (main.bicep output dataAccountName)")
    parser.add_argument("--table", default="lifeboat")
    parser.add_argument("--username", default="admin")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k.startswith("LIFEBOAT_")}
    if args.account:
        env["LIFEBOAT_STORAGE__accountName"] = args.account
    env["LIFEBOAT_TABLE"] = args.table
    password = create_admin(env, args.username)
    print(f"created {args.username!r} (admin); password, shown once: {password}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
