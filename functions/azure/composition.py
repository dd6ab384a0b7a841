"""Composition root of the Azure Functions app: Azure Table metadata, Azure Queue jobs.

App settings (environment variables of the function app):

``LIFEBOAT_STORAGE``
    A storage connection string (Azurite, or an account key: development only). When it
    is absent the identity-based form is used, with the names the Functions host uses for
    its own identity-based connections:
``LIFEBOAT_STORAGE__accountName`` | ``__tableServiceUri`` + ``__queueServiceUri``
    The account (``https://<name>.table.core.windows.net`` etc. are derived from the name);
    the credential is the app's managed identity (``DefaultAzureCredential``; set
    ``LIFEBOAT_STORAGE__clientId`` for a user-assigned identity). Bicep sets this form.
``LIFEBOAT_TABLE`` (default ``lifeboat``), ``LIFEBOAT_QUEUE`` (default ``lifeboat-jobs``;
    dead letters in ``<queue>-dlq``), ``LIFEBOAT_QUEUE_MAX_RECEIVES`` (default 5).
``LIFEBOAT_JWT_SECRET``
    The HS256 signing key of user sessions, as a Key Vault reference
    (``@Microsoft.KeyVault(SecretUri=...)``): the platform resolves it before the worker
    starts, so the process sees the value. A reference that is still literal (the app's
    identity may not read the vault) or a key shorter than 32 characters is refused:
    signing with it would make every session forgeable.
``LIFEBOAT_JOB_LEASE_SECONDS`` (default 300).
``LIFEBOAT_FLOW_QUEUE`` (Bicep: ``lifeboat-flows``, in the same storage account)
    When set, test and failover recoveries and test cleanups run as Durable orchestrations
    of this app (functions/azure/durable_flow.py) instead of on a node, as
    ``LIFEBOAT_RECOVERY_STATE_MACHINE`` sends them to Step Functions in AWS: the API's
    WorkflowStarter (:class:`~shared.adapters.azure.durable_starter.DurableQueueStarter`)
    puts start requests on that queue, whose trigger starts them. Unset: they go to nodes.

Authentication settings (``LIFEBOAT_ENTRA_*``) are read by :mod:`functions.azure.entra`.
Tables and queues are created by the deployment (Bicep), never here: the constructors do
no I/O, so a cold start costs no storage round trip.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import ServiceUnavailableError
from shared.services.context import Control

if TYPE_CHECKING:  # the API's cold start does not import the recovery code
    from functions.recovery.ports import RecoveryPorts

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
MIN_SECRET_LENGTH = 32
STORAGE = "LIFEBOAT_STORAGE"
FLOW_QUEUE = "LIFEBOAT_FLOW_QUEUE"


@dataclass(frozen=True)
class StorageSettings:
    """Where the table and queue live: a connection string, or endpoints + managed identity."""

    connection_string: str | None = None
    table_endpoint: str | None = None
    queue_endpoint: str | None = None
    client_id: str | None = None


def storage_settings(env: Mapping[str, str], prefix: str = STORAGE) -> StorageSettings:
    """Read ``prefix`` (connection string) or ``prefix__accountName``/``__*ServiceUri`` (identity)."""
    if env.get(prefix):
        return StorageSettings(connection_string=env[prefix])
    account = env.get(f"{prefix}__accountName", "")
    table = env.get(f"{prefix}__tableServiceUri") or (
        f"https://{account}.table.core.windows.net" if account else ""
    )
    queue = env.get(f"{prefix}__queueServiceUri") or (
        f"https://{account}.queue.core.windows.net" if account else ""
    )
    if not (table and queue):
        raise ServiceUnavailableError(
            f"storage is not configured: set {prefix} (connection string) or {prefix}__accountName "
            f"(managed identity)"
        )
    return StorageSettings(
        table_endpoint=table, queue_endpoint=queue, client_id=env.get(f"{prefix}__clientId")
    )


def jwt_secret(env: Mapping[str, str]) -> str:
    """The resolved signing key; refuses unresolved Key Vault references and short keys."""
    value = env.get("LIFEBOAT_JWT_SECRET", "")
    if value.startswith(KEY_VAULT_REFERENCE):
        raise ServiceUnavailableError(
            "LIFEBOAT_JWT_SECRET is an unresolved Key Vault reference: grant the function app's "
            "identity 'Key Vault Secrets User' on the vault and check the secret URI"
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise ServiceUnavailableError(
            f"LIFEBOAT_JWT_SECRET must hold at least {MIN_SECRET_LENGTH} characters"
        )
    return value


def _services(settings: StorageSettings) -> tuple[Any, Any]:
    """(TableServiceClient | connection string, QueueServiceClient | connection string)."""
    if settings.connection_string:
        return settings.connection_string, settings.connection_string
    from azure.data.tables import TableServiceClient
    from azure.identity import DefaultAzureCredential
    from azure.storage.queue import QueueServiceClient

    credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
    tables = TableServiceClient(endpoint=str(settings.table_endpoint), credential=credential)
    queues = QueueServiceClient(account_url=str(settings.queue_endpoint), credential=credential)
    return tables, queues


def build_control(env: Mapping[str, str]) -> Control:
    """The control plane's ports from app settings ``env`` (no I/O)."""
    from shared.adapters.azure.storage_queue import AzureStorageJobQueue
    from shared.adapters.azure.table_metadata import AzureTableMetadataStore

    tables, queues = _services(storage_settings(env))
    queue_name = env.get("LIFEBOAT_QUEUE", "lifeboat-jobs")
    workflows = None
    if env.get(FLOW_QUEUE):
        from shared.adapters.azure.durable_starter import DurableQueueStarter

        workflows = DurableQueueStarter(queues, flow_queue(env))
    return Control(
        workflows=workflows,
        store=AzureTableMetadataStore(tables, env.get("LIFEBOAT_TABLE", "lifeboat")),
        queue=AzureStorageJobQueue(
            queues,
            queue_name,
            dead_letter_queue_name=env.get("LIFEBOAT_DEAD_LETTER_QUEUE") or f"{queue_name}-dlq",
            max_receives=int(env.get("LIFEBOAT_QUEUE_MAX_RECEIVES", "5")),
        ),
        jwt_secret=jwt_secret(env),
        lease=timedelta(seconds=float(env.get("LIFEBOAT_JOB_LEASE_SECONDS", "300"))),
    )


