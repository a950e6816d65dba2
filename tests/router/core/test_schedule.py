"""Schedule.is_open remembers the last local minute per time zone; it must agree with the plain
conversion everywhere, across daylight-saving changes and in zones with odd offsets."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.schedule import Schedule, Window

ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe")
WINDOWS = (Window("mon-fri", "09:00", "18:00"), Window("sat", "22:30", "02:15"))


def reference(s: Schedule, ts: float) -> bool:
    _, m = s._local(ts)
    i = bisect.bisect_right(s._starts, m) - 1
    return i >= 0 and m < s._ends[i]


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), start=st.floats(1.6e9, 1.9e9),
       steps=st.lists(st.sampled_from((0.0, 0.5, 59.9, 60.0, 61.0, 3599.0, 86_400.0, -30.0, -3600.0)),
                      min_size=1, max_size=80))
def test_is_open_agrees_with_the_plain_conversion(zone: str, start: float, steps: list[float]) -> None:
    a, b = Schedule(WINDOWS, zone), Schedule(WINDOWS[:1], zone)  # two schedules share a zone's cache
    ts = start
    for step in steps:
        ts += step
        assert a.is_open(ts) == reference(a, ts)
        assert b.is_open(ts) == reference(b, ts)


def test_is_open_around_a_daylight_saving_change() -> None:
    s = Schedule((Window("sun", "01:00", "03:30"),), "Europe/Berlin")
    change = 1711846800.0  # 2024-03-31 01:00 UTC: 02:00 CET becomes 03:00 CEST
    for ts in (change - 3600.5, change - 60, change - 0.5, change, change + 0.5, change + 1799, change + 1800,
               change + 1860):
        assert s.is_open(ts) == reference(s, ts), ts
