"""Retention: which recovery points to keep, with reasons the UI can show.

A pure function in the style of restic's ``forget`` policy. It reads no clock and
touches no repository: callers pass the points, the policy and ``now``, and get one
:class:`Decision` per point. Deleting the forgotten points is someone else's job.

Rules (each one on its own; a point is kept if *any* rule keeps it):

- ``keep_last=N``: the N newest points.
- ``keep_hourly`` / ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` /
  ``keep_yearly`` ``=N``: walking from newest to oldest, keep the newest point of each
  distinct bucket (hour, day, ISO week, month, year) until N buckets have been used.
  Buckets are computed in UTC; weeks are ISO 8601 weeks (``2026-W01`` may start in
  December 2025).
- ``keep_within=D``: every point with ``time >= now - D``.

Invariants (MUST):

- Every input point gets exactly one decision; ids are unique.
- Points newer than ``now`` (clock skew) are always kept, with reason
  ``"newer than now"``, and are set aside before the rules run, so they never use up a
  ``keep_last`` or bucket slot that an older point would otherwise have had.
- If the policy is not empty, the newest point is never forgotten: retention never
  deletes the latest point. If no rule happens to select it, it is kept with reason
  ``"latest point"``.
- An empty policy keeps everything, each with reason ``"no policy"``. This is the
  safe default for the function; commands such as ``forget`` SHOULD refuse an empty
  policy up front (see :meth:`RetentionPolicy.is_empty`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "Decision",
    "PointRef",
    "RetentionPolicy",
    "apply_retention",
    "parse_duration",
]

REASON_NO_POLICY = "no policy"
REASON_FUTURE = "newer than now"
REASON_LATEST = "latest point"
REASON_FORGOTTEN = "not matched by any rule"

_COUNT_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def _require_utc(value: datetime, name: str) -> datetime:
    """Return ``value`` converted to UTC; naive datetimes are a caller bug."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive datetime {value.isoformat()}")
    return value.astimezone(UTC)


class RetentionPolicy(BaseModel):
    """What to keep. ``None`` and ``0`` both mean "rule off" (as in restic).

    Counts must be non-negative integers (booleans and numeric strings are refused);
    ``keep_within`` must not be negative.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_last: int | None = Field(default=None, strict=True)
    keep_hourly: int | None = Field(default=None, strict=True)
    keep_daily: int | None = Field(default=None, strict=True)
    keep_weekly: int | None = Field(default=None, strict=True)
    keep_monthly: int | None = Field(default=None, strict=True)
    keep_yearly: int | None = Field(default=None, strict=True)
    keep_within: timedelta | None = None

    @field_validator(*_COUNT_FIELDS)
    @classmethod
    def _count_not_negative(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 0:
            raise ValueError(
                f"{info.field_name} must be >= 0, got {value}; use None (or 0) to turn the rule off"
            )
        return value

    @field_validator("keep_within")
    @classmethod
    def _within_not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError(f"keep_within must not be negative, got {value}")
        return value

    def is_empty(self) -> bool:
        """True when no rule is active (every count is None or 0, no positive ``keep_within``).

        An empty policy would keep everything, which is almost certainly not what a
        user running ``forget`` meant; callers SHOULD reject it with a clear message.
        """
        counts_off = all(not getattr(self, name) for name in _COUNT_FIELDS)
        return counts_off and not self.keep_within


class PointRef(BaseModel):
    """The only facts retention needs about a recovery point.

    ``time`` MUST be timezone-aware; aware values in other zones are converted to UTC
    (the instant is kept), naive ones are rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    time: datetime

    @field_validator("time")
    @classmethod
    def _time_is_utc(cls, value: datetime) -> datetime:
        return _require_utc(value, "PointRef.time")


