"""Notification channels: create, change, delete, rotate a webhook's signing secret, send a test.

A webhook's signing secret is made here (the receiver cannot choose a weak one), kept in the
control plane's vault (HMAC needs the secret itself, so it cannot be hashed) and handed to
the caller once: in the answer to the create or rotate call that made it. Nothing serves it
again; the record holds only its vault reference.
"""

from __future__ import annotations

import secrets as random_secrets
from typing import Any

from shared.domain.base import new_id
from shared.domain.notifications import ChannelKind, Notification, NotificationChannel, NotificationEvent
from shared.errors import InvalidInputError, InvalidStateError
from shared.services import notify
from shared.services.context import Control

#: the prefix of generated signing secrets (recognisable when pasted into a receiver's config)
SECRET_PREFIX = "lbwhsec_"


def _new_secret(ctl: Control, channel_id: str) -> tuple[str, str]:
    vault = ctl.channel_vault
    if vault is None:
        raise InvalidStateError("this control plane has no secret vault configured; webhooks need one")
    secret = SECRET_PREFIX + random_secrets.token_urlsafe(32)
    return secret, vault.put(f"notification channel {channel_id} webhook signing secret", secret)


def create(ctl: Control, channel: NotificationChannel) -> tuple[NotificationChannel, str | None]:
    """Store ``channel``; a webhook gets a new signing secret, returned here and never again."""
    if channel.secret_ref is not None:
        raise InvalidInputError("secret_ref is set by the server")
    now = ctl.now()
    channel = channel.model_copy(update={"created_at": now, "updated_at": now})
    if channel.channel_kind is not ChannelKind.WEBHOOK:
        return ctl.store.create(channel), None
    secret, ref = _new_secret(ctl, channel.id)
    try:
        stored = ctl.store.create(channel.model_copy(update={"secret_ref": ref}))
    except BaseException:
        _forget(ctl, ref)
        raise
    return stored, secret


def update(ctl: Control, channel_id: str, changes: dict[str, Any], *, revision: int) -> NotificationChannel:
    """Replace the channel's settings (not its kind, not its secret) if it is still at ``revision``."""
    existing = ctl.store.get(NotificationChannel, channel_id)
    fields = {**existing.model_dump(), **changes, "secret_ref": existing.secret_ref, "revision": revision,
              "channel_kind": existing.channel_kind}  # fmt: skip
    return ctl.store.update(NotificationChannel.model_validate(fields))


def delete(ctl: Control, channel_id: str) -> None:
    """Delete the channel and its secret; its undelivered notifications die on their next attempt."""
    existing = ctl.store.get(NotificationChannel, channel_id)
    ctl.store.delete(NotificationChannel, channel_id, revision=existing.revision)
    if existing.secret_ref is not None:
        _forget(ctl, existing.secret_ref)


def rotate_secret(ctl: Control, channel_id: str) -> tuple[NotificationChannel, str]:
    """A new signing secret for a webhook (returned once); the old one stops signing at once."""
    existing = ctl.store.get(NotificationChannel, channel_id)
    if existing.channel_kind is not ChannelKind.WEBHOOK:
        raise InvalidInputError(
            f"channel {channel_id} is an {existing.channel_kind} channel; only webhooks sign"
        )
    secret, ref = _new_secret(ctl, channel_id)
    try:
        stored = ctl.store.update(existing.model_copy(update={"secret_ref": ref}))
    except BaseException:
        _forget(ctl, ref)
        raise
    if existing.secret_ref is not None:
        _forget(ctl, existing.secret_ref)
    return stored, secret


def send_test(ctl: Control, channel_id: str) -> Notification:
    """Queue a ``test`` notification for the channel (enabled or not) and try it at once when
    this process can deliver; the answer says what happened (``state``, ``last_status``)."""
    channel = ctl.store.get(NotificationChannel, channel_id)
    record = notify.build(ctl, channel, NotificationEvent.TEST, key=new_id("test"),
                          summary=f"test notification for channel {channel.name}")  # fmt: skip
    stored = ctl.store.create(record)
    if ctl.notifier is None:
        return stored
    tried = notify.attempt(ctl, stored, channel.model_copy(update={"enabled": True}))
    return tried or ctl.store.get(Notification, stored.id)


def _forget(ctl: Control, ref: str) -> None:
    if ctl.channel_vault is not None:
        ctl.channel_vault.delete(ref)
