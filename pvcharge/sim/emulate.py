"""``pvcharge emulate``: one device emulator on its own, in real time, to try pvcharge, Home Assistant or
evcc against.

Each emulator speaks its device's real protocol (see its module under :mod:`pvcharge.sim`) and answers
from the demo's :class:`~pvcharge.sim.site.SiteModel`: the bundled measured day, a 10 kWh home battery
and a car plugged in 08:00–18:00, on a clock that runs in real time from a chosen time of that day.
The cloud emulators' token lifetimes, rate limits and timestamp windows follow the wall clock, as the
clients they talk to do.

:func:`emulator` starts one and yields what it is and the config sections that point pvcharge at it
(:func:`config_yaml` prints them).  Emulators listen on loopback only; :func:`emulator` binds another
address only when asked with ``expose=True``: they are test doubles (throwaway credentials, HTTP
Digest without replay protection, a certificate for loopback names).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from pvcharge.settings import is_loopback
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.dayahead import DayAheadMarket
from pvcharge.sim.demo import SimClock
from pvcharge.sim.demo_devices import DEMO_ALPHAESS_SECRET, DEMO_EASEE_PASSWORD
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.ocpp import OcppChargePointEmulator
from pvcharge.sim.sections import alphaess_account, easee_account
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.tibber import TibberEmulator
from pvcharge.sim.trace import Trace
from pvcharge.sim.warp import WarpEmulator

#: the emulators :func:`emulator` runs
KINDS = ("huawei", "senec", "alphaess", "easee", "warp", "ocpp", "tibber")
#: the emulators' throwaway credentials, the demo's (they print, that is the point: a user types them into
#: a client)
EASEE_PASSWORD = DEMO_EASEE_PASSWORD
ALPHAESS_SECRET = DEMO_ALPHAESS_SECRET
#: the OCPP charge point's identity
OCPP_ID = "pvcharge-emulator"
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Emulated:
    """A running emulator.

    Attributes:
        title: what it emulates, e.g. ``"Tinkerforge WARP3 (local HTTP API)"``.
        address: where it listens, e.g. ``"http://127.0.0.1:8080"`` or ``"127.0.0.1:5502 (Modbus TCP)"``.
        sections: pvcharge config sections that point at it, ``{"meter": {...}}`` and/or
            ``{"charger": {...}}`` (the AlphaESS account serves both).
        notes: further lines for the user (other clients' settings, the certificate, ...).
    """

    title: str
    address: str
    sections: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def config_yaml(emulated: Emulated) -> str:
    """The :attr:`Emulated.sections` as a block-style YAML config snippet (keys in the order given)."""
    return yaml.safe_dump(emulated.sections, sort_keys=False, default_flow_style=False)


def site_model(trace: Trace, start_s: float) -> SiteModel:
    """The demo's site on ``trace``'s day, its clock running in real time from local time of day
    ``start_s`` (s since midnight)."""
    day_start_s = trace.start_s - trace.local_seconds_of_day(trace.start_s)
    clock = SimClock(day_start_s + start_s, speed=1.0)
    return SiteModel(trace, t_s=clock.now(), clock=clock.now)


def _flow(keys: str) -> dict[str, Any]:
    """A flow mapping's keys (``a: 1, b: x``, as :mod:`pvcharge.sim.sections` writes them) as a dict."""
    mapping: dict[str, Any] = yaml.safe_load("{" + keys + "}")
    return mapping


@contextlib.asynccontextmanager
async def emulator(
    kind: str,
    site: SiteModel,
    *,
    host: str = _LOOPBACK,
    port: int = 0,
    expose: bool = False,
    phase_switch: bool = False,
) -> AsyncIterator[Emulated]:
    """Run the emulator ``kind`` (one of :data:`KINDS`) on ``host:port`` and yield where it is.

    An OCPP charge point (``ocpp``) listens nowhere: it connects to the central system at
    ``ws://host:port/pvcharge-emulator`` (pvcharge with the printed charger section) and tries again every
    5 s until it is there.

    Args:
        site: the site model it answers from.
        host: address to listen on (``ocpp``: of the central system); loopback unless ``expose``.
        port: TCP port, 0 for a free one (not for ``ocpp``).
        expose: allow a ``host`` that is not loopback (``--expose``).
        phase_switch: a WARP3 set up for external phase switching (``warp`` only, ``--phase-switching``).

    Raises:
        ValueError: an unknown ``kind``; ``host`` not loopback without ``expose``; ``phase_switch``
            with another kind.
        OSError, RuntimeError: the port cannot be bound (in use, or below 1024 without root).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown emulator {kind!r}; expected one of {', '.join(KINDS)}")
    if not is_loopback(host) and not expose:
        raise ValueError(
            f"{host} is not a loopback address; the emulators are test doubles (throwaway credentials, no "
            "real security): add --expose to listen there anyway"
        )
    if phase_switch and kind not in ("warp", "ocpp"):
        raise ValueError("--phase-switching is emulated for the WARP and the OCPP charge point only")
    if kind == "ocpp":
        if port == 0:
            raise ValueError("the OCPP charge point connects to pvcharge: give the central system's --port")
        url = f"ws://{host}:{port}/{OCPP_ID}"
        async with OcppChargePointEmulator(site, url, phase_switch=phase_switch, allow_remote=expose):
            yield _describe_ocpp(host, port, url, phase_switch)
        return
    # the emulators refuse other addresses when built; exposing them is this tool's explicit choice
    built = _build(kind, site, port, phase_switch)
    built.host = host
    async with built:
        yield _describe(built, phase_switch)


def _describe_ocpp(host: str, port: int, url: str, phase_switch: bool) -> Emulated:
    section: dict[str, Any] = {"type": "ocpp", "charge_point_id": OCPP_ID, "listen": host, "port": port}
    if phase_switch:
        section["phase_switching"] = True
    return Emulated(
        f"an OCPP 1.6J charge point{' switching 1p/3p' if phase_switch else ''} (a WebSocket client)",
        f"{url} (it connects there, as a wallbox does; no login)",
        {"charger": section},
        ["It tries to connect every 5 s: start pvcharge with this charger section (or evcc on this port)."],
    )


Built = HuaweiEmulator | SenecEmulator | AlphaEssEmulator | EaseeEmulator | WarpEmulator | TibberEmulator


def _build(kind: str, site: SiteModel, port: int, phase_switch: bool) -> Built:
    if kind == "huawei":
        return HuaweiEmulator(site, host=_LOOPBACK, port=port)
    if kind == "senec":
        return SenecEmulator(site, host=_LOOPBACK, port=port)
    if kind == "alphaess":
        # the cloud's own account limit as far as it is known (150 a minute passed a stress test)
        return AlphaEssEmulator(site, host=_LOOPBACK, port=port, app_secret=ALPHAESS_SECRET)
    if kind == "easee":
        return EaseeEmulator(site, host=_LOOPBACK, port=port, password=EASEE_PASSWORD)
    if kind == "tibber":
        # prices for today and tomorrow by the wall clock, as the planner asks for them
        return TibberEmulator(DayAheadMarket(), host=_LOOPBACK, port=port, clock=time.time)
    return WarpEmulator(site, host=_LOOPBACK, port=port, phase_switch=phase_switch)


def _describe(emu: Built, phase_switch: bool) -> Emulated:
    if isinstance(emu, HuaweiEmulator):
        return Emulated(
            "Huawei SUN2000 with power meter and LUNA2000 battery (Modbus TCP)",
            f"{emu.host}:{emu.port} (Modbus TCP, unit id {emu.unit_id}; 0 answers too)",
            {"meter": {"type": "huawei", "host": emu.host, "port": emu.port, "unit_id": emu.unit_id}},
            ["Other Modbus clients (Home Assistant, evcc): this host, port and unit id; no write access."],
        )
    if isinstance(emu, SenecEmulator):
        return Emulated(
            "SENEC.Home V3/V4 (lala.cgi over HTTPS)",
            f"{emu.url}/lala.cgi",
            {"meter": {"type": "senec", "host": emu.host, "port": emu.port, "ca_file": emu.ca_pem_path}},
            [
                "The certificate is for 127.0.0.1, localhost and ::1, from a throwaway CA (the ca_file,"
                " removed when the emulator stops).",
                f"Or pin it instead of ca_file: fingerprint_sha256: {emu.fingerprint_sha256}",
            ],
        )
    if isinstance(emu, AlphaEssEmulator):
        account = _flow(alphaess_account(emu, app_secret=ALPHAESS_SECRET))
        return Emulated(
            f"AlphaESS Open API with system {emu.sys_sn} and its wallbox {emu.evcharger_sn} (HTTP, signed)",
            emu.url,
            {"meter": {"type": "alphaess", **account}, "charger": {"type": "alphaess", **account}},
            [
                f"The emulator's rate limit: at most {emu.requests_per_window} requests of the account in any"
                f" {emu.window_s:g} s; more answer code 6053 (too fast).",
            ],
        )
    if isinstance(emu, EaseeEmulator):
        account = _flow(easee_account(emu, password=EASEE_PASSWORD))
        return Emulated(
            "Easee cloud API with one charger (HTTP)",
            emu.base_url,
            {"charger": {"type": "easee", **account}},
            [
                f"Its site id is {emu.site_id}, its circuit id {emu.circuit_id} (control: circuit_current).",
                f"The emulator's rate limits: {emu.settings_per_min} requests per minute on each settings "
                f"path and {emu.commands_per_min} charger commands per minute "
                f"({'all commands together' if emu.commands_share_budget else 'each command on its own'}); "
                "more answer HTTP 429.",
            ],
        )
    if isinstance(emu, TibberEmulator):
        return Emulated(
            "Tibber's GraphQL API with one home's prices, today's and tomorrow's from 13:00 (HTTP)",
            emu.url,
            {"tariff": {"source": "tibber", "token": emu.token, "url": emu.url}},
            ["The token is Tibber's public demo token; any other is refused (UNAUTHENTICATED)."],
        )
    section: dict[str, Any] = {"type": "warp", "url": emu.url}
    if phase_switch:
        section["phase_switching"] = True
    return Emulated(
        f"Tinkerforge WARP3 charger (local HTTP API{', phase switching' if phase_switch else ''})",
        emu.url,
        {"charger": section},
        ["Other clients (evcc, Home Assistant): this host and port, no login."],
    )
