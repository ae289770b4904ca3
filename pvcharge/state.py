"""What pvcharge keeps across restarts: each loadpoint's mode last chosen over the API or MQTT, and
each loadpoint's plan set at run time (:mod:`pvcharge.planning.runtime`); the first loadpoint's also
top-level (``mode``, ``plan``), as pvcharge before several loadpoints wrote and reads them.

A small JSON file, ``{"mode": "fast", "changed_at_s": 1700000000.0, "loadpoints": {"garage": {"mode":
"minpv", "changed_at_s": 1700000100.0, "plan": {...}}, ...}, "plan": {...}}``, written atomically
(a temporary file in the same directory, then ``os.replace``), so a power cut never leaves half a file;
each writer replaces only its own keys.  Where it
lives: ``state.file`` from the config; else ``$STATE_DIRECTORY/state.json`` (systemd's
``StateDirectory=pvcharge``); else ``$XDG_STATE_HOME/pvcharge/state.json`` (``~/.local/state``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import structlog

from pvcharge.config import StateConfig
from pvcharge.control.config import MODES, Mode

log = structlog.get_logger("pvcharge.state")


def state_path(config: StateConfig, environ: Mapping[str, str] | None = None) -> Path:
    """The state file for ``config`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    if config.file:
        return Path(config.file)
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "state.json"
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "pvcharge" / "state.json"


def load_mode(path: Path, loadpoint: str | None = None, *, first: bool = True) -> Mode | None:
    """The saved mode of ``loadpoint`` (its entry under ``loadpoints``), or ``None`` when there is none;
    the first loadpoint (``first``; ``loadpoint=None`` is the first) falls back to the top-level
    ``mode``, which a ``charger:`` config and pvcharge before several loadpoints wrote.  A damaged file
    is logged and ignored."""
    data = _read_state(path)
    return _mode_of(data, loadpoint, first, path) if data is not None else None


def load_modes(path: Path, loadpoints: Sequence[str]) -> dict[str, Mode]:
    """The saved mode of each of ``loadpoints`` that has one (the first falls back to the top-level
    ``mode``, as :func:`load_mode`), from one read of the file; a damaged file is logged once."""
    data = _read_state(path)
    if data is None:
        return {}
    modes = {name: _mode_of(data, name, i == 0, path) for i, name in enumerate(loadpoints)}
    return {name: mode for name, mode in modes.items() if mode is not None}


def _read_state(path: Path) -> dict[str, Any] | None:
    """The state file's object; ``None`` when there is none, or (logged) when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("state_unreadable", path=str(path), error=str(exc), action="using the config's mode")
        return None
    if not isinstance(data, dict):
        action = "using the config's mode"
        log.warning("state_unreadable", path=str(path), error="not a JSON object", action=action)
        return None
    return data


def _mode_of(data: dict[str, Any], loadpoint: str | None, first: bool, path: Path) -> Mode | None:
    entry = _entry(data, loadpoint)
    if entry is not None and "mode" in entry:
        mode, where = entry["mode"], f"loadpoints.{loadpoint}.mode"
    elif first and "mode" in data:
        mode, where = data["mode"], "mode"
    else:
        return None  # (nothing saved for it: only a plan, or other loadpoints' modes)
    if mode not in MODES:
        log.warning("state_unreadable", path=str(path), error=f"no valid mode in {where}: {mode!r}")
        return None
    return cast(Mode, mode)


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file beside it, fsync, ``os.replace``),
    creating the directory. Raises OSError; no temporary file is left behind."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _saved(path: Path) -> dict[str, Any]:
    """The state file's object; ``{}`` when missing, damaged or not an object (it is rewritten whole)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry(data: Mapping[str, Any], loadpoint: str | None) -> dict[str, Any] | None:
    """``loadpoint``'s entry under ``loadpoints`` in the state file's ``data``, or ``None``."""
    entries = data.get("loadpoints")
    entry = entries.get(loadpoint) if isinstance(entries, dict) and loadpoint is not None else None
    return entry if isinstance(entry, dict) else None


def _save(
    path: Path, loadpoint: str | None, first: bool, update: Callable[[dict[str, Any]], None], what: str
) -> bool:
    """Apply ``update`` to ``loadpoint``'s entry under ``loadpoints`` (if named) and, for the first
    loadpoint, to the top level, keeping the file's other keys; write it atomically.  False (and a
    warning naming ``what`` holds until restart) if the file cannot be written."""
    data = _saved(path)
    if loadpoint is not None:
        entries = data.get("loadpoints")
        entries = dict(entries) if isinstance(entries, dict) else {}
        entry = dict(_entry(data, loadpoint) or {})
        update(entry)
        entries[loadpoint] = entry
        data["loadpoints"] = entries
    if first:
        update(data)
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        log.warning(
            "state_not_saved", path=str(path), error=str(exc), action=f"the {what} holds until restart"
        )
        return False
    return True


def save_mode(
    path: Path, mode: Mode, now_s: float, loadpoint: str | None = None, *, first: bool = True
) -> bool:
    """Write ``loadpoint``'s mode atomically under ``loadpoints`` (the file's other keys kept); the first
    loadpoint's (``first``; ``loadpoint=None`` is the first) also as the top-level ``mode``, which older
    versions read.  False (and a warning) if the file cannot be written."""

    def set_mode(d: dict[str, Any]) -> None:
        d.update(mode=mode, changed_at_s=now_s)

    return _save(path, loadpoint, first, set_mode, "mode")


def load_plan(path: Path, loadpoint: str | None = None, *, first: bool = True) -> dict[str, Any] | None:
    """The saved run-time plan of ``loadpoint`` (``loadpoints.<name>.plan``, as :func:`save_plan` wrote
    it), or ``None``; the first loadpoint (``first``; ``loadpoint=None`` is the first) falls back to the
    top-level ``plan``, which pvcharge before several loadpoints wrote."""
    data = _saved(path)
    entry = _entry(data, loadpoint)
    if entry is not None and "plan" in entry:
        plan = entry["plan"]
    elif first:
        plan = data.get("plan")
    else:
        return None
    return plan if isinstance(plan, dict) else None


def save_plan(
    path: Path, plan: Mapping[str, Any] | None, loadpoint: str | None = None, *, first: bool = True
) -> bool:
    """Write ``loadpoint``'s run-time plan atomically under ``loadpoints`` (``None``: remove it; the
    file's other keys kept); the first loadpoint's (``first``; ``loadpoint=None`` is the first) also as
    the top-level ``plan``.  False (and a warning) if the file cannot be written."""

    def set_plan(d: dict[str, Any]) -> None:
        d.pop("plan", None)
        if plan is not None:
            d["plan"] = dict(plan)

    return _save(path, loadpoint, first, set_plan, "plan")
