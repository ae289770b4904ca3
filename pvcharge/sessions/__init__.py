"""Charging sessions and the site's daily energy in SQLite (``sessions:`` and ``tariff:`` in the config).

- :mod:`pvcharge.sessions.tally`: the pure part: sessions, attribution by source, money;
- :mod:`pvcharge.sessions.site_energy`: the pure part of the site's daily energy and power per minute;
- :mod:`pvcharge.sessions.store`: the SQLite file (WAL, versioned schema);
- :mod:`pvcharge.sessions.export`: rows as JSON-ready dicts and CSV;
- :class:`SessionRecorder` (here): the daemon's cycle listener that feeds the tally and writes the store:
  a closed session at once, the open session and the daily energy at most once per
  :data:`CHECKPOINT_S` of the daemon's clock, so a crash loses at most that much of them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from pvcharge.config import Config, SessionsConfig, StateConfig, TariffConfig
from pvcharge.sessions.export import day_dict, parse_bound, session_dict
from pvcharge.sessions.site_energy import SiteTally
from pvcharge.sessions.store import SessionStore, StoreError
from pvcharge.sessions.tally import POWER_FIELDS, DayTotals, Session, Tally, Tariff, local_day
from pvcharge.state import state_path

if TYPE_CHECKING:
    from pvcharge.daemon import Cycle

log = structlog.get_logger("pvcharge.sessions")

CHECKPOINT_S = 60.0  #: the open session and the daily energy are written at most this often, s
#: the keys of :func:`~pvcharge.sessions.export.day_dict` a loadpoint's day has (the rest: the site's)
_CAR_KEYS = frozenset({"day", "car_kwh", "car_pv_kwh", "car_battery_kwh", "car_grid_kwh", "solar_share"})

__all__ = ["CHECKPOINT_S", "SessionRecorder", "database_path", "open_recorder", "tariff_of"]


def _add_power(into: dict[int, list[float]], more: dict[int, list[float]]) -> None:
    """Add the per-minute samples and sums of ``more`` to ``into``."""
    for minute, sums in more.items():
        if minute in into:
            into[minute] = [a + b for a, b in zip(into[minute], sums, strict=True)]
        else:
            into[minute] = list(sums)


def database_path(
    sessions: SessionsConfig, state: StateConfig, environ: Mapping[str, str] | None = None
) -> Path:
    """``sessions.database``, else ``sessions.db`` in the state file's directory (:mod:`pvcharge.state`)."""
    if sessions.database:
        return Path(sessions.database)
    return state_path(state, os.environ if environ is None else environ).parent / "sessions.db"


def tariff_of(config: TariffConfig) -> Tariff:
    return Tariff(config.grid_price_per_kwh, config.feed_in_per_kwh, config.currency)


def open_recorder(
    config: Config, *, tz: tzinfo | None = None, path: Path | None = None, loadpoint: str | None = None
) -> SessionRecorder | None:
    """The recorder for ``config``, or ``None`` with ``sessions.enabled: false`` or when the database
    cannot be opened (logged as ``sessions_unavailable``: charging goes on without a history).  ``path``
    overrides :func:`database_path`, ``loadpoint`` the loadpoint's name (default: the charger's type,
    or with a ``loadpoints:`` section every loadpoint's name, each with its own sessions)."""
    if not config.sessions.enabled:
        return None
    try:
        store = SessionStore(path or database_path(config.sessions, config.state))
    except StoreError as exc:
        log.error("sessions_unavailable", error=str(exc), action="charging goes on without a history")
        return None
    log.info("sessions_recording", path=str(store.path))
    return SessionRecorder(
        store,
        loadpoint or [lp.name for lp in config.loadpoints] or config.charger.type,
        tariff_of(config.tariff),
        tz=tz,
        max_age_s=config.control.max_age_s,
    )


