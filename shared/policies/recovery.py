"""Recovery policies: which points to recover, in which order, on which networks.

Pure functions: no clock, no I/O; inputs in, decisions with reasons out.

Point choice (:func:`choose_points`). A plan run makes one point per machine, so the
points of one run are crash-consistent across the plan. The choice is, in order:

1. Only points at or before ``at`` count (all points when ``at`` is None: "latest").
2. The newest run that has a point for *every* machine wins: the plan recovers as one
   consistent moment. Reason: ``run <id> at <time> covers all N machines``.
3. Otherwise each machine gets its own newest point, and the reasons say so
   (``no single run covers every machine``): a partial run (a machine failed) must not
   make the whole plan fall back to an old consistent moment silently.
4. A machine with no point at all is listed in ``missing``; the caller refuses to run.

Boot order (:func:`boot_sequence`): the plan's boot groups in their order, each with its
delay; machines in no group boot in a last group ``ungrouped`` (they depend on nobody,
and booting them last never breaks a dependency).

Network mapping (:func:`map_nics`): a machine's NICs in order, each mapped through the
plan's mapping. A test recovery uses the mapping's ``test_network``; without one it is
refused unless the platform isolates test machines by itself (local QEMU's restricted
user networking, a virtual network of the run's own on Azure: ``isolate_on_target``),
because a test must never reach production. The first NIC keeps the
machine's fixed ``private_ip`` (an isolated copy may reuse the production address).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.plans import ProtectedMachine, ProtectionPlan
from shared.domain.points import RecoveryPoint
from shared.domain.recovery import NicSpec, RecoveryMode

UNGROUPED = "ungrouped"


@dataclass(frozen=True)
class PointChoice:
    selected: dict[str, RecoveryPoint]
    missing: list[str]
    consistent: bool
    reasons: list[str] = field(default_factory=list)


def choose_points(
    points: Iterable[RecoveryPoint], machine_ids: list[str], at: datetime | None
) -> PointChoice:
    """Pick one point per machine (see the module docstring for the rules)."""
    wanted = set(machine_ids)
    usable = [p for p in points if p.machine_id in wanted and (at is None or p.time <= at)]
    runs: dict[str, dict[str, RecoveryPoint]] = defaultdict(dict)
    for p in usable:
        current = runs[p.run_id].get(p.machine_id)
        if current is None or p.time > current.time:
            runs[p.run_id][p.machine_id] = p
    complete = [r for r in runs.values() if set(r) == wanted]
    when = "latest" if at is None else f"at or before {at.isoformat()}"
    if complete:
        best = max(complete, key=lambda r: (max(p.time for p in r.values()), next(iter(r.values())).run_id))
        newest = max(p.time for p in best.values())
        run_id = next(iter(best.values())).run_id
        return PointChoice(
            selected=dict(best), missing=[], consistent=True,
            reasons=[f"{when}: run {run_id} at {newest.isoformat()} covers all {len(wanted)} machines"],
        )  # fmt: skip
    selected: dict[str, RecoveryPoint] = {}
    for p in usable:
        if p.machine_id not in selected or p.time > selected[p.machine_id].time:
            selected[p.machine_id] = p
    missing = [m for m in machine_ids if m not in selected]
    reasons = [f"{when}: no single run covers every machine; each machine recovers its newest point"]
    reasons += [f"{m}: run {p.run_id} at {p.time.isoformat()}" for m, p in sorted(selected.items())]
    reasons += [f"{m}: no recovery point {when}" for m in missing]
    return PointChoice(selected=selected, missing=missing, consistent=False, reasons=reasons)


@dataclass(frozen=True)
class BootStep:
    name: str
    order: int
    delay_seconds: int
    machine_ids: list[str]


def boot_sequence(plan: ProtectionPlan) -> list[BootStep]:
    """The plan's boot groups in order, then a last ``ungrouped`` group if any machine is in none."""
    steps = [BootStep(g.name, i, g.delay_seconds, list(g.machines)) for i, g in enumerate(plan.boot_groups)]
    grouped = {m for g in plan.boot_groups for m in g.machines}
    rest = [m.machine_id for m in plan.machines if m.machine_id not in grouped]
    if rest:
        steps.append(BootStep(UNGROUPED, len(steps), 0, rest))
    return steps


class MappingRefused(ValueError):
    """A network mapping that must not be used for this recovery (reason in the message)."""


def map_nics(
    plan: ProtectionPlan, machine: ProtectedMachine, mode: RecoveryMode, *, platform_isolates: bool
) -> list[NicSpec]:
    """The machine's NICs on the target; :class:`MappingRefused` if a test could reach production."""
    mapping = {m.source_network: m for m in plan.network_mapping}
    nics = []
    for i, source in enumerate(machine.networks):
        m = mapping[source]  # the plan validator guarantees every network is mapped
        test = mode is RecoveryMode.TEST
        if test and m.test_network is None and not platform_isolates:
            raise MappingRefused(
                f"network {source} has no test network: a test recovery of {machine.machine_id} "
                "would attach to production (set test_network in the plan's network mapping)"
            )
        nics.append(
            NicSpec(
                source_network=source,
                network=(m.test_network or m.target_network) if test else m.target_network,
                security_groups=list(m.security_groups),
                private_ip=machine.private_ip if i == 0 else None,
                isolated=test,
                isolate_on_target=test and m.test_network is None,
            )
        )
    return nics
