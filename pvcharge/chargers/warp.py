"""Tinkerforge WARP2/WARP3 charger over its local HTTP API.

The HTTP client (requests, retries, HTTP 429) and the decoding of the endpoints' JSON (``evse/state``,
``meter/values``, ``meter/phases``, ``evse/low_level_state``, ``power_manager/state``, ``info/features``)
are in :mod:`pvcharge.clients.warp`; here is what the driver does with them.

Device facts (reference ``chargers.md`` §3; Tinkerforge esp32-firmware
``software/src/modules/{http,evse_common,meter}``; warp-charger ``api_doc_generator/evse.py``):

- ``evse/state.allowed_charging_current`` (mA) is the minimum over the active charging slots.
- ``evse/external_current`` ``{"current": mA}``: slot 8, meant for frequent PV control; 0 blocks,
  otherwise 6000..32000.  Firmware before Nov 2024 only honours it after
  ``evse/external_enabled {"enabled": true}``.
- ``meter/values`` and ``meter/phases`` answer 404 on a box without a meter.  Without ``meter/phases`` a
  charging car is reported on the phases ``evse/low_level_state.phases_current`` gives (with
  ``phase_switching``), else on 3 (an assumption).

Phase switching (WARP3/WARP4, ``phase_switching: true``; chargers.md §3.2–3.4): the box is asked for a
command's phases (``power_manager/external_control``) by :class:`~pvcharge.chargers.warp_phases.WarpPhases`
in :mod:`pvcharge.chargers.warp_phases` (imported only with ``phase_switching``); while it stays on other
phases the driver writes :func:`limit_current_ma`.

Waking a car that does not start (:meth:`WarpCharger.wake_up`; warp-charger ``api_doc_generator/evse.py``
``control_pilot_disconnect``, W-fw ``evse_v2``/``control_pilot_backend``): with the feature
``cp_disconnect`` in ``info/features`` (WARP2 and later), ``evse/control_pilot_disconnect`` ``{"disconnect":
bool}`` is R/W through ``evse/control_pilot_disconnect_update``; true fakes an unplugged cable.  The box
ignores the write while ``evse/management_enabled`` is on (its charge manager owns the CP).

Without ``phase_switching`` the driver reports ``phase_switching=False`` and ignores
``ChargerCommand.phases``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import httpx
import structlog

from pvcharge.clients.warp import (
    LinkSettings,
    WarpClient,
    parse_active_phases,
    parse_evse_state,
    parse_meter_power,
)
from pvcharge.errors import DeviceProtocolError, RateLimited, WriteDeferred
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading
from pvcharge.settings import setting

if TYPE_CHECKING:
    from pvcharge.chargers.warp_phases import WarpPhases

_log = structlog.get_logger(__name__)

#: lowest non-zero external current the box accepts, in mA (chargers.md §3.2, IEC 61851: 6 A).
MIN_CURRENT_MA = 6000
#: highest external current, in mA (chargers.md §3.2).
MAX_CURRENT_MA = 32000

#: what a WARP can do without phase switching; ``phase_switching`` follows the setting of that name.
CAPABILITIES = ChargerCapabilities(
    current_step_a=0.001,
    min_current_a=MIN_CURRENT_MA / 1000,
    max_current_a=MAX_CURRENT_MA / 1000,
    phase_switching=False,
    on_off_only=False,
)

#: how long a wake-up holds the control pilot disconnected, in s: openWB's hardware driver holds CP at
#: -12 V "for at least 3 seconds" (EV40 specification), evcc's ABL driver 3 s (evcc ``charger/openwb-hw.go``,
#: ``charger/abl-evcc.go``).
CP_DISCONNECT_S = 3.0


@dataclass(frozen=True)
class Config(LinkSettings):
    """Settings of one WARP charger (the ``charger:`` section with ``type: warp``): the HTTP link's
    (:class:`~pvcharge.clients.warp.LinkSettings`) and phase switching.

    Raises:
        SettingError: ``url`` is not ``http(s)://host[:port][/prefix]`` or holds credentials, or only
            one of ``username`` and ``password`` is set.
    """

    phase_switching: bool = setting(
        False,
        doc='WARP3/WARP4 whose energy manager has phase switching set to "external": pvcharge switches '
        "it between 1 and 3 phases (power_manager/external_control)",
    )


def create(config: Config, *, name: str, clock: Callable[[], float]) -> WarpCharger:
    """Build the driver; no I/O until the first :meth:`WarpCharger.read` or :meth:`WarpCharger.apply`."""
    return WarpCharger(config, name=name, clock=clock)


# -- pure mapping ---------------------------------------------------------------------------------


def reading_from_json(
    evse_state: object,
    meter_values: object | None,
    meter_phases: object | None,
    *,
    timestamp_s: float,
    box_phases: int | None = None,
) -> ChargerReading:
    """Build a canonical reading from the decoded answers of the three endpoints.

    Args:
        evse_state: the ``evse/state`` object.
        meter_values: the ``meter/values`` object, ``None`` on a box without a meter (power reads 0 W).
        meter_phases: the ``meter/phases`` object, ``None`` where the box has none or it was not asked.
        timestamp_s: when the answers arrived, seconds on the daemon's clock.
        box_phases: the phases the box's contactors are switched to (1 or 3,
            ``evse/low_level_state.phases_current``), where the driver knows them.

    Returns:
        The reading; ``phases`` is 0 while not charging.  While charging it is the number of
        ``phases_active`` the meter reports (0 right after the start, before the meter sees current);
        without ``meter/phases`` it is ``box_phases``, or 3 where that is not known either (an
        assumption, the box does not say).

    Raises:
        ValueError: a field is missing or malformed; the message names the endpoint and the field.
    """
    state = parse_evse_state(evse_state)
    power_w = 0.0 if meter_values is None else parse_meter_power(meter_values)
    if not state.charging:
        phases = 0
    elif meter_phases is None:
        phases = 3 if box_phases is None else box_phases
    else:
        phases = parse_active_phases(meter_phases)
    return ChargerReading(
        connected=state.connected,
        charging=state.charging,
        power_w=power_w,
        current_a=state.allowed_current_a,
        phases=phases,
        timestamp_s=timestamp_s,
        iec_state=state.iec_state,
    )


def limit_current_ma(current_ma: int, phases: int, box_phases: int) -> int:
    """The external current in mA for a box left on ``box_phases`` while the command was meant for
    ``phases``: never more current than commanded, nor more power (``current × phases``).

    On fewer phases than commanded the current stays (less power); on more phases it shrinks by
    ``phases / box_phases``, and to 0 (paused) where that falls below ``MIN_CURRENT_MA``.
    """
    if box_phases <= phases:
        return current_ma
    limited = current_ma * phases // box_phases
    return limited if limited >= MIN_CURRENT_MA else 0


# -- driver ---------------------------------------------------------------------------------------


class WarpCharger:
    """A Tinkerforge WARP2/WARP3 wallbox driven through slot 8 (``evse/external_current``), and with
    ``phase_switching`` through ``power_manager/external_control`` (WARP3/WARP4).

    Requests go through :class:`~pvcharge.clients.warp.WarpClient` (one keep-alive connection, retries,
    HTTP 429).

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: current in 1 mA steps, 0 or 6–32 A; ``phase_switching`` as configured.
        box_phases: with ``phase_switching``, the phases the box's contactors are switched to (1 or 3,
            ``evse/low_level_state.phases_current``) as last seen by :meth:`read` or :meth:`apply`;
            ``None`` before that and without phase switching.  ``read().phases`` is what the car draws.

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: seconds on the daemon's clock, for reading timestamps and the phase request back-off.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str,
        clock: Callable[[], float],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.capabilities = replace(CAPABILITIES, phase_switching=config.phase_switching)
        self._config = config
        self._clock = clock
        self._log = _log.bind(device=name)
        self._api = WarpClient(
            config,
            name=name,
            clock=clock,
            log=self._log,
            on_connection_lost=self._connection_lost,
            transport=transport,
        )
        self._base_url = self._api.base_url
        self._external_enabled_sent = False
        self._phases: WarpPhases | None = None  # with phase_switching: its state
        if config.phase_switching:
            from pvcharge.chargers.warp_phases import WarpPhases  # (only with phase_switching)

            self._phases = WarpPhases(self._api, name=name, clock=clock, log=self._log)
        self._sleep: Callable[[float], Awaitable[object]] = asyncio.sleep  # the CP disconnect's wait

    @property
    def box_phases(self) -> int | None:
        """With ``phase_switching``, the phases the box's contactors are switched to (see the class)."""
        return self._phases.box_phases if self._phases is not None else None

    async def read(self) -> ChargerReading:
        """Read ``evse/state``, ``meter/values`` and, while charging, ``meter/phases``; with
        ``phase_switching`` also ``evse/low_level_state`` (sets :attr:`box_phases`), after the
        once-per-connection preparation described in :meth:`apply`.

        Returns:
            ``connected`` (state B/C/D), ``charging`` (C/D), ``current_a`` = ``allowed_charging_current``
            / 1000 in A, ``power_w`` from the meter in W (0 without a meter), ``phases`` as described in
            :func:`reading_from_json` (what the car draws, also with phase switching), ``timestamp_s``
            from the clock once the answers are in.

        Raises:
            DeviceUnavailable: no answer (timeout, connection refused/dropped, reply cut off, HTTP 5xx)
                after retries; HTTP 429, or still waiting for its ``Retry-After`` (nothing sent).
            DeviceProtocolError: HTTP 401/400/404/other, a TLS failure, a body that is not JSON or a
                missing/malformed/impossible field; with ``phase_switching``, a box that does not offer it
                (the message says how to enable it).
        """
        if self._phases is not None:
            await self._phases.prepare()
        state = await self._api.get_json("evse/state")
        if state is None:
            raise self._api.not_found("GET", "evse/state", "is this a WARP charger?")
        try:
            charging = parse_evse_state(state).charging
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc
        values = await self._api.get_json("meter/values")
        if values is None:
            self._log.debug("warp.no_meter", url=self._base_url + "meter/values")
        phases = await self._api.get_json("meter/phases") if charging and values is not None else None
        box_phases = (await self._phases.read_state()).phases_current if self._phases is not None else None
        try:
            return reading_from_json(state, values, phases, timestamp_s=self._clock(), box_phases=box_phases)
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._base_url}: {exc}") from exc

    async def apply(self, command: ChargerCommand) -> None:
        """Set slot 8: POST ``evse/external_current`` ``{"current": mA}``, mA = round(current_a × 1000);
        with ``phase_switching`` first bring the box to ``command.phases``.

        0 A pauses.  The first apply on a connection (after creation, :meth:`close` or the box being
        unreachable, which may mean a reboot) first sends ``evse/external_enabled {"enabled": true}``
        (needed by firmware before Nov 2024; a 404 for it is fine).  Without ``phase_switching``,
        ``command.phases`` is ignored.

        With ``phase_switching`` (chargers.md §3.4), once per connection: check that ``info/name.type`` is
        warp3/warp4 and ``info/features`` lists ``phase_switch``, then POST ``evse/phase_auto_switch
        {"enabled": false}``; after a connection broke, send the last accepted ``phases_wanted`` again
        (as evcc does).  Then per apply, from ``evse/low_level_state``:

        - the box is on ``command.phases`` and not switching: write the current, done;
        - a switch to ``command.phases`` is in progress (``phases_state`` 1–7): no new request; write
          the current (the box applies it once the car is back) and raise ``WriteDeferred``;
        - otherwise, unless another switch is in progress or the last request was less than
          ``PHASE_REQUEST_INTERVAL_S`` ago: read ``power_manager/state.external_control``; on 0 or 1
          POST ``power_manager/external_control {"phases_wanted": 1|3}``, write the current and raise
          ``WriteDeferred`` until the switch is seen complete; on 2 (unavailable) or 3 (switching)
          send nothing.  A refusal (external_control 2/3 or HTTP 400 with the box's reason) is logged
          and raised as ``WriteDeferred``; every request, accepted or refused, holds the next one back
          ``PHASE_REQUEST_INTERVAL_S``.  A paused command (0 A) switches too.  While
          the box stays on other phases the current written is :func:`limit_current_ma` (never more
          current or power than commanded; 0 where that is below 6 A).

        Raises:
            ValueError: the current is neither 0 nor 6–32 A (checked before any I/O).
            WriteDeferred: with ``phase_switching``, the box is not on ``command.phases`` yet; the
                message says why; after a refusal ``retry_after_s`` is when the next phase request may
                go out (else 0).  The current was written all the same.  Or: HTTP 429, or still
                waiting for its ``Retry-After`` (``retry_after_s``); the current may not have been sent.
            DeviceUnavailable: no answer after retries.
            DeviceProtocolError: the box rejected the current (HTTP 400 with its reason), the login, or
                does not know an endpoint; with ``phase_switching``, a box that does not offer it.
        """
        current_ma = round(command.current_a * 1000)
        if current_ma != 0 and not MIN_CURRENT_MA <= current_ma <= MAX_CURRENT_MA:
            raise ValueError(
                f"{self.name}: current {command.current_a} A is neither 0 nor within "
                f"{MIN_CURRENT_MA / 1000:g}–{MAX_CURRENT_MA / 1000:g} A"
            )
        try:
            deferred = await self._apply(command.phases, current_ma)
        except RateLimited as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc
        if deferred is not None:
            raise deferred

    async def _apply(self, phases: int, current_ma: int) -> WriteDeferred | None:
        """The requests of :meth:`apply`; returns the ``WriteDeferred`` to raise, if any."""
        deferred: WriteDeferred | None = None
        if self._phases is not None:
            await self._phases.prepare()
            current_ma, deferred = await self._switch_phases(self._phases, phases, current_ma)
        if not self._external_enabled_sent:
            if await self._api.request("POST", "evse/external_enabled", {"enabled": True}) is None:
                self._log.debug("warp.external_enabled_missing", note="firmware without the endpoint")
            self._external_enabled_sent = True
        if await self._api.request("POST", "evse/external_current", {"current": current_ma}) is None:
            raise self._api.not_found("POST", "evse/external_current")
        self._log.debug("warp.applied", current_ma=current_ma)
        return deferred

    async def wake_up(self) -> None:
        """Wake a car that does not start: disconnect the control pilot for :data:`CP_DISCONNECT_S` (the
        car sees an unplug and a plug-in), then connect it again.

        GET ``info/features`` (must list ``cp_disconnect``), POST ``evse/control_pilot_disconnect_update
        {"disconnect": true}``, GET ``evse/control_pilot_disconnect`` to see that the box did it, wait,
        POST ``{"disconnect": false}`` (also when the wait is cancelled or the check fails).  Slot 8 is
        not touched: the car is offered what it was offered before, never more.

        Raises:
            WriteDeferred: HTTP 429, or still waiting for its ``Retry-After``.
            DeviceUnavailable: no answer after retries (the CP may be left disconnected: the car draws
                nothing; the next wake-up connects it again).
            DeviceProtocolError: no ``cp_disconnect`` feature (a WARP1), or the box ignored the
                disconnect (``evse/management_enabled`` on); other refusals as :meth:`apply`.
        """
        try:
            if not await self._api.has_feature("cp_disconnect"):
                raise DeviceProtocolError(
                    self.name,
                    "a wake-up needs a control-pilot disconnect, but 'cp_disconnect' is not in info/features "
                    "(a WARP1 has none); set charger.wake_up_attempts: 0",
                )
            await self._set_cp_disconnect(True)
            try:
                state = await self._api.get_json("evse/control_pilot_disconnect")
                if not isinstance(state, dict) or state.get("disconnect") is not True:
                    raise DeviceProtocolError(
                        self.name,
                        "the box did not disconnect the control pilot (evse/control_pilot_disconnect: "
                        f"{state!r}); it ignores the request while evse/management_enabled is on",
                    )
                await self._sleep(CP_DISCONNECT_S)
            finally:
                await self._set_cp_disconnect(False)
        except RateLimited as exc:
            raise WriteDeferred(self.name, exc.message, retry_after_s=exc.retry_after_s) from exc
        self._log.debug("warp.woken", cp_disconnect_s=CP_DISCONNECT_S)

    async def _set_cp_disconnect(self, disconnect: bool) -> None:
        path = "evse/control_pilot_disconnect_update"
        if await self._api.request("POST", path, {"disconnect": disconnect}) is None:
            raise self._api.not_found("POST", path)

    def forget(self) -> None:
        """Send ``external_enabled`` and the last ``phases_wanted`` again with the next apply."""
        self._external_enabled_sent = False
        if self._phases is not None:
            self._phases.forget()

    async def close(self) -> None:
        """Close the HTTP connection pool. Safe to call twice."""
        self._external_enabled_sent = False
        if self._phases is not None:
            self._phases.closed()
        await self._api.close()

    # -- phase switching --------------------------------------------------------------------------

    async def _switch_phases(
        self, switching: WarpPhases, phases: int, current_ma: int
    ) -> tuple[int, WriteDeferred | None]:
        """Bring the box toward ``phases`` (see :meth:`apply`): the current to write in mA, and the
        ``WriteDeferred`` to raise after writing it (``None`` once the box is on ``phases``)."""
        step = await switching.switch(phases)
        if step.why is None:
            return current_ma, None
        if not step.refused:
            return current_ma, WriteDeferred(self.name, f"{step.why}; {current_ma} mA once the car is back")
        limited_ma = limit_current_ma(current_ma, phases, step.box_phases)
        return limited_ma, WriteDeferred(
            self.name,
            f"not switched to {phases}p: {step.why}; {limited_ma} mA on {step.box_phases}p meanwhile",
            retry_after_s=step.retry_after_s,
        )

    # -- connection -------------------------------------------------------------------------------

    def _connection_lost(self) -> None:
        """The box did not answer and may reboot: on the next connection enable slot 8 again, redo the
        phase switching preparation and send the last ``phases_wanted`` again."""
        self._external_enabled_sent = False
        if self._phases is not None:
            self._phases.connection_lost()
