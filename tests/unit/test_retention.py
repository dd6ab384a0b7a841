"""Unit tests for shared.policies.retention (hand-worked examples plus one property)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.policies.retention import (
    Decision,
    PointRef,
    RetentionPolicy,
    apply_retention,
    parse_duration,
)

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    """'2026-11-24T17:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def kept(decisions: list[Decision]) -> dict[str, list[str]]:
    return {d.point_id: d.reasons for d in decisions if d.keep}


def forgotten(decisions: list[Decision]) -> list[str]:
    return [d.point_id for d in decisions if not d.keep]


# --- bucket rules ------------------------------------------------------------------------------
def test_thirty_daily_points_keep_daily_7_keeps_exactly_the_7_newest_days() -> None:
    first = at("2026-10-26T12:00")
    points = [PointRef(id=f"p{i:02d}", time=first + timedelta(days=i)) for i in range(30)]

    decisions = apply_retention(points, RetentionPolicy(keep_daily=7), NOW)

    assert [d.point_id for d in decisions] == [f"p{i:02d}" for i in range(29, -1, -1)]
    assert kept(decisions) == {
        "p29": ["daily 2026-11-24"],
        "p28": ["daily 2026-11-23"],
        "p27": ["daily 2026-11-22"],
        "p26": ["daily 2026-11-21"],
        "p25": ["daily 2026-11-20"],
        "p24": ["daily 2026-11-19"],
        "p23": ["daily 2026-11-18"],
    }
    assert forgotten(decisions) == [f"p{i:02d}" for i in range(22, -1, -1)]
    assert all(d.reasons == ["not matched by any rule"] for d in decisions if not d.keep)


def test_several_points_in_one_day_keep_only_the_newest_of_that_day() -> None:
    points = [
        PointRef(id="d24-01", time=at("2026-11-24T01:00")),
        PointRef(id="d24-17", time=at("2026-11-24T17:00")),
        PointRef(id="d24-09", time=at("2026-11-24T09:00")),
        PointRef(id="d23-08", time=at("2026-11-23T08:00")),
        PointRef(id="d23-20", time=at("2026-11-23T20:00")),
        PointRef(id="d22-23", time=at("2026-11-22T23:59")),
    ]

    decisions = apply_retention(points, RetentionPolicy(keep_daily=2), NOW)

    assert [d.point_id for d in decisions] == ["d24-17", "d24-09", "d24-01", "d23-20", "d23-08", "d22-23"]
    assert kept(decisions) == {"d24-17": ["daily 2026-11-24"], "d23-20": ["daily 2026-11-23"]}


def test_weekly_uses_iso_weeks_across_year_boundaries() -> None:
    # 2026 has 53 ISO weeks: 2026-W01 starts Mon 2025-12-29, 2026-W53 ends Sun 2027-01-03.
    points = [
        PointRef(id="2027-01-05", time=at("2027-01-05T10:00")),  # 2027-W01
        PointRef(id="2027-01-03", time=at("2027-01-03T10:00")),  # 2026-W53
        PointRef(id="2026-12-31", time=at("2026-12-31T10:00")),  # 2026-W53
        PointRef(id="2026-12-28", time=at("2026-12-28T10:00")),  # 2026-W53
        PointRef(id="2026-12-27", time=at("2026-12-27T10:00")),  # 2026-W52
        PointRef(id="2026-01-01", time=at("2026-01-01T10:00")),  # 2026-W01
        PointRef(id="2025-12-29", time=at("2025-12-29T10:00")),  # 2026-W01
        PointRef(id="2025-12-28", time=at("2025-12-28T10:00")),  # 2025-W52, beyond 4 weeks
    ]

    decisions = apply_retention(points, RetentionPolicy(keep_weekly=4), at("2027-01-06T00:00"))

    assert kept(decisions) == {
        "2027-01-05": ["weekly 2027-W01"],
        "2027-01-03": ["weekly 2026-W53"],
        "2026-12-27": ["weekly 2026-W52"],
        "2026-01-01": ["weekly 2026-W01"],
    }
    assert forgotten(decisions) == ["2026-12-31", "2026-12-28", "2025-12-29", "2025-12-28"]


def test_hourly_monthly_yearly_labels() -> None:
    points = [
        PointRef(id="a", time=at("2026-11-24T17:59")),
        PointRef(id="b", time=at("2026-11-24T17:00")),
        PointRef(id="c", time=at("2026-11-24T16:30")),
        PointRef(id="d", time=at("2026-02-01T00:00")),
        PointRef(id="e", time=at("2025-12-31T23:59")),
        PointRef(id="f", time=at("2024-06-01T00:00")),
    ]
    policy = RetentionPolicy(keep_hourly=2, keep_monthly=2, keep_yearly=5)

    assert kept(apply_retention(points, policy, NOW)) == {
        "a": ["hourly 2026-11-24T17", "monthly 2026-11", "yearly 2026"],
        "c": ["hourly 2026-11-24T16"],
        "d": ["monthly 2026-02"],
        "e": ["yearly 2025"],
        "f": ["yearly 2024"],
    }


