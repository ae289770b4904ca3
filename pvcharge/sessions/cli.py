"""``pvcharge sessions``: the recorded charging sessions as a table or CSV, read from the database file.

Where the file is: ``--database FILE``; else ``sessions.database`` of ``--config FILE`` (only its
``sessions:`` and ``state:`` sections are read: no driver secrets needed); else the default, where
``pvcharge run`` and ``pvcharge demo`` write it (``$STATE_DIRECTORY/sessions.db``, else
``$XDG_STATE_HOME/pvcharge/sessions.db``, ``~/.local/state/pvcharge/sessions.db``).  The systemd
service's file is ``/var/lib/pvcharge/sessions.db``.

Exit codes: 0 success, 1 no database there, 2 a config or usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_SERVICE_DATABASE = "/var/lib/pvcharge/sessions.db"


def _database(args: argparse.Namespace) -> Path:
    from pvcharge.config import SessionsConfig, StateConfig
    from pvcharge.sessions import database_path

    if args.database:
        return Path(args.database)
    if args.config:
        from pvcharge.config import read_section

        sessions = read_section(args.config, SessionsConfig, "sessions")
        state = read_section(args.config, StateConfig, "state")
        return database_path(sessions, state)
    return database_path(SessionsConfig(), StateConfig())


def cmd_sessions(args: argparse.Namespace) -> int:
    from pvcharge.sessions.export import parse_bound, sessions_csv, sessions_table
    from pvcharge.sessions.store import SessionStore

    path = _database(args)
    if not path.is_file():
        print(
            f"pvcharge: no session database at {path}: pvcharge run and pvcharge demo record there "
            f"(--database FILE or --config FILE for another; the systemd service's: "
            f"{DEFAULT_SERVICE_DATABASE})",
            file=sys.stderr,
        )
        return 1
    try:
        from_s = parse_bound(args.from_, None) if args.from_ else None
        to_s = parse_bound(args.to, None, end=True) if args.to else None
    except ValueError as exc:
        print(f"pvcharge: sessions: --from/--to: {exc}", file=sys.stderr)
        return 2
    store = SessionStore(path)
    try:
        found = store.sessions(from_s=from_s, to_s=to_s, loadpoint=args.loadpoint)
    finally:
        store.close()
    if args.csv:
        sys.stdout.write(sessions_csv(found, None))
    elif found:
        print(sessions_table(found, None))
    else:
        print(f"no sessions recorded in {path} for these dates")
    return 0


def add_command(subparsers: Any) -> None:
    """Register ``sessions`` on the ``pvcharge`` subparsers."""
    p = subparsers.add_parser(
        "sessions",
        help="list the recorded charging sessions (energy by source, cost, savings), as a table or CSV",
        description="List the charging sessions recorded by pvcharge run or pvcharge demo. Times are local.",
    )
    p.add_argument(
        "--from", dest="from_", metavar="DATE", help="sessions started on or after DATE (YYYY-MM-DD)"
    )
    p.add_argument("--to", metavar="DATE", help="sessions started on or before DATE (YYYY-MM-DD, included)")
    p.add_argument(
        "--loadpoint", help="only this loadpoint (its name in loadpoints:, or the charger type, e.g. warp)"
    )
    p.add_argument(
        "--csv",
        action="store_true",
        help="CSV: start, end, loadpoint, energy_kwh, pv_kwh, battery_kwh, grid_kwh, solar_share, "
        "peak_power_w, phases, starts, phase_switches, cost, savings, currency",
    )
    p.add_argument(
        "--database",
        metavar="FILE",
        help="the SQLite file (default: where run and demo write it, $STATE_DIRECTORY or "
        f"~/.local/state/pvcharge/sessions.db; the systemd service's: {DEFAULT_SERVICE_DATABASE})",
    )
    p.add_argument("--config", "-c", help="take sessions.database (and state.file) from this config file")
    p.set_defaults(func=cmd_sessions)
