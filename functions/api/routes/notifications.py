"""Notification channels (webhooks, SNS topics) and the notification outbox.

A webhook's signing secret is in the answer to the create and rotate-secret calls only
(``secret``, with ``Cache-Control: no-store``); no route serves it again.
"""

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from functions.api.core import Cursor, IdPath, Limit, ctl, page_of, public, route
from functions.api.schemas import input_model, update_model
from shared.domain.base import new_id
from shared.domain.identity import Permission
from shared.domain.notifications import Notification, NotificationChannel
from shared.services import notification_channels as channels

if TYPE_CHECKING:
    from pydantic import BaseModel as ChannelIn
    from pydantic import BaseModel as ChannelUpdate
else:
    ChannelIn = input_model(NotificationChannel, exclude={"secret_ref"}, name="NotificationChannelIn")
    ChannelUpdate = update_model(NotificationChannel, exclude={"secret_ref", "channel_kind"},
                                 name="NotificationChannelUpdate")  # fmt: skip


def _with_secret(status: int, channel: NotificationChannel, secret: str | None) -> Response:
    body = public(channel) | ({"secret": secret} if secret is not None else {})
    return Response(status_code=status, content_type="application/json", headers={"Cache-Control": "no-store"},
                    body=json.dumps(body, default=str))  # fmt: skip


@route("GET", "/notification-channels", Permission.READ)
def list_channels(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    return page_of(ctl().store.query(NotificationChannel, limit=limit, cursor=cursor))


@route("POST", "/notification-channels", Permission.OPERATE)
def create_channel(body: Annotated[ChannelIn, Body()]):  # -> Response
    """Add a channel. A webhook's answer carries its signing secret (``secret``): shown once."""
    data = body.model_dump()
    data["id"] = data.get("id") or new_id("chan")
    channel, secret = channels.create(ctl(), NotificationChannel(**data))
    return _with_secret(201, channel, secret)


@route("GET", "/notification-channels/<channel_id>", Permission.READ)
def get_channel(channel_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(NotificationChannel, channel_id))


@route("PUT", "/notification-channels/<channel_id>", Permission.OPERATE)
def update_channel(channel_id: IdPath, body: Annotated[ChannelUpdate, Body()]) -> dict[str, Any]:
    changes = body.model_dump()
    revision = changes.pop("revision")
    return public(channels.update(ctl(), channel_id, changes, revision=revision))


@route("DELETE", "/notification-channels/<channel_id>", Permission.OPERATE)
def delete_channel(channel_id: IdPath):  # -> Response
    channels.delete(ctl(), channel_id)
    return Response(status_code=204, content_type="application/json", body="")


@route("POST", "/notification-channels/<channel_id>/rotate-secret", Permission.OPERATE)
def rotate_channel_secret(channel_id: IdPath):  # -> Response
    """A new signing secret for a webhook channel (in ``secret``, shown once); the old one stops at once."""
    channel, secret = channels.rotate_secret(ctl(), channel_id)
    return _with_secret(200, channel, secret)


@route("POST", "/notification-channels/<channel_id>/test", Permission.OPERATE)
def test_channel(channel_id: IdPath) -> dict[str, Any]:
    """Send a ``test`` notification now; the answer is the notification after the attempt
    (``state`` delivered, pending with ``last_error``, or dead with ``last_status``)."""
    return public(channels.send_test(ctl(), channel_id))


@route("GET", "/notifications", Permission.READ)
def list_notifications(
    state: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    channel_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:  # fmt: skip
    """The outbox, newest first: what was sent, what is waiting for a retry, what was given up (``dead``)."""
    where = {k: v for k, v in (("state", state), ("channel_id", channel_id)) if v}
    page = ctl().store.query(Notification, where=where, descending=True, limit=limit, cursor=cursor)
    return page_of(page)
