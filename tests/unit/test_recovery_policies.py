"""Pure recovery policies: point choice, boot order, network mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.plans import BootGroup, NetworkMapping, ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import RecoveryMode
from shared.policies.recovery import UNGROUPED, MappingRefused, boot_sequence, choose_points, map_nics

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def point(machine: str, run: str, minutes: int) -> RecoveryPoint:
    return RecoveryPoint(id=f"{run}-{machine}", plan_id="p", machine_id=machine, run_id=run,
                         time=T0 + timedelta(minutes=minutes), site_id="s",
                         disks=[DiskPoint(disk_id=f"{machine}-d", point_id="x", disk_size=1)])  # fmt: skip


def plan(**kw: object) -> ProtectionPlan:
    machines = [ProtectedMachine(machine_id=m, disks=[ProtectedDisk(disk_id=f"{m}-d", source="/x")],
                                 networks=["lan", "mgmt"], private_ip="10.0.0.9" if m == "a" else None)
                for m in ("a", "b", "c")]  # fmt: skip
    args: dict = {"id": "p", "name": "p", "source_site_id": "s", "target_site_id": "t", "machines": machines,
                  "network_mapping": [NetworkMapping(source_network="lan", target_network="prod", test_network="bubble",
                                                     security_groups=["sg1"]),
                                      NetworkMapping(source_network="mgmt", target_network="prod-mgmt")]}  # fmt: skip
    args.update(kw)
    return ProtectionPlan(**args)


def test_the_newest_run_covering_every_machine_wins_over_newer_partial_runs() -> None:
    points = [point(m, "r1", 0) for m in "ab"] + [point("a", "r2", 10)]  # r2 missed b
    choice = choose_points(points, ["a", "b"], None)
    assert choice.consistent and not choice.missing
    assert {p.run_id for p in choice.selected.values()} == {"r1"}
    assert "run r1" in choice.reasons[0] and "covers all 2 machines" in choice.reasons[0]


def test_a_chosen_time_excludes_later_points() -> None:
    points = [point(m, r, t) for m in "ab" for r, t in (("r1", 0), ("r2", 10), ("r3", 20))]
    choice = choose_points(points, ["a", "b"], T0 + timedelta(minutes=15))
    assert {p.run_id for p in choice.selected.values()} == {"r2"}
    exact = choose_points(points, ["a", "b"], T0 + timedelta(minutes=20))
    assert {p.run_id for p in exact.selected.values()} == {"r3"}  # "at or before" includes the moment


def test_without_a_covering_run_each_machine_gets_its_newest_and_the_reasons_say_so() -> None:
    points = [point("a", "r1", 0), point("b", "r2", 5), point("a", "r3", 9)]
    choice = choose_points(points, ["a", "b", "c"], None)
    assert not choice.consistent
    assert choice.selected["a"].run_id == "r3" and choice.selected["b"].run_id == "r2"
    assert choice.missing == ["c"]
    assert any("no single run" in r for r in choice.reasons) and any(
        r.startswith("c: no recovery point") for r in choice.reasons
    )


def test_boot_sequence_keeps_group_order_and_puts_the_rest_last() -> None:
    steps = boot_sequence(plan(boot_groups=[BootGroup(name="db", machines=["b"], delay_seconds=0),
                                            BootGroup(name="app", machines=["a"], delay_seconds=30)]))  # fmt: skip
    assert [(s.name, s.order, s.delay_seconds, s.machine_ids) for s in steps] == [
        ("db", 0, 0, ["b"]),
        ("app", 1, 30, ["a"]),
        (UNGROUPED, 2, 0, ["c"]),
    ]
    assert [s.machine_ids for s in boot_sequence(plan())] == [["a", "b", "c"]]


def test_nics_are_mapped_in_order_and_a_test_never_reaches_production() -> None:
    p = plan()
    failover = map_nics(p, p.machines[0], RecoveryMode.FAILOVER, platform_isolates=False)
    assert [(n.network, n.private_ip, n.isolated, n.security_groups) for n in failover] == [
        ("prod", "10.0.0.9", False, ["sg1"]),
        ("prod-mgmt", None, False, []),
    ]
    with pytest.raises(MappingRefused, match="mgmt has no test network"):
        map_nics(p, p.machines[0], RecoveryMode.TEST, platform_isolates=False)
    isolated = map_nics(p, p.machines[0], RecoveryMode.TEST, platform_isolates=True)
    assert [(n.network, n.isolated) for n in isolated] == [("bubble", True), ("prod-mgmt", True)]


def test_the_plan_refuses_unmapped_or_doubly_mapped_networks() -> None:
    with pytest.raises(ValueError, match="no mapping"):
        plan(network_mapping=[NetworkMapping(source_network="lan", target_network="prod")])
    with pytest.raises(ValueError, match="mapped only once"):
        plan(network_mapping=[NetworkMapping(source_network="lan", target_network="x"),
                              NetworkMapping(source_network="lan", target_network="y"),
                              NetworkMapping(source_network="mgmt", target_network="z")])  # fmt: skip
