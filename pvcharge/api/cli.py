"""``pvcharge status`` and ``pvcharge mode [LOADPOINT] MODE``: talk to the running daemon through its
HTTP API.

The address and the token come from the ``api:`` section of the config (``--config``, default
``/etc/pvcharge/config.yaml``), or the address from ``--url``.  Only that section is read, so the
command works without the drivers' secrets (systemd credentials exist only inside the service).

Exit codes: 0 success, 1 the daemon did not answer or refused, 2 a config or usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pvcharge.control.config import MODES

if TYPE_CHECKING:
    from pvcharge.config import ApiConfig

DEFAULT_CONFIG = "/etc/pvcharge/config.yaml"
TIMEOUT_S = 5.0


class _Failed(Exception):
    """A message for the user and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _api_section(path: str) -> ApiConfig:
    """The ``api:`` section of ``path`` (:func:`read_section`)."""
    from pvcharge.config import ApiConfig, read_section

    api: ApiConfig = read_section(path, ApiConfig, "api")
    return api


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, token or None) from --url / --config; without either and without the default config
    file, the defaults (http://127.0.0.1:7080, no token)."""
    from pvcharge.api import url_for
    from pvcharge.config import ApiConfig
    from pvcharge.errors import ConfigError

    path = args.config or DEFAULT_CONFIG
    api: ApiConfig | None
    if args.config is None and not Path(path).exists():
        api = ApiConfig()
    else:
        try:
            api = _api_section(path)
        except ConfigError as exc:
            if args.config is not None or args.url is None:
                hint = "" if args.config is not None else " (give --config FILE, or --url URL)"
                raise _Failed(f"config error: {exc}{hint}", 2) from exc
            api = None  # --url is enough when the default config is unreadable
    token = api.token.reveal() if api is not None and api.token is not None else None
    if args.url is not None:
        return args.url.rstrip("/"), token
    assert api is not None
    if not api.enabled:
        raise _Failed(f"the HTTP API is off in {path} (api.enabled: false)", 2)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(api.listen, api.listen)
    return url_for(host, api.port), token


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    base, token = _target(args)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.request(  # no proxy from the environment: the token goes to the daemon only
            method, base + path, json=body, headers=headers, timeout=TIMEOUT_S, trust_env=False
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _Failed(
            f"no pvcharge daemon answers at {base} (is it running? `systemctl status pvcharge`)"
        ) from exc
    except httpx.HTTPError as exc:
        raise _Failed(f"the pvcharge daemon at {base} did not answer properly: {exc}") from exc
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code == 401:
        where = args.config or DEFAULT_CONFIG
        raise _Failed(
            f"the pvcharge daemon at {base} refused the API token of {where} (api.token)"
            if token
            else f"the pvcharge daemon at {base} wants its API token: give the config holding api.token "
            "with --config FILE"
        )
    if response.status_code >= 400 or not isinstance(data, dict):
        problem = data.get("error") if isinstance(data, dict) else response.text[:200]
        raise _Failed(f"{base}{path}: HTTP {response.status_code}: {problem}")
    return data


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min"
    if s < 86400:
        return f"{s // 3600:.0f} h {s % 3600 // 60:.0f} min"
    return f"{s // 86400:.0f} d {s % 86400 // 3600:.0f} h"


def _power(w: Any) -> str:
    return "n/a" if w is None else f"{w:.0f} W"


def site_in_words(site: dict[str, Any]) -> str:
    """A meter reading (:func:`pvcharge.readings.as_dict` of a ``SiteReading``) in the words a user
    checks against the inverter's app, e.g. ``PV 3500 W, grid 3000 W export, battery 200 W charging at
    50 %`` (the house load too where the dict has it)."""
    grid, battery, soc = site["grid_power_w"], site["battery_power_w"], site["battery_soc_pct"]
    grid_dir = "import" if grid > 0 else "export" if grid < 0 else ""
    battery_dir = "discharging" if battery > 0 else "charging" if battery < 0 else "idle"
    soc_text = f" at {soc:.0f} %" if soc is not None else ""
    house = f", house {_power(site['house_power_w'])}" if "house_power_w" in site else ""
    return (
        f"PV {_power(site['pv_power_w'])}{house}, grid {_power(abs(grid))} {grid_dir}".rstrip()
        + f", battery {_power(abs(battery))} {battery_dir}{soc_text}"
    )


def car_in_words(car: dict[str, Any]) -> str:
    """A charger reading in words, e.g. ``charging, 2760 W, 12 A on 1p`` or ``plugged in, not charging``."""
    if car["charging"]:
        return f"charging, {_power(car['power_w'])}, {car['current_a']:g} A on {car['phases']}p"
    return f"{'plugged in' if car['connected'] else 'unplugged'}, not charging"


def _command(c: dict[str, Any] | None) -> str:
    if c is None:
        return "none yet"
    return "paused" if c["current_a"] == 0 else f"{c['current_a']:g} A on {c['phases']}p"


def loadpoint_in_words(lp: dict[str, Any]) -> str:
    """One loadpoint of the status in a line: name, priority, mode, command, decision, car."""
    car = lp.get("charger")
    car_words = "charger not answering" if car is None else car_in_words(car)
    return (
        f"{lp['name']} (priority {lp['priority']}): mode {lp['mode']}, {_command(lp.get('command'))}: "
        f"{lp.get('summary') or lp['reason']}; car {car_words}"
    )


def format_status(s: dict[str, Any]) -> str:
    """The status as a few readable lines (and one per loadpoint when there are several)."""
    lines = [f"pvcharge {s['version']}, up {_duration(s['uptime_s'])}, mode {s['mode']}"]
    command = _command(s.get("command"))
    lines.append(f"command   {command}: {s.get('summary') or s['reason']}")
    lines.append(f"surplus   {_power(s.get('available_w'))}")
    site = s.get("site")
    if site is None:
        lines.append("site      no meter reading yet")
    else:
        lines.append(f"site      {site_in_words(site)}; reading {site['age_s']:.0f} s old")
    car = s.get("charger")
    lines.append("car       charger not answering" if car is None else f"car       {car_in_words(car)}")
    for role, d in s["devices"].items():
        health = "ok" if d["ok"] else f"failing ({d['consecutive_failures']} in a row): {d['last_error']}"
        if not d["ok"] and d["consecutive_failures"] == 0:
            health = "no answer yet"
        lines.append(f"{role:9} {d['name']}: {health}")
    wake = s.get("wake_up")
    if wake and wake["attempts"]:
        last = "" if wake["last_error"] is None else f"; the last failure: {wake['last_error']}"
        sent = f"{wake['attempts']} of {wake['max_attempts']}"
        lines.append(f"wake-up   {sent} sent to a car that did not start{last}")
    if s.get("writes_blocked"):
        lines.append("WARNING   the charger refuses all writes; pvcharge sends it nothing until restarted")
    loadpoints = s.get("loadpoints") or []
    if len(loadpoints) > 1:  # the lines above are the first one's
        lines.extend(f"loadpoint {loadpoint_in_words(lp)}" for lp in loadpoints)
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """``pvcharge status``."""
    try:
        status = _request(args, "GET", "/api/status")
    except _Failed as exc:
        print(f"pvcharge: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_mode(args: argparse.Namespace) -> int:
    """``pvcharge mode MODE`` (the first loadpoint, the only one of a ``charger:`` config) or ``pvcharge
    mode LOADPOINT MODE``."""
    name, mode = args.loadpoint, args.mode
    if mode not in MODES:
        print(f"pvcharge: unknown mode {mode!r}; expected one of: {', '.join(MODES)}", file=sys.stderr)
        return 2
    path = "/api/mode" if name is None else f"/api/loadpoints/{quote(name, safe='')}/mode"
    try:
        status = _request(args, "PUT", path, {"mode": mode})
    except _Failed as exc:
        print(f"pvcharge: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(status, indent=2))
    elif name is None:
        print(f"mode {status['mode']} (from the next control cycle)")
    else:
        now = next((lp["mode"] for lp in status.get("loadpoints", []) if lp["name"] == name), mode)
        print(f"{name}: mode {now} (from the next control cycle)")
    return 0


class _ThenMode(argparse.Action):
    """``mode [LOADPOINT] MODE``: with two words the first is the loadpoint (``args.loadpoint``) and the
    second the mode (``args.mode``); with one, ``args.loadpoint`` is None."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        if values is None:
            namespace.loadpoint = None
        else:
            namespace.loadpoint, namespace.mode = namespace.mode, values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        help=f"config file whose api section names the address and token (default {DEFAULT_CONFIG})",
    )
    p.add_argument("--url", help="the daemon's API, e.g. http://127.0.0.1:7080 (default: from the config)")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")


def add_commands(subparsers: Any) -> None:
    """Register ``status`` and ``mode`` on the ``pvcharge`` subparsers (each sets ``func``)."""
    p = subparsers.add_parser(
        "status", help="show what the running daemon sees and does (through its HTTP API)"
    )
    _common(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "mode",
        help="switch the running daemon's mode, or one loadpoint's (through its HTTP API)",
        usage="%(prog)s [-h] [--config CONFIG] [--url URL] [--json] [LOADPOINT] MODE",
    )
    p.add_argument(
        "mode",
        metavar="LOADPOINT",
        help="the loadpoint's name (leave out: the first loadpoint, the only one of a charger: config)",
    )
    p.add_argument(
        "loadpoint",
        nargs="?",
        action=_ThenMode,
        metavar="MODE",
        help=f"{', '.join(MODES)} (off: never charge; pv: surplus only; minpv: minimum + surplus; fast: "
        "full)",
    )
    _common(p)
    p.set_defaults(func=cmd_mode)