def test_combined_rules_keep_the_union_and_list_every_reason_in_rule_order() -> None:
    points = [
        PointRef(id="a", time=at("2026-11-24T17:00")),
        PointRef(id="b", time=at("2026-11-24T09:00")),
        PointRef(id="c", time=at("2026-11-23T20:00")),
        PointRef(id="d", time=at("2026-11-22T10:00")),
        PointRef(id="e", time=at("2026-11-21T10:00")),
        PointRef(id="f", time=at("2026-10-31T23:00")),
        PointRef(id="g", time=at("2026-10-15T12:00")),
    ]
    policy = RetentionPolicy(
        keep_last=2,
        keep_hourly=1,
        keep_daily=3,
        keep_weekly=1,
        keep_monthly=2,
        keep_yearly=1,
        keep_within=timedelta(hours=36),  # cutoff 2026-11-23T06:00
    )

    decisions = apply_retention(points, policy, NOW)

    assert kept(decisions) == {
        "a": [
            "last 1",
            "hourly 2026-11-24T17",
            "daily 2026-11-24",
            "weekly 2026-W48",
            "monthly 2026-11",
            "yearly 2026",
            "within 36h",
        ],
        "b": ["last 2", "within 36h"],
        "c": ["daily 2026-11-23", "within 36h"],
        "d": ["daily 2026-11-22"],
        "f": ["monthly 2026-10"],
    }
    assert forgotten(decisions) == ["e", "g"]


def test_counts_larger_than_the_history_keep_everything_once() -> None:
    points = [PointRef(id=str(i), time=NOW - timedelta(days=i)) for i in range(3)]
    decisions = apply_retention(points, RetentionPolicy(keep_last=10, keep_daily=10), NOW)
    assert kept(decisions) == {
        "0": ["last 1", "daily 2026-11-24"],
        "1": ["last 2", "daily 2026-11-23"],
        "2": ["last 3", "daily 2026-11-22"],
    }


# --- keep_within, future points, the latest-point invariant -----------------------------------
def test_keep_within_is_inclusive_at_the_cutoff() -> None:
    points = [
        PointRef(id="1h", time=NOW - timedelta(hours=1)),
        PointRef(id="7d", time=NOW - timedelta(days=7)),
        PointRef(id="7d+1s", time=NOW - timedelta(days=7, seconds=1)),
        PointRef(id="30d", time=NOW - timedelta(days=30)),
    ]
    decisions = apply_retention(points, RetentionPolicy(keep_within=parse_duration("7d")), NOW)
    assert kept(decisions) == {"1h": ["within 7d"], "7d": ["within 7d"]}
    assert forgotten(decisions) == ["7d+1s", "30d"]


def test_newest_point_is_never_forgotten_when_a_rule_is_set() -> None:
    points = [
        PointRef(id="old", time=NOW - timedelta(days=30)),
        PointRef(id="older", time=NOW - timedelta(days=40)),
    ]
    decisions = apply_retention(points, RetentionPolicy(keep_within=timedelta(days=7)), NOW)
    assert kept(decisions) == {"old": ["latest point"]}
    assert forgotten(decisions) == ["older"]

    decisions = apply_retention(points, RetentionPolicy(keep_last=0, keep_daily=0, keep_hourly=1), NOW)
    assert kept(decisions) == {"old": ["hourly 2026-10-25T18"]}


def test_points_newer_than_now_are_kept_and_use_no_rule_slot() -> None:
    points = [
        PointRef(id="future", time=NOW + timedelta(hours=1)),
        PointRef(id="now", time=NOW),
        PointRef(id="earlier", time=NOW - timedelta(hours=2)),
    ]
    decisions = apply_retention(points, RetentionPolicy(keep_last=1, keep_daily=1), NOW)
    assert [d.point_id for d in decisions] == ["future", "now", "earlier"]
    assert kept(decisions) == {"future": ["newer than now"], "now": ["last 1", "daily 2026-11-24"]}


def test_empty_policy_keeps_everything_with_reason_no_policy() -> None:
    points = [PointRef(id=str(i), time=NOW - timedelta(days=i)) for i in range(5)]
    for policy in (RetentionPolicy(), RetentionPolicy(keep_last=0, keep_daily=0, keep_within=timedelta(0))):
        assert policy.is_empty()
        decisions = apply_retention(points, policy, NOW)
        assert [d.point_id for d in decisions] == ["0", "1", "2", "3", "4"]
        assert all(d.keep and d.reasons == ["no policy"] for d in decisions)


@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(keep_last=1),
        RetentionPolicy(keep_yearly=3),
        RetentionPolicy(keep_within=timedelta(seconds=1)),
    ],
)
def test_policy_with_any_active_rule_is_not_empty(policy: RetentionPolicy) -> None:
    assert not policy.is_empty()


def test_no_points_gives_no_decisions() -> None:
    assert apply_retention([], RetentionPolicy(keep_last=3), NOW) == []


