"""OCPP 1.6J charge point emulator: a wallbox that connects to a central system, the site's car behind it.

For OCPP the wallbox is the client: the emulator connects to ``ws://HOST:PORT/<charge point id>``
(subprotocol ``ocpp1.6``, with HTTP Basic login when given a password) and reconnects after a lost
connection, as a real box does.  It speaks through the mobilityhouse ``ocpp`` library (``ocpp.v16``), the
same that pvcharge's central system uses, so every message in both directions is checked against the
OCPP 1.6 JSON schemas.

What it does (OCPP 1.6 edition 2, §4–§5, §9):

- on connect: BootNotification, then a StatusNotification for its connector;
- a car plugged in (the site model's plug-in window): Authorize and StartTransaction with its id tag,
  then StatusNotification Charging while the car draws, SuspendedEVSE while the offered current is below
  6 A (a 0 A profile), SuspendedEV while the car takes nothing although offered; unplugged:
  StopTransaction and Available;
- MeterValues every ``MeterValueSampleInterval`` during a transaction, with the measurands set in
  ``MeterValuesSampledData``: Power.Active.Import (W), Current.Import per phase (A), Current.Offered (A),
  Energy.Active.Import.Register (Wh), SoC (%);
- answers GetConfiguration, ChangeConfiguration (the two meter keys; read-only keys Rejected, unknown
  ones NotSupported), TriggerMessage (BootNotification, Heartbeat, MeterValues, StatusNotification),
  ClearChargingProfile, RemoteStartTransaction (the next transaction starts with its id tag),
  RemoteStopTransaction (the transaction stops until unplugged or started remotely), and
  SetChargingProfile: a TxDefaultProfile or TxProfile in the allowed unit becomes the site's offered
  current (its first period's limit; 0 outside a transaction) on its ``numberPhases`` (where the box
  switches phases; else a ``numberPhases`` other than its wiring is Rejected).  Without a profile the
  box offers its ``max_current_a``.  Profiles survive a lost connection.

The wallbox itself (its configuration keys, profiles, offer, status and meter samples) is
:class:`~pvcharge.sim.ocpp_wallbox.OcppWallbox`, which the emulator inherits and connects.

Not emulated: schedules with more than one period, stack levels and ``validTo`` (the newest profile
wins), reservations, local authorization lists, firmware and diagnostics, security profiles 2 and 3.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlsplit

from ocpp.routing import after
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.headers import build_authorization_basic

from pvcharge.clients.ocpp import SUBPROTOCOL, handles, utc_now
from pvcharge.settings import is_loopback
from pvcharge.sim.ocpp_wallbox import OcppWallbox
from pvcharge.sim.site import SiteModel

_Hook = TypeVar("_Hook", bound=Callable[..., Any])


def _after(action: Action) -> Callable[[_Hook], _Hook]:
    return cast(Callable[[_Hook], _Hook], after(action))


@dataclass
class OcppTraffic:
    """What the charge point sent and what it answered to the central system's calls.

    Attributes:
        name: the label of the demo's summary line.
        sent: calls the charge point sent, by action.
        accepted: the central system's calls it accepted, by action.
        refused: the calls it refused, by ``"<action> <status>"`` (e.g. ``"SetChargingProfile Rejected"``).
        connections: connections opened.
        refused_logins: connections the central system refused (HTTP 401/404).
    """

    name: str = "OCPP charge point"
    sent: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    refused_logins: int = 0

    def line(self) -> str:
        """For the demo's summary, e.g. ``sent MeterValues 300, ...; accepted SetChargingProfile 12; ...``."""

        def items(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(counter.items())) or "none"

        return (
            f"{self.connections} connection(s); sent {items(self.sent)}; accepted {items(self.accepted)}; "
            f"refused {items(self.refused)}"
        )


