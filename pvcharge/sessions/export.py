"""Sessions and daily totals as JSON-ready dicts and CSV, and the ``from``/``to`` bounds of a query.

Times are ISO 8601 with the local offset (``2025-06-15T08:00:05+02:00``); energies in kWh (3 decimals),
money in the session's currency (2 decimals), ``solar_share`` 0–1 (PV and battery over energy).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from pvcharge.sessions.tally import ENERGY_FIELDS, DayTotals, Session

#: the CSV's columns, in order
CSV_COLUMNS = (
    "start",
    "end",
    "loadpoint",
    "energy_kwh",
    "pv_kwh",
    "battery_kwh",
    "grid_kwh",
    "solar_share",
    "peak_power_w",
    "phases",
    "starts",
    "phase_switches",
    "cost",
    "savings",
    "currency",
)


def iso(t_s: float, tz: tzinfo | None) -> str:
    """Unix time ``t_s`` as ISO 8601 in ``tz`` (``None``: the system's), to the second."""
    moment = datetime.fromtimestamp(t_s, tz) if tz is not None else datetime.fromtimestamp(t_s).astimezone()
    return moment.isoformat(timespec="seconds")


def _kwh(wh: float) -> float:
    return round(wh / 1000.0, 3)


def _share(share: float | None) -> float | None:
    return round(share, 3) if share is not None else None


def session_dict(session: Session, tz: tzinfo | None) -> dict[str, Any]:
    """One session for JSON (``end`` null and ``open`` true while it runs)."""
    return {
        "id": session.id,
        "loadpoint": session.loadpoint,
        "start": iso(session.start_s, tz),
        "end": iso(session.end_s, tz) if session.end_s is not None else None,
        "open": session.end_s is None,
        "duration_s": round((session.end_s or session.updated_s) - session.start_s),
        "energy_kwh": _kwh(session.energy_wh),
        "pv_kwh": _kwh(session.pv_wh),
        "battery_kwh": _kwh(session.battery_wh),
        "grid_kwh": _kwh(session.grid_wh),
        "solar_share": _share(session.solar_share),
        "peak_power_w": round(session.peak_power_w),
        "phases": list(session.phases),
        "starts": session.starts,
        "phase_switches": session.phase_switches,
        "cost": round(session.cost, 2),
        "savings": round(session.savings, 2),
        "currency": session.currency,
    }


def day_dict(day: DayTotals) -> dict[str, Any]:
    """One day's site energy for JSON, in kWh (``car_pv_kwh`` etc.: the car's energy by source), and
    the car's ``solar_share``."""
    return {
        "day": day.day,
        **{f.removesuffix("_wh") + "_kwh": _kwh(getattr(day, f)) for f in ENERGY_FIELDS},
        "solar_share": _share(day.solar_share),
    }


def sessions_csv(sessions: Iterable[Session], tz: tzinfo | None) -> str:
    """The sessions as CSV with :data:`CSV_COLUMNS` (``phases`` as ``1+3``; ``end`` empty while open)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for session in sessions:
        row = session_dict(session, tz)
        row["phases"] = "+".join(str(p) for p in session.phases)
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def parse_bound(text: str, tz: tzinfo | None, *, end: bool = False) -> float:
    """A ``from`` or ``to`` bound as Unix time: a date ``YYYY-MM-DD`` (local midnight; for ``to``, the
    midnight after it, so the day is included) or an ISO 8601 time (local without an offset).

    Raises:
        ValueError: neither, with what was expected.
    """
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time())
        else:
            moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows a "t" and a "z"
    except ValueError:
        raise ValueError(
            f"expected a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM[:SS][+HH:MM], got {text[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
    return moment.timestamp()


def sessions_table(sessions: list[Session], tz: tzinfo | None) -> str:
    """The sessions as a text table with a total line (``pvcharge sessions``, the demo's end)."""
    header = (
        f"{'start':16}  {'end':5}  {'loadpoint':10} {'kWh':>7} {'PV':>7} {'battery':>7} {'grid':>7} "
        f"{'solar':>6} {'cost':>8} {'savings':>8}"
    )
    lines = [header]
    for s in sessions:
        row = session_dict(s, tz)
        share = f"{100 * row['solar_share']:5.1f}%" if row["solar_share"] is not None else "     -"
        end = str(row["end"])[11:16] if row["end"] is not None else "open"
        lines.append(
            f"{row['start'][:16].replace('T', ' '):16}  {end:5}  {s.loadpoint[:10]:10} "
            f"{row['energy_kwh']:7.2f} {row['pv_kwh']:7.2f} {row['battery_kwh']:7.2f} {row['grid_kwh']:7.2f} "
            f"{share} {s.cost:8.2f} {s.savings:8.2f} {s.currency}"
        )
    if len(sessions) > 1:
        total = sum(s.energy_wh for s in sessions) / 1000
        cost = sum(s.cost for s in sessions)
        savings = sum(s.savings for s in sessions)
        lines.append(f"{len(sessions)} sessions, {total:.2f} kWh, cost {cost:.2f}, savings {savings:.2f}")
    return "\n".join(lines)