# --- determinism and input checks ----------------------------------------------------------
def test_ties_in_time_are_broken_by_id_and_input_order_does_not_matter() -> None:
    points = [PointRef(id=i, time=NOW - timedelta(hours=1)) for i in ("b", "a", "c")]
    points.append(PointRef(id="z-older", time=NOW - timedelta(hours=2)))
    expected = apply_retention(points, RetentionPolicy(keep_last=1, keep_hourly=2), NOW)
    assert [d.point_id for d in expected] == ["c", "b", "a", "z-older"]
    assert kept(expected) == {"c": ["last 1", "hourly 2026-11-24T17"], "z-older": ["hourly 2026-11-24T16"]}
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(points)
        assert apply_retention(points, RetentionPolicy(keep_last=1, keep_hourly=2), NOW) == expected


def test_duplicate_ids_are_rejected() -> None:
    points = [PointRef(id="x", time=NOW), PointRef(id="x", time=NOW - timedelta(days=1))]
    with pytest.raises(ValueError, match="duplicate point id 'x'"):
        apply_retention(points, RetentionPolicy(keep_last=1), NOW)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        PointRef(id="p", time=datetime(2026, 11, 24, 12, 0))
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        apply_retention([], RetentionPolicy(keep_last=1), datetime(2026, 11, 24, 12, 0))


def test_aware_non_utc_times_are_converted_to_utc_before_bucketing() -> None:
    plus_two = timezone(timedelta(hours=2))
    point = PointRef(id="p", time=datetime(2026, 11, 25, 1, 0, tzinfo=plus_two))
    assert point.time == at("2026-11-24T23:00")
    assert point.time.tzinfo is UTC
    decisions = apply_retention(
        [point], RetentionPolicy(keep_daily=1), datetime(2026, 11, 25, 3, tzinfo=plus_two)
    )
    assert kept(decisions) == {"p": ["daily 2026-11-24"]}


@pytest.mark.parametrize(
    "field", ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]
)
def test_negative_counts_are_rejected_with_a_clear_message(field: str) -> None:
    with pytest.raises(ValidationError, match=rf"{field} must be >= 0, got -1"):
        RetentionPolicy.model_validate({field: -1})


def test_policy_rejects_negative_within_bools_strings_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="keep_within must not be negative"):
        RetentionPolicy(keep_within=timedelta(hours=-1))
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate({"keep_last": True})
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate({"keep_last": "3"})
    with pytest.raises(ValidationError, match="keep_forever"):
        RetentionPolicy.model_validate({"keep_forever": 1})


def test_models_are_frozen() -> None:
    policy = RetentionPolicy(keep_last=1)
    with pytest.raises(ValidationError):
        setattr(policy, "keep_last", 2)  # noqa: B010 - the assignment is the point
    with pytest.raises(ValidationError):
        setattr(PointRef(id="p", time=NOW), "id", "q")  # noqa: B010


def test_policy_round_trips_through_json() -> None:
    policy = RetentionPolicy(keep_daily=7, keep_within=timedelta(days=2, hours=3))
    assert RetentionPolicy.model_validate_json(policy.model_dump_json()) == policy


# --- parse_duration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("1w2d12h", timedelta(days=9, hours=12)),
        ("1d0h", timedelta(days=1)),
        ("007d", timedelta(days=7)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "d",
        "7",
        "0d",
        "0w0d0h",
        "1y2m",
        "7D",
        " 7d",
        "7d ",
        "7 d",
        "-1d",
        "+1d",
        "1.5d",
        "1d1w",
        "1d1d",
        "7d\n",
        "\u0661d",
        "99999999999w",
    ],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


# --- property -------------------------------------------------------------------------------------
_times = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
_counts = st.none() | st.integers(min_value=0, max_value=6)
_policies = st.builds(
    RetentionPolicy,
    keep_last=_counts,
    keep_hourly=_counts,
    keep_daily=_counts,
    keep_weekly=_counts,
    keep_monthly=_counts,
    keep_yearly=_counts,
    keep_within=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
)
_points = st.lists(
    st.builds(
        PointRef, id=st.text(min_size=1, max_size=4), time=_times | st.sampled_from([at("2026-01-01")])
    ),
    max_size=40,
    unique_by=lambda p: p.id,
)


@settings(max_examples=300, deadline=None)
@given(points=_points, policy=_policies, now=_times)
def test_property_bounded_keeps_newest_and_permutes_ids(
    points: list[PointRef], policy: RetentionPolicy, now: datetime
) -> None:
    decisions = apply_retention(points, policy, now)

    assert sorted(d.point_id for d in decisions) == sorted(p.id for p in points)
    assert all(d.reasons for d in decisions)
    n_kept = sum(d.keep for d in decisions)
    if policy.is_empty():
        assert n_kept == len(points)
        return
    if points:
        assert decisions[0].keep
        newest = max(points, key=lambda p: (p.time, p.id))
        assert decisions[0].point_id == newest.id
    counts = sum(
        getattr(policy, f) or 0
        for f in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
    )
    window = policy.keep_within or timedelta(0)
    recent = sum(p.time > now or (window > timedelta(0) and p.time >= now - window) for p in points)
    assert n_kept <= max(min(1, len(points)), counts + recent)