def flow_queue(env: Mapping[str, str]) -> str:
    """The queue of flow start requests (the trigger listens on the default when it is unset)."""
    return env.get(FLOW_QUEUE) or "lifeboat-flows"


@functools.cache
def control() -> Control:
    """The process's Control, built once from ``os.environ`` (warm invocations reuse it)."""
    return build_control(os.environ)


@functools.cache
def recovery_ports() -> RecoveryPorts:
    """The ports of the recovery-flow activities, as the Lambda tasks have them
    (functions/recovery/lambda_handlers.py): each run's own ``recovery_target`` (built once
    per configuration), and its repository opened, never created, from its URL with the
    passphrase its credentials reference names (``env:`` an app setting, e.g. a Key Vault
    reference; ``file:``). Imports only what recovering needs (not the node agent)."""
    from functions.recovery.ports import RecoveryPorts
    from functions.recovery.targets import build_target
    from node_runtime.sources.secrets import resolve_node_secret
    from shared.adapters.store_url import open_store
    from shared.domain.recovery import TargetConfig
    from shared.repo.object_cache import cache_from_env
    from shared.repo.repository import Repository

    targets: dict[str, Any] = {}
    lock = threading.Lock()

    def target_for(config: TargetConfig) -> Any:
        key = config.model_dump_json()
        with lock:
            if key not in targets:
                targets[key] = build_target(config)
            return targets[key]

    def open_repository(url: str, credentials_ref: str | None) -> Repository:
        secret = (
            os.environ.get("LIFEBOAT_PASSWORD")
            if credentials_ref is None
            else resolve_node_secret(credentials_ref)
        )
        repo = Repository.open(open_store(url), lambda: secret or "")
        repo.cache = cache_from_env(os.environ)
        return repo

    return RecoveryPorts(target_for=target_for, open_repository=open_repository)