class Decision(BaseModel):
    """The verdict for one point.

    ``reasons`` is never empty. Kept points list every rule that selected them, in rule
    order (last, hourly, daily, weekly, monthly, yearly, within), e.g.
    ``["last 1", "daily 2026-11-24", "weekly 2026-W48"]``; forgotten points have
    exactly ``["not matched by any rule"]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    point_id: str
    keep: bool
    reasons: list[str]


def _hour(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H")


def _day(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _iso_week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(t: datetime) -> str:
    return t.strftime("%Y-%m")


def _year(t: datetime) -> str:
    return f"{t.year:04d}"


#: (policy field, reason prefix, bucket label of a UTC time), in reason order.
_BUCKET_RULES: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", _hour),
    ("keep_daily", "daily", _day),
    ("keep_weekly", "weekly", _iso_week),
    ("keep_monthly", "monthly", _month),
    ("keep_yearly", "yearly", _year),
)


def apply_retention(points: Sequence[PointRef], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """Decide, for each point, whether ``policy`` keeps it at time ``now``.

    Returns one decision per point, newest first. Points are ordered by ``(time, id)``
    descending, so among points with the same time the greater id counts as newer;
    the output is therefore independent of the input order.

    Raises ``ValueError`` if ``now`` is naive or two points share an id.
    """
    now = _require_utc(now, "now")
    seen: set[str] = set()
    for p in points:
        if p.id in seen:
            raise ValueError(f"duplicate point id {p.id!r}")
        seen.add(p.id)

    ordered = sorted(points, key=lambda p: (p.time, p.id), reverse=True)
    if policy.is_empty():
        return [Decision(point_id=p.id, keep=True, reasons=[REASON_NO_POLICY]) for p in ordered]

    reasons: dict[str, list[str]] = {p.id: [] for p in ordered}
    future = [p for p in ordered if p.time > now]
    past = [p for p in ordered if p.time <= now]
    for p in future:
        reasons[p.id].append(REASON_FUTURE)

    for rank, p in enumerate(past[: policy.keep_last or 0], start=1):
        reasons[p.id].append(f"last {rank}")

    for field, prefix, bucket_of in _BUCKET_RULES:
        budget: int = getattr(policy, field) or 0
        previous: str | None = None
        for p in past:
            if budget == 0:
                break
            bucket = bucket_of(p.time)
            if bucket != previous:  # newest-first walk: first point seen in a bucket is its newest
                reasons[p.id].append(f"{prefix} {bucket}")
                previous = bucket
                budget -= 1

    if policy.keep_within:
        try:
            cutoff = now - policy.keep_within
        except OverflowError:  # a window reaching past year 1 keeps everything
            cutoff = datetime.min.replace(tzinfo=UTC)
        label = f"within {_format_duration(policy.keep_within)}"
        for p in past:
            if p.time < cutoff:
                break
            reasons[p.id].append(label)

    if ordered and not reasons[ordered[0].id]:
        reasons[ordered[0].id].append(REASON_LATEST)

    return [
        Decision(point_id=p.id, keep=True, reasons=reasons[p.id])
        if reasons[p.id]
        else Decision(point_id=p.id, keep=False, reasons=[REASON_FORGOTTEN])
        for p in ordered
    ]


_DURATION_RE = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?")


def parse_duration(text: str) -> timedelta:
    """Parse a ``keep_within`` duration such as ``"7d"``, ``"36h"``, ``"2w"`` or ``"1w2d12h"``.

    Grammar: one or more of ``<digits>w``, ``<digits>d``, ``<digits>h``, each at most
    once and in that order, lowercase, no spaces or signs. Months and years are not
    accepted because their length varies. The result MUST be positive.

    Raises ``ValueError`` on anything else, including ``""``, ``"0d"``, ``"1y2m"``,
    ``"7 d"``, ``"-1d"`` and ``"1.5d"``.
    """
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. '7d', '36h', '2w' or '1w2d12h'")
    weeks, days, hours = (int(g) if g else 0 for g in match.groups())
    try:
        value = timedelta(weeks=weeks, days=days, hours=hours)
    except OverflowError as exc:
        raise ValueError(f"invalid duration {text!r}: too large") from exc
    if value <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return value


def _format_duration(value: timedelta) -> str:
    """Short label for reasons: whole days as ``"7d"``, whole hours as ``"36h"``, else seconds."""
    for unit, suffix in ((timedelta(days=1), "d"), (timedelta(hours=1), "h"), (timedelta(seconds=1), "s")):
        if value % unit == timedelta(0):
            return f"{value // unit}{suffix}"
    return f"{value.total_seconds()}s"