class SessionRecorder:
    """Records the daemon's cycles (add it to ``Daemon.listeners``) and answers the API, MQTT and CLI.

    Args:
        store: the open database (closed by :meth:`close`).
        loadpoint: the loadpoint's name (the charger's), or every loadpoint's name in the daemon's order
            (``Cycle.loadpoints``): each gets its own sessions (:attr:`tallies`), and the cars share the
            site's PV, battery and grid in proportion to their power
            (:func:`~pvcharge.sessions.tally.car_share`).  The site's daily energy and power per minute
            (:attr:`site_tally`) come from the meter's reading each cycle, whatever the chargers answer.
        tariff: prices for cost and savings.
        tz: the time zone of the days (``None``: the system's).
        max_age_s: the daemon's ``control.max_age_s``: older site readings are not integrated.
        checkpoint_s: the least time between two writes of the open session, s of the daemon's clock.

    An open session left in the store by a crash is continued if the car is still plugged in at the
    first cycle, and closed at its last checkpoint otherwise.  A write that fails (disk full, read-only)
    is logged once and tried again at the next checkpoint; it never reaches the control loop.
    """

    def __init__(
        self,
        store: SessionStore,
        loadpoint: str | Sequence[str],
        tariff: Tariff,
        *,
        tz: tzinfo | None = None,
        max_age_s: float = 30.0,
        checkpoint_s: float = CHECKPOINT_S,
    ) -> None:
        names = [loadpoint] if isinstance(loadpoint, str) else list(loadpoint)
        if not names:
            raise ValueError("a session recorder needs at least one loadpoint")
        self.store = store
        self.loadpoint = names[0]
        self.tz = tz
        self.checkpoint_s = checkpoint_s
        max_gap_s = max(checkpoint_s, 2 * max_age_s)
        #: one tally per loadpoint, by name, in the daemon's order
        self.tallies = {
            name: Tally(
                name, tariff, max_age_s=max_age_s, max_gap_s=max_gap_s, session=store.open_session(name)
            )
            for name in names
        }
        #: the site's energy per day and power per minute
        self.site_tally = SiteTally(tz=tz, max_age_s=max_age_s, max_gap_s=max_gap_s)
        self.tally = self.tallies[names[0]]  #: the first loadpoint's (the only one of a ``charger:`` config)
        self.writes = 0  #: transactions committed
        self._last_write_s: float | None = None
        self._pending_closed: list[Session] = []
        self._pending_days: dict[str, DayTotals] = {}
        self._pending_power: dict[int, list[float]] = {}
        self._last_closed = store.last_closed()  #: the latest closed session, for last_session()
        #: each loadpoint's latest closed session, for last_session(loadpoint)
        self._last_closed_of = {name: store.last_closed(name) for name in names}
        self._failing = False

    def __call__(self, cycle: Cycle) -> None:
        """The daemon's cycle listener."""
        if len(self.tallies) == 1:  # (the cycle's first loadpoint's part; a bare Cycle has no loadpoints)
            parts = [(self.tally, cycle.charger, cycle.decision.command, cycle.written)]
        else:
            parts = [
                (self.tallies[lp.name], lp.charger, lp.decision.command, lp.written)
                for lp in cycle.loadpoints
                if lp.name in self.tallies
            ]
        cars_w = sum(max(0.0, charger.power_w) for _, charger, _, _ in parts if charger is not None)
        for tally, charger, command, written in parts:
            tally.step(cycle.now, cycle.site, charger, command, written, cars_w)
        self.site_tally.step(cycle.now, cycle.site, cars_w)
        closed = any(t.closed for t in self.tallies.values())
        if closed or self._last_write_s is None or cycle.now - self._last_write_s >= self.checkpoint_s:
            self.flush(cycle.now)

    def set_tariff(self, tariff: Tariff) -> None:
        """Prices from now on (a reloaded config)."""
        for tally in self.tallies.values():
            tally.tariff = tariff

    def _open_sessions(self) -> list[Session]:
        return [t.session for t in self.tallies.values() if t.session is not None]

    def flush(self, now_s: float) -> bool:
        """Write what is pending: closed sessions, the open session, the daily energy.  False (logged)
        if the write failed; it is then tried again at the next flush."""
        closed = [s for t in self.tallies.values() for s in t.take_closed()]
        if closed:
            self._last_closed = max(closed, key=lambda s: s.end_s or s.start_s)
            for s in sorted(closed, key=lambda s: s.end_s or s.start_s):
                self._last_closed_of[s.loadpoint] = s
        self._pending_closed += closed
        for day in self.site_tally.take_days():
            self._pending_days.setdefault(day.day, DayTotals(day.day)).add(day)
        _add_power(self._pending_power, self.site_tally.take_power())
        sessions = [*self._pending_closed, *self._open_sessions()]
        self._last_write_s = now_s
        try:
            self.store.write(sessions, list(self._pending_days.values()), self._pending_power)
        except sqlite3.Error as exc:
            if not self._failing:
                log.error(
                    "sessions_not_saved",
                    path=str(self.store.path),
                    error=str(exc),
                    action=f"trying again every {self.checkpoint_s:g} s; charging goes on",
                )
            self._failing = True
            return False
        if self._failing:
            log.info("sessions_saved_again", path=str(self.store.path))
        self._failing = False
        self.writes += 1
        self._pending_closed = []
        self._pending_days = {}
        self._pending_power = {}
        return True

    def close(self, now_s: float, *, end_session: bool = False) -> None:
        """Write the open session as it stands and close the file.  The session stays open, to be
        continued after a restart, unless ``end_session`` (the demo: its car leaves with it)."""
        if end_session:
            for tally in self.tallies.values():
                tally.end()
        self.flush(now_s)
        self.store.close()

    # --- queries: the store plus what is not written yet -------------------------------------------

    def sessions(
        self, *, from_s: float | None = None, to_s: float | None = None, loadpoint: str | None = None
    ) -> list[Session]:
        """Sessions started in ``[from_s, to_s)``, oldest first, the open one with its latest values."""
        stored = self.store.sessions(from_s=from_s, to_s=to_s, loadpoint=loadpoint)
        live = [*self._pending_closed, *self._open_sessions()]
        by_id = {s.id: s for s in live if s.id is not None}
        result = [by_id.get(s.id, s) if s.id is not None else s for s in stored]
        for s in live:
            wanted = loadpoint is None or s.loadpoint == loadpoint
            within = (from_s is None or s.start_s >= from_s) and (to_s is None or s.start_s < to_s)
            if s.id is None and wanted and within:
                result.append(s)
        return result

    def last_session(self, loadpoint: str | None = None) -> Session | None:
        """The latest session, open or closed, from memory (the MQTT bridge asks after every cycle): an
        open one (with several loadpoints the first open one in the daemon's order), else the latest
        closed one of any loadpoint.  With ``loadpoint`` (a name of :attr:`tallies`): that loadpoint's
        open session, else its latest closed one.

        Raises:
            KeyError: ``loadpoint`` is not one of this recorder's.
        """
        if loadpoint is not None:
            open_one = self.tallies[loadpoint].session
            return open_one if open_one is not None else self._last_closed_of.get(loadpoint)
        open_ = self._open_sessions()
        return open_[0] if open_ else self._last_closed

    def days(self, *, from_day: str | None = None, to_day: str | None = None) -> list[DayTotals]:
        """The site's energy per local day ``from_day``..``to_day`` (``YYYY-MM-DD``, both included;
        either open), oldest first: the store plus what is not written yet."""
        merged: dict[str, DayTotals] = {}
        stored = self.store.days(from_day=from_day, to_day=to_day)
        for part in [*stored, *self._pending_days.values(), *self.site_tally.days.values()]:
            if (from_day is None or part.day >= from_day) and (to_day is None or part.day <= to_day):
                merged.setdefault(part.day, DayTotals(part.day)).add(part)
        return [merged[name] for name in sorted(merged)]

    def day(self, now_s: float) -> DayTotals:
        """The site's energy of the local day of ``now_s`` so far."""
        name = local_day(now_s, self.tz)
        found = self.days(from_day=name, to_day=name)
        return found[0] if found else DayTotals(name)

    def power(self, *, from_s: float, to_s: float) -> dict[str, list[float]]:
        """The mean power per minute in ``[from_s, to_s)`` as columns: ``t_s`` (the minute's start, Unix
        s) and each of POWER_FIELDS in W (house without the car), for the status page's chart."""
        minutes = self.store.power(from_s=from_s, to_s=to_s)
        _add_power(minutes, self._pending_power)
        _add_power(minutes, self.site_tally.power)
        columns: dict[str, list[float]] = {"t_s": [], **{f: [] for f in POWER_FIELDS}}
        for minute in sorted(m for m in minutes if from_s <= m < to_s):
            samples, *sums = minutes[minute]
            columns["t_s"].append(minute)
            for name, total in zip(POWER_FIELDS, sums, strict=True):
                columns[name].append(round(total / samples))
        return columns

    def loadpoint_day(self, now_s: float, loadpoint: str) -> DayTotals:
        """The car energy (``car_wh`` and its sources) of ``loadpoint``'s sessions that started on the
        local day of ``now_s``; the site's fields stay 0.  There are no daily totals per loadpoint: a
        session across midnight counts whole on the day it started."""
        name = local_day(now_s, self.tz)
        totals = DayTotals(name)
        start_s, end_s = parse_bound(name, self.tz), parse_bound(name, self.tz, end=True)
        for s in self.sessions(from_s=start_s, to_s=end_s, loadpoint=loadpoint):
            totals.car_wh += s.energy_wh
            totals.car_pv_wh += s.pv_wh
            totals.car_battery_wh += s.battery_wh
            totals.car_grid_wh += s.grid_wh
        return totals

    def summary(self, now_s: float, loadpoint: str | None = None) -> dict[str, Any]:
        """Today's site energy and the last session (``None`` before any) as JSON-ready dicts
        (:mod:`pvcharge.sessions.export`), each with ``solar_share_pct``: PV and home battery over the
        car's energy in %, ``None`` before any (MQTT ``P/energy``).  With ``loadpoint``: that
        loadpoint's car energy today (:meth:`loadpoint_day`; the site's keys ``pv_kwh``,
        ``export_kwh``, ``import_kwh``, ``battery_*_kwh`` are ``None``) and its last session
        (:meth:`last_session`; MQTT ``P/loadpoints/<name>/energy``).

        Raises:
            KeyError: ``loadpoint`` is not one of this recorder's.
        """

        def pct(share: float | None) -> float | None:
            return round(100 * share, 1) if share is not None else None

        if loadpoint is None:
            today = self.day(now_s)
            today_dict = day_dict(today)
        else:
            today = self.loadpoint_day(now_s, loadpoint)
            today_dict = {k: v if k in _CAR_KEYS else None for k, v in day_dict(today).items()}
        last = self.last_session(loadpoint)
        return {
            "today": {**today_dict, "solar_share_pct": pct(today.solar_share)},
            "last_session": None
            if last is None
            else {**session_dict(last, self.tz), "solar_share_pct": pct(last.solar_share)},
        }

    def totals(self) -> DayTotals:
        """The site's energy over all days recorded (for counters)."""
        total = DayTotals("all")
        for day in self.days():
            total.add(day)
        return total
