"""The session store: one SQLite file (the standard library's ``sqlite3``) in WAL mode.

Where it lives: ``sessions.database`` from the config; else ``sessions.db`` beside the state file
(``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/pvcharge``, :mod:`pvcharge.state`).

Tables (schema version in ``PRAGMA user_version``; :data:`MIGRATIONS` bring an older file up to date
in one transaction, and a file from a newer pvcharge is refused rather than guessed at):

- ``sessions``: one row per charging session, written when it closes and, while open, at each
  checkpoint (``end_s`` NULL while open).  Energies in Wh, times in Unix s, money in ``currency``;
- ``daily``: the site's energy per local day (``day`` ``YYYY-MM-DD``) in Wh, added to at each checkpoint;
- ``power`` (since version 2): per minute (``minute_s``, its start in Unix s) the number of samples
  and the sums of PV, house (without the car), car, grid and battery power in W; kept
  :data:`POWER_KEEP_S`.

Durability: ``journal_mode=WAL`` and ``synchronous=FULL``: each commit is on disk when it returns, and
a process killed or a power cut mid-write leaves the last committed state (SQLite's WAL recovery).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pvcharge.errors import PvchargeError
from pvcharge.sessions.tally import ENERGY_FIELDS, POWER_FIELDS, RUNTIME_FIELDS, DayTotals, Session

#: schema migrations: MIGRATIONS[i] brings user_version i to i + 1
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        loadpoint TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL,
        updated_s REAL NOT NULL,
        energy_wh REAL NOT NULL DEFAULT 0,
        pv_wh REAL NOT NULL DEFAULT 0,
        battery_wh REAL NOT NULL DEFAULT 0,
        grid_wh REAL NOT NULL DEFAULT 0,
        peak_power_w REAL NOT NULL DEFAULT 0,
        phases TEXT NOT NULL DEFAULT '',
        starts INTEGER NOT NULL DEFAULT 0,
        phase_switches INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        savings REAL NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_start ON sessions (start_s);
    CREATE TABLE daily (
        day TEXT PRIMARY KEY,
        pv_wh REAL NOT NULL DEFAULT 0,
        export_wh REAL NOT NULL DEFAULT 0,
        import_wh REAL NOT NULL DEFAULT 0,
        battery_charge_wh REAL NOT NULL DEFAULT 0,
        battery_discharge_wh REAL NOT NULL DEFAULT 0,
        car_wh REAL NOT NULL DEFAULT 0,
        car_pv_wh REAL NOT NULL DEFAULT 0,
        car_battery_wh REAL NOT NULL DEFAULT 0,
        car_grid_wh REAL NOT NULL DEFAULT 0
    );
    """,
    # 2: the power per minute for the status page's chart (sums of the cycles' samples in each minute)
    """
    CREATE TABLE power (
        minute_s INTEGER PRIMARY KEY,
        samples INTEGER NOT NULL,
        pv_w REAL NOT NULL,
        house_w REAL NOT NULL,
        car_w REAL NOT NULL,
        grid_w REAL NOT NULL,
        battery_w REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
POWER_KEEP_S = 40 * 86400  #: the power per minute is kept this long (behind the newest minute), s

#: the stored fields of a Session, in the table's column order (``id`` is the key; the rest is runtime state)
_SESSION_COLUMNS = tuple(f.name for f in dataclasses.fields(Session) if f.name not in ("id", *RUNTIME_FIELDS))


class StoreError(PvchargeError):
    """The session database cannot be opened or used (path, problem)."""


def _row(session: Session) -> tuple[Any, ...]:
    values = {f.name: getattr(session, f.name) for f in dataclasses.fields(session)}
    values["phases"] = ",".join(str(p) for p in session.phases)
    return tuple(values[c] for c in _SESSION_COLUMNS)


def session_from_row(row: Mapping[str, Any]) -> Session:
    """A :class:`Session` from a ``sessions`` row."""
    fields = {c: row[c] for c in _SESSION_COLUMNS}
    fields["phases"] = [int(p) for p in str(row["phases"]).split(",") if p]
    return Session(id=int(row["id"]), **fields)


class SessionStore:
    """The open database file.

    Args:
        path: the SQLite file (its directory is created).

    Raises:
        StoreError: the file cannot be opened or created, is not a database, or has a newer schema.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"sessions.database {self.path}: cannot open: {exc}") from exc
        self.journal_mode = str(mode)

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"sessions.database {self.path}: schema version {version} is newer than this pvcharge "
                f"knows ({SCHEMA_VERSION}); upgrade pvcharge or move the file aside"
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def write(
        self, sessions: list[Session], days: list[DayTotals], power: dict[int, list[float]] | None = None
    ) -> None:
        """Insert or update ``sessions`` (setting their ``id``), add ``days`` to the daily totals and
        ``power`` (minute → samples and sums, :attr:`Tally.power`) to the power per minute, in one
        transaction.

        Raises:
            sqlite3.Error: the write failed (disk full, read-only); nothing of it is kept.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for session in sessions:
                row = _row(session)
                if session.id is None:
                    marks = ", ".join("?" for _ in _SESSION_COLUMNS)
                    cursor = db.execute(
                        f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}) VALUES ({marks})", row
                    )
                    session.id = cursor.lastrowid
                else:
                    sets = ", ".join(f"{c} = ?" for c in _SESSION_COLUMNS)
                    db.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*row, session.id))
            for day in days:
                adds = ", ".join(f"{f} = {f} + excluded.{f}" for f in ENERGY_FIELDS)
                marks = ", ".join("?" for _ in ENERGY_FIELDS)
                db.execute(
                    f"INSERT INTO daily (day, {', '.join(ENERGY_FIELDS)}) VALUES (?, {marks}) "
                    f"ON CONFLICT (day) DO UPDATE SET {adds}",
                    (day.day, *(getattr(day, f) for f in ENERGY_FIELDS)),
                )
            if power:
                adds = ", ".join(f"{f} = {f} + excluded.{f}" for f in ("samples", *POWER_FIELDS))
                marks = ", ".join("?" for _ in POWER_FIELDS)
                columns = ", ".join(POWER_FIELDS)
                db.executemany(
                    f"INSERT INTO power (minute_s, samples, {columns}) VALUES (?, ?, {marks}) "
                    f"ON CONFLICT (minute_s) DO UPDATE SET {adds}",
                    [(minute, *sums) for minute, sums in power.items()],
                )
                db.execute("DELETE FROM power WHERE minute_s < ?", (max(power) - POWER_KEEP_S,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def open_session(self, loadpoint: str) -> Session | None:
        """The loadpoint's latest session still open (``end_s`` NULL), e.g. after a crash."""
        row = self._db.execute(
            "SELECT * FROM sessions WHERE loadpoint = ? AND end_s IS NULL ORDER BY start_s DESC LIMIT 1",
            (loadpoint,),
        ).fetchone()
        return session_from_row(row) if row is not None else None

    def last_closed(self, loadpoint: str | None = None) -> Session | None:
        """The latest closed session (by its start) of ``loadpoint`` (``None``: of any loadpoint)."""
        where, args = ("AND loadpoint = ? ", (loadpoint,)) if loadpoint is not None else ("", ())
        row = self._db.execute(
            f"SELECT * FROM sessions WHERE end_s IS NOT NULL {where}ORDER BY start_s DESC, id DESC LIMIT 1",
            args,
        ).fetchone()
        return session_from_row(row) if row is not None else None

    def sessions(
        self, *, from_s: float | None = None, to_s: float | None = None, loadpoint: str | None = None
    ) -> list[Session]:
        """Sessions that started in ``[from_s, to_s)`` (Unix s; either open-ended), oldest first."""
        where: list[str] = []
        args: list[float | str] = []
        if from_s is not None:
            where.append("start_s >= ?")
            args.append(from_s)
        if to_s is not None:
            where.append("start_s < ?")
            args.append(to_s)
        if loadpoint is not None:
            where.append("loadpoint = ?")
            args.append(loadpoint)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(f"SELECT * FROM sessions{clause} ORDER BY start_s, id", args).fetchall()
        return [session_from_row(r) for r in rows]

    def days(self, *, from_day: str | None = None, to_day: str | None = None) -> list[DayTotals]:
        """Daily totals for ``from_day``..``to_day`` (``YYYY-MM-DD``, both included), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM daily WHERE day >= ? AND day <= ? ORDER BY day",
            (from_day or "", to_day or "9999"),
        ).fetchall()
        return [DayTotals(**dict(zip(r.keys(), tuple(r), strict=True))) for r in rows]

    def power(self, *, from_s: float, to_s: float) -> dict[int, list[float]]:
        """The power per minute in ``[from_s, to_s)``: minute → [samples, sums of POWER_FIELDS]."""
        rows = self._db.execute(
            f"SELECT minute_s, samples, {', '.join(POWER_FIELDS)} FROM power "
            "WHERE minute_s >= ? AND minute_s < ? ORDER BY minute_s",
            (from_s, to_s),
        ).fetchall()
        return {int(r[0]): [float(x) for x in tuple(r)[1:]] for r in rows}

    def integrity(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` or SQLite's list of problems."""
        return "\n".join(str(r[0]) for r in self._db.execute("PRAGMA integrity_check").fetchall())
