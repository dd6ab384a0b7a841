"""Input and output models of the recovery-flow states (the JSON that moves between them).

Each machine's branch carries one :class:`MachineState`; every state adds its result
under its own key (``ResultPath``), so a later state — and the compensating cleanup —
sees everything that came before. A Catch puts ``{"Error", "Cause"}`` under ``error``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.recovery import (
    CleanupOutcome,
    DiskArtifact,
    Evidence,
    FlowInput,
    GroupRun,
    Instance,
    MachineReport,
    MachineRun,
    OsFamily,
    Resource,
    RunSpec,
    TargetConfig,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageResult(_Model):
    started_at: datetime
    finished_at: datetime


class RunChecked(StageResult):
    points: int = Field(ge=0, description="Recovery points found in the repository.")
    platform: str
    notes: list[str] = Field(default_factory=list, description="What the target's preflight noted.")


class DisksResult(StageResult):
    artifacts: list[DiskArtifact]


class OsResult(StageResult):
    artifacts: list[DiskArtifact] = Field(description="The disks after remediation (may be new artifacts).")
    os_family: OsFamily = "unknown"
    bootable: bool = True
    patches_applied: int = 0
    findings: list[dict[str, Any]] = Field(default_factory=list)
    guest: dict[str, Any] | None = Field(
        default=None, description="Guest preparation: OS, findings and changes with their status (node only)."
    )
    guest_bytes_patched: int = Field(default=0, ge=0, description="Bytes the guest preparation wrote.")


class InstanceResult(StageResult):
    instance: Instance


class ValidationResult(StageResult):
    evidence: Evidence


class CleanupResult(StageResult):
    outcome: CleanupOutcome


class FlowError(_Model):
    """What a Catch stores: the ASL error name and its cause."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    Error: str
    Cause: str | None = None

    def message(self) -> str:
        """The cause as a person reads it (Step Functions wraps Lambda errors in JSON)."""
        cause = self.Cause or ""
        try:
            payload = json.loads(cause)
        except ValueError:
            return f"{self.Error}: {cause}" if cause else self.Error
        if isinstance(payload, dict) and "errorMessage" in payload:
            return f"{payload.get('errorType', self.Error)}: {payload['errorMessage']}"
        return f"{self.Error}: {cause}"


class MachineState(_Model):
    """One machine's branch of the flow."""

    run: RunSpec
    group: str
    machine: MachineRun
    disks: DisksResult | None = None
    os: OsResult | None = None
    instance: InstanceResult | None = None
    network: InstanceResult | None = None
    power: InstanceResult | None = None
    validation: ValidationResult | None = None
    error: FlowError | None = None
    cleanup: CleanupResult | None = None
    cleanup_error: FlowError | None = None

    def artifacts(self) -> list[DiskArtifact]:
        if self.os is not None:
            return self.os.artifacts
        return self.disks.artifacts if self.disks else []

    def latest_instance(self) -> Instance | None:
        for stage in (self.power, self.network, self.instance):
            if stage is not None:
                return stage.instance
        return None

    def resources(self) -> list[Resource]:
        """Everything this machine's states created, in creation order, each once."""
        found: list[Resource] = []
        seen: set[tuple[str, str]] = set()
        disk_stages = [self.disks.artifacts if self.disks else [], self.os.artifacts if self.os else []]
        instance = self.latest_instance()
        for r in [r for artifacts in disk_stages for a in artifacts for r in a.resources] + (
            instance.resources if instance else []
        ):
            if (r.type, r.id) not in seen:
                seen.add((r.type, r.id))
                found.append(r)
        return found


class RunState(_Model):
    """The top level of the recovery flow: its input plus what the states added."""

    run: RunSpec
    groups: list[GroupRun]
    notes: list[str] = Field(default_factory=list)
    validated: RunChecked | None = None
    results: list[list[MachineReport]] | None = None
    error: FlowError | None = None

    @classmethod
    def of(cls, flow: FlowInput) -> RunState:
        return cls(run=flow.run, groups=flow.groups, notes=flow.notes)


class CleanupMachineInput(_Model):
    target: TargetConfig
    machine: CleanupTarget


class CleanupTarget(_Model):
    machine_id: str
    resources: list[Resource]


class CleanupMachineOutput(_Model):
    machine_id: str
    outcome: CleanupOutcome


class CleanupRunState(_Model):
    target: TargetConfig
    machines: list[CleanupTarget]
    results: list[CleanupMachineOutput] | None = None
