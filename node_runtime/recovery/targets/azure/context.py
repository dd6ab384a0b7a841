"""What the Azure target's capabilities share: configuration, ARM names, tags, polling, undo."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from node_runtime.recovery.targets.azure.compute import AzureCompute
from node_runtime.recovery.targets.base import InstanceSpec, Resource
from shared.errors import InvalidInputError, LifeboatError, TargetError

log = logging.getLogger("lifeboat.recovery.azure")

KIND = "azure"
DEFAULT_VM_SIZE = "Standard_B2s"
RUN_TAG = "lifeboat:run"
MACHINE_TAG = "lifeboat:machine"

VM_SIZE = re.compile(r"^(Standard|Basic)_[A-Za-z0-9_]+$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def arm_name(parts: Iterable[str], limit: int) -> str:
    """``parts`` joined by ``-`` as a valid ARM name of at most ``limit`` characters.

    Characters ARM refuses become ``-``; a name that had to be changed or cut gets a
    hash of the original appended, so different inputs never collide.
    """
    raw = "-".join(parts)
    name = _NOT_IN_NAME.sub("-", raw).strip("-.")
    if name == raw and len(name) <= limit:
        return name
    digest = hashlib.blake2b(raw.encode(), digest_size=4).hexdigest()
    return f"{name[: limit - len(digest) - 1].rstrip('-.')}-{digest}"


def short_hash(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=4).hexdigest()


def fields_of(exc: BaseException) -> dict[str, Any]:
    return dict(exc.fields) if isinstance(exc, LifeboatError) else {}


def is_transient(exc: BaseException) -> bool:
    return bool(fields_of(exc).get("transient"))


def merge(resources: list[Resource], *new: Resource) -> list[Resource]:
    """``resources`` plus each of ``new`` not listed yet (a retried step, or a machine's two NICs in
    one isolated test network, lists a resource once)."""
    out = list(resources)
    seen = {(r.type, r.id.lower()) for r in resources}
    for r in new:
        if (r.type, r.id.lower()) not in seen:
            seen.add((r.type, r.id.lower()))
            out.append(r)
    return out


@dataclass
class AzureContext:
    """One recovery target on Azure: the staging container, the compute port and options.

    ``container`` is the ``ContainerClient`` of the staging container (a general-purpose
    v2 account in ``location``, the account the compute adapter imports from);
    ``compute`` the :class:`AzureCompute` port. ``isolated_subnets``, when given, are the
    only subnets a plan may map as a test network.
    """

    container: Any
    compute: AzureCompute
    location: str
    resource_group: str
    default_vm_size: str = DEFAULT_VM_SIZE
    os_type: str = "Linux"
    isolated_subnets: Collection[str] = ()
    write_threads: int = 8
    read_threads: int = 4
    power_on_timeout: float = 900.0
    poll_interval: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    delete: Callable[[Resource], bool] = field(default=lambda r: False, repr=False)  # set by the cleaner

    def __post_init__(self) -> None:
        if not VM_SIZE.match(self.default_vm_size):
            raise InvalidInputError(
                f"{self.default_vm_size!r} is not an Azure VM size", vm_size=self.default_vm_size
            )
        self.isolated_subnets = frozenset(s.lower() for s in self.isolated_subnets)

    def tags(self, spec: InstanceSpec) -> dict[str, str]:
        tags = dict(spec.tags)
        for key, value in ((RUN_TAG, spec.run_id), (MACHINE_TAG, spec.machine_id)):
            if tags.setdefault(key, value) != value:
                raise InvalidInputError(f"tag {key}={tags[key]!r} contradicts the spec ({value!r})", tag=key)
        return tags

    @staticmethod
    def base_name(spec: InstanceSpec) -> str:
        return arm_name(["lb", spec.name[:40]], 48) + f"-{short_hash(spec.run_id, spec.machine_id)}"

    def poll(self, read: Callable[[], Any], deadline: float, done: Callable[[Any], bool]) -> Any:
        """``read()`` until ``done`` or ``deadline``; transient errors are retried until then."""
        while True:
            try:
                value = read()
            except Exception as exc:
                if not is_transient(exc) or self.clock() >= deadline:
                    raise
                log.warning("transient error while polling Azure: %s", exc)
            else:
                if done(value) or self.clock() >= deadline:
                    return value
            self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))

    def fail(self, message: str, exc: Exception, created: list[Resource]) -> NoReturn:
        """Undo ``created`` (reverse order, best effort), then raise naming what is left."""
        leftovers: list[Resource] = []
        for resource in reversed(created):
            try:
                self.delete(resource)
            except Exception:
                log.warning("cannot delete %s %s after a failure", resource.type, resource.id, exc_info=True)
                leftovers.insert(0, resource)
        fields = fields_of(exc)
        fields["resources"] = [r.model_dump() for r in leftovers]
        text = f"{message}: {exc}"
        if isinstance(exc, InvalidInputError) and not leftovers:
            raise InvalidInputError(text, **fields) from exc
        raise TargetError(text, **fields) from exc
