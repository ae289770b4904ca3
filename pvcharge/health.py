"""A heartbeat file the daemon rewrites after every control cycle, and the check behind
``pvcharge healthcheck`` (Docker's ``HEALTHCHECK``; under systemd the watchdog does this job).

Where the file lives, first match wins:

1. ``$PVCHARGE_HEARTBEAT`` (a file path; the Docker image sets ``/tmp/pvcharge/heartbeat``);
2. ``$RUNTIME_DIRECTORY/heartbeat`` (systemd's ``RuntimeDirectory=``, a tmpfs under ``/run``);
3. ``$STATE_DIRECTORY/heartbeat`` (systemd's ``StateDirectory=``; on disk, so avoided when 1 or 2
   is set: an SD card should not be written every few seconds);
4. none: ``pvcharge run`` writes no heartbeat and ``pvcharge healthcheck`` fails saying so.

The file holds one JSON object: the wall-clock time of the last completed cycle, the number of
cycles, the process id, the daemon's status line and ``stale_after_s``, the longest a healthy loop
may take between two cycles (from its config: ``2 × control.max_age_s + control.interval_s`` plus a
margin, since a cycle may wait ``max_age_s`` for the reads and again for the write).  The healthcheck
uses that unless ``--max-age-s`` is given.  The daemon removes the file at start (an old one must not
pass for a live loop) and when it exits.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "PVCHARGE_HEARTBEAT"
FILENAME = "heartbeat"
DEFAULT_STALE_AFTER_S = 120.0
MARGIN_S = 15.0  #: added to the longest legitimate gap between two cycles


def heartbeat_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The heartbeat file for this environment (see the module doc), or None."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    for var in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY"):
        value = env.get(var, "")
        if value:  # systemd joins several directories with ':'
            return Path(value.split(":")[0]) / FILENAME
    return None


def stale_after_s(interval_s: float, max_age_s: float) -> float:
    """The longest gap between two completed cycles of a healthy loop, with a margin, in s."""
    return 2 * max_age_s + interval_s + MARGIN_S


class Heartbeat:
    """Rewrites the heartbeat file atomically (write a temporary file, rename it)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.cycles = 0

    def clear(self) -> None:
        """Remove the file: at start (an old one is not ours) and at exit."""
        self.path.unlink(missing_ok=True)

    def beat(self, status: str, stale_after: float) -> None:
        """Record one completed cycle. Raises OSError when the file cannot be written."""
        self.cycles += 1
        data = {
            "time": self.clock(),
            "cycles": self.cycles,
            "pid": os.getpid(),
            "stale_after_s": stale_after,
            "status": status,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Health:
    """The result of :func:`check`: ``ok`` and a one-line reason."""

    ok: bool
    reason: str


def check(
    path: Path | None, max_age_s: float | None = None, *, now: Callable[[], float] = time.time
) -> Health:
    """Is the loop alive? True when the last cycle completed at most ``max_age_s`` ago.

    Args:
        path: the heartbeat file (None: no location configured).
        max_age_s: the allowed age; default: the ``stale_after_s`` the daemon wrote.
    """
    if path is None:
        return Health(False, f"no heartbeat file configured: set {ENV_VAR} (or run under systemd)")
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        stamp = float(data["time"])
        cycles = int(data.get("cycles", 0))
        limit = float(
            max_age_s if max_age_s is not None else data.get("stale_after_s", DEFAULT_STALE_AFTER_S)
        )
        status = str(data.get("status", ""))
    except FileNotFoundError:
        return Health(False, f"{path}: no heartbeat: the daemon is not running or has not completed a cycle")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Health(False, f"{path}: unreadable heartbeat: {exc}")
    age = now() - stamp
    # a stamp from the future: the clock went back since; a live loop rewrites it within one cycle
    if abs(age) > limit:
        when = f"{age:.0f} s ago" if age >= 0 else f"{-age:.0f} s in the future (clock changed?)"
        return Health(False, f"last control cycle {when}, limit {limit:g} s: the loop is stuck or gone")
    return Health(True, f"ok: last control cycle {max(age, 0.0):.1f} s ago ({cycles} cycles); {status}")
