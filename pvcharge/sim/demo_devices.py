"""The devices of ``pvcharge demo``: which meters and chargers it can emulate, their emulators (the cloud
ones counting what they answer, :class:`Traffic`) and the config mappings that point the daemon at them.

Used by the demo run (:mod:`pvcharge.sim.demo`), the other demos and ``pvcharge emulate``; the
credentials here are the emulators' throwaway demo values, never real ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pvcharge.config import Config, parse_config
from pvcharge.control import ChargePoint
from pvcharge.sim import free_port
from pvcharge.sim.alphaess import AlphaEssEmulator
from pvcharge.sim.easee import EaseeEmulator
from pvcharge.sim.easee_charger import MAX_CHARGER_A
from pvcharge.sim.http import Handler, LoopbackHttpServer
from pvcharge.sim.huawei import HuaweiEmulator
from pvcharge.sim.ocpp import OcppChargePointEmulator, OcppTraffic
from pvcharge.sim.sections import EASEE_USERNAME, alphaess_account, easee_account
from pvcharge.sim.senec import SenecEmulator
from pvcharge.sim.site import SiteModel
from pvcharge.sim.warp import WarpEmulator

if TYPE_CHECKING:
    from pvcharge.sim.demo import SimClock


@dataclass
class Traffic:
    """What a cloud emulator answered during the demo: the requests its rate limits saw, the writes it
    accepted and the requests it refused.

    Attributes:
        name: e.g. ``"Easee cloud"``.
        requests: requests answered.
        writes: accepted writes by endpoint (the path's last segment), e.g.
            ``{"set_dynamic_charger_current": 17, "pause_charging": 1}`` or ``{"remoteControlEvCharger": 4}``.
        refused: refusals by kind: ``"HTTP 429"``, ``"HTTP 403"``, … or an AlphaESS return code
            (``"6053"`` too fast, ``"6008"`` set failed, …).
    """

    name: str
    requests: int = 0
    writes: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """For the summary, e.g. ``812 requests, writes: pause_charging 1; refused: none``."""
        writes = ", ".join(f"{k} {n}" for k, n in sorted(self.writes.items())) or "none"
        refused = ", ".join(f"{k} {n}" for k, n in sorted(self.refused.items())) or "none"
        return f"{self.requests} requests, writes: {writes}; refused: {refused}"


#: meters the demo can emulate
METERS = ("huawei", "senec", "alphaess")
#: chargers the demo can emulate
CHARGERS = ("warp", "easee", "alphaess", "ocpp")
DEMO_ALPHAESS_SECRET = "demo-secret"  # the emulator's app secret: a demo value, not a real credential
DEMO_EASEE_PASSWORD = "demo-password"  # the Easee emulator's password: a demo value, not a real credential
DEMO_OCPP_ID = "pvcharge-demo"  # the OCPP charge point's identity
#: the demo's charge point without ``--config``: 1-phase 6–16 A (an AlphaESS wallbox: 16 A on 1 phase, the
#: current set in its app)
DEMO_CHARGE_POINT = ChargePoint(min_current_a=6, max_current_a=16, phases=1)
DEMO_LIMITS = (
    f"phases: {DEMO_CHARGE_POINT.phases}, min_current_a: {DEMO_CHARGE_POINT.min_current_a:g}, "
    f"max_current_a: {DEMO_CHARGE_POINT.max_current_a:g}"
)


def demo_config(meter: str, charger_url: str, base: Config | None = None) -> Config:
    """A config whose ``meter`` section is the YAML flow mapping ``meter`` and whose charger is the WARP
    emulator at ``charger_url``; ``base`` (a user's file) supplies site, charger limits, control and
    log settings.  Without ``base`` the charge point is 1-phase 6–16 A: the bundled day's 4.6 kWp array
    never covers the 3-phase minimum of 4140 W for long."""
    return demo_config_for(meter, warp_charger(charger_url), base)


def demo_config_for(meter: str, charger: str, base: Config | None = None) -> Config:
    """As :func:`demo_config`, for any charger: ``charger`` is the charger mapping's keys without the
    charge point's limits (e.g. ``type: easee, url: '…', …``; see :func:`warp_charger`)."""
    text = f"""
meter: {meter}
charger: {{{charger}, {DEMO_LIMITS}}}
"""
    cfg = parse_config(text, "<demo>")
    if base is None:
        return cfg
    return dataclasses.replace(base, meter=cfg.meter, charger=cfg.charger)


def warp_charger(url: str) -> str:
    """The ``charger`` keys for the WARP emulator at ``url``."""
    return f'type: warp, url: "{url}", timeout_s: 2'


def huawei_meter(port: int) -> str:
    """The ``meter`` mapping for the Huawei emulator (no connect delay or request gap: it needs none)."""
    return (
        f"{{type: huawei, host: 127.0.0.1, port: {port}, unit_id: 1, connect_delay_s: 0, request_gap_s: 0,"
        " timeout_s: 2}"
    )


def alphaess_meter(alpha: AlphaEssEmulator) -> str:
    """The ``meter`` mapping for the AlphaESS emulator ``alpha`` (started)."""
    return f"{{type: alphaess, {alphaess_account(alpha, app_secret=DEMO_ALPHAESS_SECRET)}, timeout_s: 2}}"


@contextlib.asynccontextmanager
async def meter_emulator(kind: str, site: SiteModel, clock: SimClock) -> AsyncIterator[str]:
    """Run the emulator of meter ``kind`` and yield the ``meter`` config mapping that points at it."""
    if kind == "huawei":
        async with HuaweiEmulator(site) as huawei:
            yield huawei_meter(huawei.port)
    elif kind == "senec":
        async with SenecEmulator(site) as senec:
            yield (
                f"{{type: senec, host: 127.0.0.1, port: {senec.port}, ca_file: '{senec.ca_pem_path}',"
                " timeout_s: 2}"
            )
    elif kind == "alphaess":
        # the strictest account the client's request budget is made for: 5 requests in any 10 s (the
        # client counts each until after its answer, so the compressed clock's jitter does not matter)
        async with DemoAlphaEss(
            site, app_secret=DEMO_ALPHAESS_SECRET, clock=clock.now, window_s=10.0, requests_per_window=5
        ) as alpha:
            yield alphaess_meter(alpha)
    else:
        raise ValueError(f"unknown demo meter {kind!r}; expected one of {', '.join(METERS)}")


# -- the chargers' cloud emulators, counted -------------------------------------------------------


class _Counted(LoopbackHttpServer):
    """Counts what the emulator it is mixed into answers, in :attr:`traffic` (set by the subclass)."""

    traffic: Traffic

    def _application(self) -> web.Application:
        app = super()._application()
        # inside the fault middleware (start() puts it first), outside the emulator's own: sees every answer
        app.middlewares.insert(0, self._count)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        self.traffic.requests += 1
        refusal = self._refusal(response)
        if refusal is not None:
            self.traffic.refused[refusal] += 1
        elif self._is_write(request):
            self.traffic.writes[request.path.rstrip("/").rpartition("/")[2]] += 1
        return response

    def _refusal(self, response: web.StreamResponse) -> str | None:
        """What refused the request (``"HTTP 429"``, …), ``None`` if it was answered."""
        return f"HTTP {response.status}" if response.status >= 400 else None

    def _is_write(self, request: web.Request) -> bool:
        return False


class DemoEasee(_Counted, EaseeEmulator):
    """The Easee emulator on the demo's clock, counting its traffic; the circuit is wired for
    ``phases`` (1: P2 = P3 = 0, so a dynamic charger current is offered on one phase)."""

    def __init__(self, site: SiteModel, *, phases: int, **kwargs: Any) -> None:
        super().__init__(site, **kwargs)
        self.traffic = Traffic("Easee cloud")
        if phases == 1:
            self.circuit_a = (MAX_CHARGER_A, 0, 0)
            self._offer()

    def _is_write(self, request: web.Request) -> bool:
        return request.method == "POST" and not request.path.startswith("/api/accounts/")


class DemoAlphaEss(_Counted, AlphaEssEmulator):
    """The AlphaESS emulator on the demo's clock, counting its traffic; a reply with a return code
    other than 200 counts as refused by that code (``"6053"``, …)."""

    def __init__(self, site: SiteModel, **kwargs: Any) -> None:
        super().__init__(site, **kwargs)
        self.traffic = Traffic("AlphaESS cloud")

    def _refusal(self, response: web.StreamResponse) -> str | None:
        refused = super()._refusal(response)
        if refused is not None or not isinstance(response, web.Response) or response.text is None:
            return refused
        with contextlib.suppress(ValueError, AttributeError):
            code = json.loads(response.text).get("code")
            return None if code == 200 else str(code)
        return None

    def _is_write(self, request: web.Request) -> bool:
        return request.method == "POST"


@dataclass(frozen=True)
class Emulated:
    """Where the emulators of :func:`emulators` are, as config for the daemon."""

    meter: str  #: the meter mapping
    charger: str  #: the charger mapping's keys, without the charge point's limits
    charger_name: str
    traffic: Traffic | OcppTraffic | None


@contextlib.asynccontextmanager
async def emulators(
    meter: str, charger: str, site: SiteModel, clock: SimClock, charge_point: ChargePoint
) -> AsyncIterator[Emulated]:
    """Run the emulators of ``meter`` and ``charger`` (one for an AlphaESS meter and wallbox: one
    account) and yield where they are."""
    if charger not in CHARGERS:
        raise ValueError(f"unknown demo charger {charger!r}; expected one of {', '.join(CHARGERS)}")
    phases = 3 if charge_point.phases == "auto" else int(charge_point.phases)
    share = meter == charger == "alphaess"  # one emulator, one account
    async with contextlib.AsyncExitStack() as stack:
        if not share:
            meter_section = await stack.enter_async_context(meter_emulator(meter, site, clock))
        if charger == "warp":
            warp = await stack.enter_async_context(WarpEmulator(site, phases_connected=phases))
            yield Emulated(meter_section, warp_charger(warp.url), f"charger warp {warp.url}", None)
        elif charger == "easee":
            # the cloud's rate limits and token lifetime in simulated seconds, as the driver's budgets are
            easee = await stack.enter_async_context(
                DemoEasee(
                    site,
                    phases=phases,
                    username=EASEE_USERNAME,
                    password=DEMO_EASEE_PASSWORD,
                    clock=clock.now,
                )
            )
            keys = f"type: easee, {easee_account(easee, password=DEMO_EASEE_PASSWORD)}, timeout_s: 2"
            if charge_point.phases == "auto":  # 1p/3p through the circuit's phase limits
                keys += (
                    f", control: circuit_current, site_id: {easee.site_id}, circuit_id: {easee.circuit_id},"
                    " phase_switching: true"
                )
            yield Emulated(meter_section, keys, f"charger easee {easee.url}", easee.traffic)
        elif charger == "ocpp":
            # the charge point connects to pvcharge: a port that was free a moment ago, which the driver
            # listens on from the daemon's first cycle; the emulator tries again every 5 simulated s
            port = free_port()
            auto = charge_point.phases == "auto"
            ocpp = await stack.enter_async_context(
                OcppChargePointEmulator(
                    site,
                    f"ws://127.0.0.1:{port}/{DEMO_OCPP_ID}",
                    phases_connected=phases,
                    phase_switch=auto,
                    sleep=clock.sleep,
                )
            )
            keys = f"type: ocpp, charge_point_id: {DEMO_OCPP_ID}, port: {port}, meter_interval_s: 5"
            if auto:
                keys += ", phase_switching: true"
            yield Emulated(meter_section, keys, f"charger ocpp ws://127.0.0.1:{port}", ocpp.traffic)
        else:
            # the wallbox charges at the current and on the phases set in the AlphaESS app: the charge
            # point's maximum.  Its polls ask two endpoints (three on the first), one more on an account
            # shared with the meter; the account allows 5 requests in any 10 s, as for the meter
            alpha = await stack.enter_async_context(
                DemoAlphaEss(
                    site,
                    app_secret=DEMO_ALPHAESS_SECRET,
                    clock=clock.now,
                    window_s=10.0,
                    requests_per_window=5,
                    min_write_interval_s=5.0,
                    wallbox_current_a=charge_point.max_current_a,
                    wallbox_phases=phases,
                )
            )
            if share:
                meter_section = alphaess_meter(alpha)
            keys = f"type: alphaess, {alphaess_account(alpha, app_secret=DEMO_ALPHAESS_SECRET)}, timeout_s: 2"
            yield Emulated(meter_section, keys, f"charger alphaess {alpha.url}", alpha.traffic)
