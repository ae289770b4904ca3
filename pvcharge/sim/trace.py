"""PV/house-load day traces: CSV ``timestamp,pv_power_w,house_power_w``.

``timestamp`` is ISO 8601 local time with its UTC offset; rows strictly increase at a fixed step
(60 s or 1 s); a row's values hold until the next row (and for one step after the last row).
"""

from __future__ import annotations

import bisect
import csv
import importlib.resources
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pvcharge.errors import PvchargeError

BUNDLED_TRACE = "serf_east_2022-03-19.csv"


class TraceError(PvchargeError):
    """A trace file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """A day of PV production and house load.

    Attributes:
        name: file name, for reports.
        t_s: sample times in Unix seconds, strictly increasing.
        pv_power_w: PV power in W (>= 0) per sample.
        house_power_w: house load in W (>= 0, car excluded) per sample.
        utc_offset_s: local time = UTC + this, in s (from the first row's timestamp).
        step_s: sample spacing in s.
    """

    name: str
    t_s: tuple[float, ...]
    pv_power_w: tuple[float, ...]
    house_power_w: tuple[float, ...]
    utc_offset_s: int
    step_s: float

    @property
    def start_s(self) -> float:
        return self.t_s[0]

    @property
    def end_s(self) -> float:
        """End of the last sample's hold period."""
        return self.t_s[-1] + self.step_s

    def at(self, t_s: float) -> tuple[float, float]:
        """``(pv_power_w, house_power_w)`` in force at Unix time ``t_s`` (held; clamped to the ends)."""
        i = bisect.bisect_right(self.t_s, t_s) - 1
        i = min(max(i, 0), len(self.t_s) - 1)
        return self.pv_power_w[i], self.house_power_w[i]

    def local_seconds_of_day(self, t_s: float) -> float:
        """Seconds since local midnight at Unix time ``t_s``."""
        return (t_s + self.utc_offset_s) % 86400.0

    def daylight(self, threshold_w: float = 50.0) -> tuple[float, float]:
        """``(first, end)`` Unix times of the span where PV exceeds ``threshold_w``."""
        idx = [i for i, p in enumerate(self.pv_power_w) if p > threshold_w]
        if not idx:
            return self.start_s, self.end_s
        return self.t_s[idx[0]], self.t_s[idx[-1]] + self.step_s


def hhmm(seconds_of_day: float) -> str:
    """A local time of day in s since midnight as ``HH:MM`` (``30600`` → ``08:30``)."""
    return f"{int(seconds_of_day // 3600):02d}:{int(seconds_of_day % 3600 // 60):02d}"


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV.

    Raises:
        TraceError: the file is unreadable, the header is not ``timestamp,pv_power_w,house_power_w``,
            a row is malformed, times do not increase, or a power is negative.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror or exc}") from exc
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header != ["timestamp", "pv_power_w", "house_power_w"]:
        raise TraceError(f"{path}:1: expected header 'timestamp,pv_power_w,house_power_w', got {header!r}")
    t_s: list[float] = []
    pv: list[float] = []
    house: list[float] = []
    offset: int | None = None
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != 3:
            raise TraceError(f"{path}:{lineno}: expected 3 columns, got {len(row)}")
        try:
            stamp = datetime.fromisoformat(row[0])
            p, h = float(row[1]), float(row[2])
        except ValueError as exc:
            raise TraceError(f"{path}:{lineno}: {exc}") from exc
        if stamp.utcoffset() is None:
            raise TraceError(f"{path}:{lineno}: timestamp {row[0]!r} has no UTC offset")
        if p < 0 or h < 0:
            raise TraceError(f"{path}:{lineno}: powers must be >= 0 W, got pv={p}, house={h}")
        t = stamp.timestamp()
        if t_s and t <= t_s[-1]:
            raise TraceError(f"{path}:{lineno}: timestamps must strictly increase")
        if offset is None:
            delta = stamp.utcoffset()
            assert delta is not None
            offset = int(delta.total_seconds())
        t_s.append(t)
        pv.append(p)
        house.append(h)
    if len(t_s) < 2:
        raise TraceError(f"{path}: a trace needs at least two rows")
    assert offset is not None
    return Trace(
        name=path.name,
        t_s=tuple(t_s),
        pv_power_w=tuple(pv),
        house_power_w=tuple(house),
        utc_offset_s=offset,
        step_s=t_s[1] - t_s[0],
    )


def bundled_trace() -> Trace:
    """The measured day shipped with pvcharge (NREL SERF East PV + UCI house load, 2022-03-19)."""
    ref = importlib.resources.files("pvcharge.sim") / "data" / BUNDLED_TRACE
    with importlib.resources.as_file(ref) as path:
        return load_trace(path)
