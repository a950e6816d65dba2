"""Weekly time windows: agents' shifts (排班) and shops' business hours.

A schedule is a list of windows like ``{days = "mon-fri", start = "09:00", end = "18:00"}`` in a
time zone; an ``end`` at or before ``start`` runs past midnight. An empty schedule means always.
The dispatcher asks :meth:`Schedule.next_change` so it can wake exactly at a shift boundary
instead of polling.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = 7 * 24 * 60

#: Per time zone, the last ``(ts // 60, minute of the week)`` computed: the local conversion is
#: the expensive part of :meth:`Schedule.is_open` and every schedule in a zone shares it, and
#: messages arrive many to a minute.
_LAST_MINUTE: dict[ZoneInfo, tuple[float, int]] = {}


def _parse_hhmm(value: str) -> int:
    try:
        hh, mm = value.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"expected HH:MM, got {value!r}") from None
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"expected a time between 00:00 and 24:00, got {value!r}")
    return h * 60 + m


def _parse_days(value: str) -> list[int]:
    days: list[int] = []
    for part in value.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"expected days like 'mon-fri' or 'sat,sun', got {value!r}")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        d = a
        while True:
            days.append(d)
            if d == b:
                break
            d = (d + 1) % 7
    return days


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    days: str = "mon-sun"
    start: str = "00:00"
    end: str = "24:00"

    def __post_init__(self) -> None:
        _parse_days(self.days)
        _parse_hhmm(self.start)
        _parse_hhmm(self.end)

    def intervals(self) -> list[tuple[int, int]]:
        """Minute-of-week half-open intervals, split at the week's end."""
        s, e = _parse_hhmm(self.start), _parse_hhmm(self.end)
        length = (e - s) if e > s else (e + 24 * 60 - s)
        out = []
        for d in _parse_days(self.days):
            a = d * 24 * 60 + s
            b = a + length
            if b <= WEEK:
                out.append((a, b))
            else:
                out.extend([(a, WEEK), (0, b - WEEK)])
        return out


class Schedule:
    """A set of weekly windows in one time zone."""

    def __init__(self, windows: tuple[Window, ...] | list[Window], timezone: str) -> None:
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        self.always = not windows
        merged: list[list[int]] = []
        for a, b in sorted(iv for w in windows for iv in w.intervals()):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        if merged and merged[0][0] == 0 and merged[-1][1] == WEEK and len(merged) == 1:
            self.always = True
        self._starts = [a for a, _ in merged]
        self._ends = [b for _, b in merged]

    def _local(self, ts: float) -> tuple[datetime, int]:
        dt = datetime.fromtimestamp(ts, self.tz)
        return dt, dt.weekday() * 1440 + dt.hour * 60 + dt.minute

    def _minute(self, ts: float) -> int:
        """The local minute of the week at ``ts``. It is the same for the whole UTC minute when
        the zone's offset is a whole number of minutes (every zone since the 1970s; offset
        changes then fall on whole minutes too), so the last one is remembered per zone."""
        k = ts // 60
        last = _LAST_MINUTE.get(self.tz)
        if last is not None and last[0] == k:
            return last[1]
        dt, m = self._local(ts)
        offset = dt.utcoffset()
        if offset is not None and not offset.seconds % 60 and not offset.microseconds:
            _LAST_MINUTE[self.tz] = (k, m)
        return m

    def is_open(self, ts: float) -> bool:
        if self.always:
            return True
        m = self._minute(ts)
        i = bisect.bisect_right(self._starts, m) - 1
        return i >= 0 and m < self._ends[i]

    @cached_property
    def _boundaries(self) -> list[int]:
        return sorted({*self._starts, *self._ends} - {WEEK} | ({0} if WEEK in self._ends else set()))

    def next_change(self, ts: float) -> float | None:
        """The first time after ``ts`` at which :meth:`is_open` changes, or ``None`` if never."""
        if self.always or not self._starts:
            return None
        dt, m = self._local(ts)
        bounds = self._boundaries
        i = bisect.bisect_right(bounds, m)
        delta = (bounds[i] - m) if i < len(bounds) else (bounds[0] + WEEK - m)
        week_start = dt.replace(second=0, microsecond=0) - timedelta(minutes=m)
        target = week_start + timedelta(minutes=m + delta)
        nxt = target.replace(tzinfo=None).replace(tzinfo=self.tz).timestamp()
        if nxt <= ts:
            nxt = ts + 60
        if self.is_open(nxt) == self.is_open(ts):
            return self.next_change(nxt)
        return nxt