class _Box(ChargePoint):  # type: ignore[misc]  # the ocpp library has no type information
    """The charge point's side of one connection: answers the central system's calls."""

    def __init__(self, emulator: OcppChargePointEmulator, connection: ClientConnection) -> None:
        super().__init__(emulator.charge_point_id, connection, response_timeout=10)
        self.emu = emulator
        self.connection = connection

    def _answer(self, action: str, status: str) -> str:
        if status == "Accepted":
            self.emu.traffic.accepted[action] += 1
        else:
            self.emu.traffic.refused[f"{action} {status}"] += 1
        return status

    @handles(Action.get_configuration)
    def _get_configuration(self, key: list[str] | None = None, **kwargs: Any) -> Any:
        self.emu.traffic.accepted["GetConfiguration"] += 1
        known = self.emu.configuration()
        wanted = key or list(known)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": known[k][1], "value": known[k][0]} for k in wanted if k in known
            ],
            unknown_key=[k for k in wanted if k not in known] or None,
        )

    @handles(Action.change_configuration)
    def _change_configuration(self, key: str, value: str, **kwargs: Any) -> Any:
        return call_result.ChangeConfiguration(
            status=self._answer("ChangeConfiguration", self.emu.change(key, value))
        )

    @handles(Action.set_charging_profile)
    def _set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **kwargs: Any
    ) -> Any:
        status = self.emu.set_profile(connector_id, cs_charging_profiles)
        return call_result.SetChargingProfile(status=self._answer("SetChargingProfile", status))

    @handles(Action.clear_charging_profile)
    def _clear_charging_profile(self, **kwargs: Any) -> Any:
        self.emu.clear_profile()
        return call_result.ClearChargingProfile(status=self._answer("ClearChargingProfile", "Accepted"))

    @handles(Action.trigger_message)
    def _trigger_message(self, requested_message: str, **kwargs: Any) -> Any:
        known = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")
        status = "Accepted" if requested_message in known else "NotImplemented"
        return call_result.TriggerMessage(status=self._answer("TriggerMessage", status))

    @_after(Action.trigger_message)
    async def _triggered(self, requested_message: str, **kwargs: Any) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone
            await self.emu.send_triggered(requested_message)

    @handles(Action.remote_start_transaction)
    def _remote_start(self, id_tag: str, **kwargs: Any) -> Any:
        self.emu.remote_start_tag = id_tag
        self.emu.stop_requested = False
        return call_result.RemoteStartTransaction(status=self._answer("RemoteStartTransaction", "Accepted"))

    @handles(Action.remote_stop_transaction)
    def _remote_stop(self, transaction_id: int, **kwargs: Any) -> Any:
        status = "Accepted" if transaction_id == self.emu.transaction_id else "Rejected"
        if status == "Accepted":
            self.emu.stop_requested = True
        return call_result.RemoteStopTransaction(status=self._answer("RemoteStopTransaction", status))


