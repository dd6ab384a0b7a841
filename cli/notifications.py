"""``lifeboat notifications``: notification channels (webhooks, SNS topics) and the outbox (API)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.control import JsonOpt, _show, client, err, out
from shared.errors import InvalidInputError

EVENTS = "rpo_breach, rpo_resolved, job_failed, test_recovery_failed, node_lost"


def register(app: typer.Typer) -> None:
    notes = typer.Typer(help="Notification channels and deliveries (API).", no_args_is_help=True)
    app.add_typer(notes, name="notifications")

    @notes.command("channels")
    def channels(as_json: JsonOpt = False) -> None:
        """The configured channels (signing secrets are never shown again)."""
        rows = client().pages("/notification-channels")
        _show(rows, ["id", "name", "channel_kind", "url", "topic_arn", "events", "enabled"], as_json)

    @notes.command("add-channel")
    def add_channel(
        name: Annotated[str, typer.Option(help="A readable name.")],
        event: Annotated[list[str], typer.Option("--event", help=f"Repeat: {EVENTS}.")],
        webhook: Annotated[
            str | None, typer.Option(help="https:// URL to POST to (http:// for loopback).")
        ] = None,
        sns_topic: Annotated[str | None, typer.Option(help="SNS topic ARN to publish to.")] = None,
        site: Annotated[list[str] | None, typer.Option("--site", help="Only these sites (repeat).")] = None,
        plan: Annotated[list[str] | None, typer.Option("--plan", help="Only these plans (repeat).")] = None,
    ) -> None:
        """Add a webhook or SNS channel; a webhook's signing secret is printed once."""
        if (webhook is None) == (sns_topic is None):
            raise InvalidInputError("give exactly one of --webhook and --sns-topic")
        body = {"name": name, "events": event, "site_ids": site or [], "plan_ids": plan or [],
                "channel_kind": "webhook" if webhook else "sns", "url": webhook, "topic_arn": sns_topic}  # fmt: skip
        created = client().request("POST", "/notification-channels", body)
        secret = created.pop("secret", None)
        out.print_json(json.dumps(created))
        if secret:
            err.print(f"signing secret (shown once; verify X-Lifeboat-Signature with it): {secret}")

    @notes.command("test")
    def test(channel_id: str) -> None:
        """Send a test notification now and show how it went."""
        out.print_json(json.dumps(client().request("POST", f"/notification-channels/{channel_id}/test")))

    @notes.command("rotate-secret")
    def rotate_secret(channel_id: str) -> None:
        """A new signing secret for a webhook channel (printed once; the old one stops at once)."""
        answer = client().request("POST", f"/notification-channels/{channel_id}/rotate-secret")
        err.print(f"new signing secret (shown once): {answer['secret']}")

    @notes.command("delete-channel")
    def delete_channel(channel_id: str) -> None:
        client().request("DELETE", f"/notification-channels/{channel_id}")
        err.print(f"channel {channel_id} deleted")

    @notes.command("list")
    def deliveries(
        state: Annotated[str | None, typer.Option(help="pending | delivered | dead")] = None,
        channel: Annotated[str | None, typer.Option()] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Notifications, newest first: delivered, waiting for a retry, or given up (dead)."""
        rows = client().pages("/notifications", {"state": state, "channel_id": channel})
        _show(rows, ["id", "event", "channel_id", "state", "attempts", "last_status", "last_error", "created_at"],
              as_json)  # fmt: skip
