"""What every control-plane use case receives: the ports and the clock (the composition
root of each process builds one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.policies.login_throttle import LoginThrottleSettings
from shared.ports.job_queue import JobQueue
from shared.ports.metadata_store import MetadataStore
from shared.ports.metrics import Metrics, NullMetrics
from shared.ports.notifier import NotificationSender
from shared.ports.secrets import SecretVault
from shared.ports.workflow import WorkflowStarter


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Control:
    store: MetadataStore
    queue: JobQueue
    jwt_secret: str = field(repr=False)
    now: Callable[[], datetime] = _now
    #: how long a running job stays with its node without a progress report
    lease: timedelta = timedelta(minutes=5)
    #: where recovery runs go when a workflow engine runs them (Step Functions in AWS);
    #: None: nodes run them with the local runner
    workflows: WorkflowStarter | None = None
    #: where secrets users hand the control plane are kept (vCenter passwords); None: refused
    secrets: SecretVault | None = None
    #: where webhook signing secrets are kept, apart from ``secrets`` so that what signs
    #: notifications (the scheduler) reads no vCenter password; None: in ``secrets``
    channel_secrets: SecretVault | None = None
    #: thresholds of login throttling (failures per username and per address, backoff, lockout)
    login_throttle: LoginThrottleSettings = field(default_factory=LoginThrottleSettings)
    #: delivers notifications (webhooks, SNS); None: the outbox fills but nothing is sent
    notifier: NotificationSender | None = None
    #: the web console's address, for links in notifications ("" = no links)
    console_url: str = ""
    #: where the control plane's measurements go (shared/domain/metrics.py names them)
    metrics: Metrics = field(default_factory=NullMetrics)

    @property
    def channel_vault(self) -> SecretVault | None:
        return self.channel_secrets or self.secrets