class OcppChargePointEmulator(OcppWallbox):
    """An OCPP 1.6J wallbox at the simulated site, connecting to the central system at ``url``.

    Args:
        site: the simulated site; the emulator calls ``site.offer()`` when a profile is accepted and reads
            ``site.state()`` for its reports.  Whoever owns the clock calls ``site.advance()``.
        url: ``ws://HOST:PORT/<charge point id>`` of the central system; the last path segment is the id.
        password: the HTTP Basic password (security profile 1), ``None`` to connect without a login.
        connector_id: its one connector's id.
        phases_connected: phases the box is wired with (1 or 3).
        phase_switch: it switches 1p/3p by ``numberPhases`` (``ConnectorSwitch3to1PhaseSupported``).
        rate_unit: ``"Current"`` or ``"Power"``: ``ChargingScheduleAllowedChargingRateUnit``.
        max_current_a: what it offers without a profile, in A.
        id_tag: the tag it authorizes transactions with.
        vendor: its BootNotification ``chargePointVendor`` (e.g. ``"ABB"`` to get ABB's quirks applied).
        stack_level_zero: reject profiles with a stack level above 0, as ABB's Terra AC does.
        sleep: sleeps simulated seconds (the demo's clock); ``asyncio.sleep`` by default.
        tick_s: how often it looks at the car, in simulated s.
        reconnect_s: wait before connecting again, in simulated s.
        allow_remote: allow a central system that is not on loopback (``pvcharge emulate``).

    Knobs, settable at any time:
        reject_profiles: answer every SetChargingProfile Rejected.
        meter_values: ``False`` sends no MeterValues (triggered ones neither), like a box whose meter hangs.

    Attributes:
        traffic: what it sent and answered (:class:`OcppTraffic`).
        profiles: every accepted profile (``csChargingProfiles``, snake_case) in order.
        limit_a: the limit of the profile in force in A (``None``: no profile, it offers ``max_current_a``).
        phases: the phases it offers on.
        connected: set while a connection is open.
        last_refusal: the HTTP status of the last refused connection attempt (401, 404), ``None`` if none.

    Raises:
        ValueError: ``url`` is not ``ws://`` on loopback (without ``allow_remote``), or other bad arguments.
    """

    def __init__(
        self,
        site: SiteModel,
        url: str,
        *,
        password: str | None = None,
        connector_id: int = 1,
        phases_connected: int = 3,
        phase_switch: bool = False,
        rate_unit: str = "Current",
        max_current_a: float = 32.0,
        id_tag: str = "pvcharge-emulator",
        vendor: str = "pvcharge",
        stack_level_zero: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tick_s: float = 1.0,
        reconnect_s: float = 5.0,
        allow_remote: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"expected ws://HOST:PORT/<charge point id>, got {url!r}")
        if not is_loopback(parts.hostname) and not allow_remote:
            raise ValueError(f"{parts.hostname} is not a loopback address; the emulator is a test double")
        self.url = url
        self.charge_point_id = parts.path.rstrip("/").rpartition("/")[2]
        self.password = password
        self.id_tag = id_tag
        self.vendor = vendor
        self.tick_s = tick_s
        self.reconnect_s = reconnect_s
        self.meter_values = True
        self._online = True
        self.traffic = OcppTraffic()
        self.connected = asyncio.Event()
        self.last_refusal: int | None = None
        self.remote_start_tag: str | None = None
        self.stop_requested = False
        self._sleep = sleep
        self._status: str | None = None
        self._box: _Box | None = None
        self._task: asyncio.Task[None] | None = None
        OcppWallbox.__init__(
            self,
            site,
            connector_id=connector_id,
            phases_connected=phases_connected,
            phase_switch=phase_switch,
            rate_unit=rate_unit,
            max_current_a=max_current_a,
            stack_level_zero=stack_level_zero,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Close the connection and stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def disconnect(self) -> None:
        """Close the connection (going away) and stay away until :meth:`reconnect`."""
        self._online = False
        box = self._box
        if box is not None:
            await box.connection.close(1001, "going away")

    def reconnect(self) -> None:
        """Connect again (within ``reconnect_s``)."""
        self._online = True

    async def _run(self) -> None:
        while True:
            if self._online:
                try:
                    await self._connect_once()
                except InvalidStatus as exc:
                    self.last_refusal = exc.response.status_code
                    self.traffic.refused_logins += 1
                except (OSError, WebSocketException, TimeoutError):
                    pass
            await self._sleep(self.reconnect_s)

    async def _connect_once(self) -> None:
        headers = {}
        if self.password is not None:
            headers["Authorization"] = build_authorization_basic(self.charge_point_id, self.password)
        async with connect(
            self.url, subprotocols=[SUBPROTOCOL], additional_headers=headers, open_timeout=10
        ) as connection:
            self.last_refusal = None
            self.traffic.connections += 1
            box = _Box(self, connection)
            self._box = box
            listener = asyncio.create_task(box.start())
            worker = asyncio.create_task(self._work(box))
            self.connected.set()
            try:
                await asyncio.wait({listener, worker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.connected.clear()
                self._box = None
                for task in (listener, worker):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                        await task

    # -- what the box sends ---------------------------------------------------------------------

    async def _call(self, payload: Any) -> Any:
        box = self._box
        if box is None:
            raise ConnectionError("not connected")
        self.traffic.sent[type(payload).__name__] += 1
        return await box.call(payload)

    async def _work(self, box: _Box) -> None:
        """Boot, then follow the car: status, transactions and meter values."""
        await self._boot()
        self._status = None
        next_meter_s = -float("inf")
        while True:
            state = self.site.state()
            await self._follow_car()
            if self.transaction_id is not None and state.t_s >= next_meter_s and self._online:
                next_meter_s = state.t_s + self.meter_interval_s
                await self._send_meter_values()
            await self._sleep(self.tick_s)

    async def _follow_car(self) -> None:
        plugged = self.site.state().car_connected
        if plugged and self.transaction_id is None and not self.stop_requested:
            tag = self.remote_start_tag or self.id_tag
            auth = await self._call(call.Authorize(id_tag=tag))
            if auth.id_tag_info.get("status") == "Accepted":
                started = await self._call(
                    call.StartTransaction(
                        connector_id=self.connector_id,
                        id_tag=tag,
                        meter_start=round(self._energy()),
                        timestamp=utc_now(),
                    )
                )
                if started.id_tag_info.get("status") == "Accepted":
                    self.transaction_id = started.transaction_id
                    self._offer()
        if self.transaction_id is not None and (not plugged or self.stop_requested):
            await self._call(
                call.StopTransaction(
                    meter_stop=round(self._energy()),
                    timestamp=utc_now(),
                    transaction_id=self.transaction_id,
                    reason="EVDisconnected" if not plugged else "Remote",
                )
            )
            self.transaction_id = None
            self._offer()
        if not plugged:
            self.stop_requested = False
        status = self._wanted_status()
        if status != self._status:
            await self._send_status(status)

    async def _send_status(self, status: str) -> None:
        self._status = status
        await self._call(
            call.StatusNotification(
                connector_id=self.connector_id, error_code="NoError", status=status, timestamp=utc_now()
            )
        )

    async def _send_meter_values(self) -> None:
        if not self.meter_values:
            return
        await self._call(
            call.MeterValues(
                connector_id=self.connector_id,
                transaction_id=self.transaction_id,
                meter_value=[{"timestamp": utc_now(), "sampled_value": self._samples()}],
            )
        )

    async def send_triggered(self, message: str) -> None:
        """Send the message a TriggerMessage asked for."""
        if message == "StatusNotification":
            await self._send_status(self._wanted_status())
        elif message == "MeterValues":
            await self._send_meter_values()
        elif message == "Heartbeat":
            await self._call(call.Heartbeat())
        elif message == "BootNotification":
            await self._boot()

    async def _boot(self) -> None:
        await self._call(
            call.BootNotification(charge_point_model="OCPP emulator", charge_point_vendor=self.vendor)
        )
