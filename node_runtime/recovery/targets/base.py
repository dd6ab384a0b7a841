"""Capabilities of a recovery target, and the records they exchange.

A target is four small capabilities plus cleanup, each a Protocol, so a platform can
implement them with whatever it has (QEMU processes, EC2, Azure compute):

* :class:`DiskTarget` reconstructs a recovery point into a platform disk
  (image file, EBS snapshot, page-blob VHD) and can read and patch it (OS preparation).
* :class:`InstanceLauncher` defines a machine over those disks (not yet running) and
  powers it on.
* :class:`NetworkMapper` gives the machine its NICs from the plan's network mapping.
* :class:`BootValidator` proves the guest booted, with evidence.
* :class:`Cleaner` deletes one :class:`Resource`.
* :class:`Preflight` (optional) refuses, before anything is created, what the platform
  would refuse later (a VM size or subnet that does not exist).

Contract shared by all of them:

* Everything a call creates is listed in the ``resources`` it returns, *before* the
  next thing is created, in creation order, so that a failure half way leaves a list a
  cleaner can act on. A call that fails after creating something must delete it itself
  (best effort) or raise :class:`~shared.errors.TargetError` naming it in ``resources``.
* :meth:`Cleaner.delete` is idempotent: deleting something already gone returns
  ``False``, never raises for "not found". Cleanup runs in reverse creation order.
* Platform errors are raised as :class:`~shared.errors.TargetError` with the cause
  chained; invalid requests (unknown instance type, bad mapping) as
  :class:`~shared.errors.InvalidInputError`.
* Every resource is tagged (where the platform has tags) with ``lifeboat:run`` and
  ``lifeboat:machine`` from :attr:`InstanceSpec.tags`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.domain.recovery import (
    DiskArtifact,
    Evidence,
    Instance,
    InstanceSpec,
    NicSpec,
    Resource,
    ValidationSpec,
)
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

Progress = Callable[[int, int], None]

__all__ = [
    "BootValidator", "CapabilitySet", "Cleaner", "DiskArtifact", "DiskTarget", "Evidence", "Instance", "InstanceLauncher",
    "InstanceSpec", "MachineCheck", "NetworkMapper", "NicSpec", "Preflight", "Resource", "Target", "ValidationSpec",
]  # fmt: skip


class DiskTarget(Protocol):
    kind: str

    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        """Reconstruct ``point`` into a new platform disk; every block verified."""
        ...

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        """Bytes of the reconstructed disk (short only at its end)."""
        ...

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """Apply OS-preparation patches (offset, bytes); may return a new artifact (e.g. a child snapshot)."""
        ...


class InstanceLauncher(Protocol):
    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Define the machine over ``disks`` (boot disk first); it does not run yet."""
        ...

    def power_on(self, instance: Instance) -> Instance: ...


class NetworkMapper(Protocol):
    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance: ...


class BootValidator(Protocol):
    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence: ...


@dataclass(frozen=True)
class MachineCheck:
    """What a preflight looks at for one machine of a run."""

    machine_id: str
    instance_type: str | None
    nics: list[NicSpec]
    disks: int


class Preflight(Protocol):
    def check(self, machines: list[MachineCheck]) -> list[str]:
        """Raise :class:`~shared.errors.InvalidInputError` naming every machine the platform would
        refuse (no I/O that creates anything); notes for the report otherwise."""
        ...


class Cleaner(Protocol):
    def delete(self, resource: Resource) -> bool:
        """Delete ``resource``; ``False`` if it was already gone."""
        ...


@dataclass(frozen=True)
class Target:
    """One platform's capabilities, as the composition root assembled them."""

    kind: str
    disks: DiskTarget
    launcher: InstanceLauncher
    networks: NetworkMapper
    validator: BootValidator
    cleaner: Cleaner
    preflight: Preflight | None = None


class CapabilitySet:
    """A platform's five capability objects, also reachable as one object (tests and tools call
    ``write_disk``, ``power_on``, ``delete`` ... on it); :meth:`target` is the :class:`Target`."""

    kind: str
    disks: DiskTarget
    launcher: InstanceLauncher
    networks: NetworkMapper
    validator: BootValidator
    cleaner: Cleaner

    def __getattr__(self, name: str) -> Any:
        for capability in ("disks", "launcher", "networks", "validator", "cleaner"):
            found = getattr(self.__dict__.get(capability), name, None)
            if found is not None and not name.startswith("_"):
                return found
        raise AttributeError(f"{type(self).__name__} has no {name!r}")

    def target(self) -> Target:
        return Target(kind=self.kind, disks=self.disks, launcher=self.launcher, networks=self.networks,
                      validator=self.validator, cleaner=self.cleaner)  # fmt: skip
