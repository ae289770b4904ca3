"""Any OCPP 1.6J wallbox, with pvcharge as its local central system (smart charging by charging profiles).

The wallbox connects to pvcharge (``ws://HOST:PORT/<charge_point_id>``, see
:mod:`pvcharge.clients.ocpp`); pvcharge never connects to it.  What its reports mean, the profile
pvcharge sends and the vendor quirks are in :mod:`pvcharge.chargers.ocpp_mapping`.  The sequence (OCPP
1.6 edition 2, §4, §5, §9; evcc ``charger/ocpp*.go``):

- Once per connection the driver reads ``GetConfiguration`` (``ChargingScheduleAllowedChargingRateUnit``,
  ``ConnectorSwitch3to1PhaseSupported``, ``ChargeProfileMaxStackLevel``, ``SupportedFeatureProfiles``),
  sets ``MeterValuesSampledData`` (:data:`MEASURANDS`; one by one where the set is refused, as evcc
  ``cp_setup.go`` does) and ``MeterValueSampleInterval`` by ChangeConfiguration, asks for a
  StatusNotification by TriggerMessage, and sends the last command again (the box may have rebooted).
- Control (§5.16): ``SetChargingProfile`` on the connector with the ``TxDefaultProfile`` of
  :func:`~pvcharge.chargers.ocpp_mapping.charging_profile`, from a minute ago (evcc's default), at the
  box's ``ChargeProfileMaxStackLevel`` (0 for ABB); ``numberPhases`` only with ``phase_switching``.
- A profile the box answers Rejected or NotSupported is a ``DeviceProtocolError`` naming it; the same
  profile is not sent again on that connection for :data:`REJECTED_RETRY_S` (the daemon retries a failed
  write every cycle).  A refused limit below the one the box holds (its last accepted one, or its own
  maximum before any) would leave the car charging above the command: the driver then stops the running
  transaction by RemoteStopTransaction (§5.12), and once a limit above 0 A is accepted again starts it by
  RemoteStartTransaction (§5.11) with the alphabetically first of ``id_tags`` (or
  ``pvcharge``).

Stale data: a charge point that is not connected, or whose connector has not reported its status yet,
reads as ``DeviceUnavailable`` (the daemon then treats the charger as stale and, once it reads again,
sends its command anew).  While charging, MeterValues older than 2 × ``meter_interval_s`` are asked for
by TriggerMessage (§5.17, at most once per interval); older than 3 × ``meter_interval_s`` + 10 s the read
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog
from ocpp.v16 import call

from pvcharge.chargers.ocpp_mapping import (
    BoxConfiguration,
    VendorQuirks,
    charging_profile,
    parse_configuration,
    quirks_for,
    reading_from_state,
)
from pvcharge.clients.ocpp import CentralSystem
from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.readings import ChargerCapabilities, ChargerCommand, ChargerReading
from pvcharge.settings import Secret, SettingError, is_loopback, setting

_log = structlog.get_logger(__name__)

#: what an OCPP box can do: limits in 0.1 A (§7.8), 6–32 A (IEC 61851 and a 32 A box); phase switching
#: follows the setting.
CAPABILITIES = ChargerCapabilities(
    current_step_a=0.1, min_current_a=6.0, max_current_a=32.0, phase_switching=False, on_off_only=False
)
#: a rejected profile is not sent again on the same connection before this, in s.
REJECTED_RETRY_S = 60.0
#: how long the setup of a first connection waits for the box's BootNotification (its vendor), in s.
BOOT_WAIT_S = 5.0
#: the id tag of a RemoteStartTransaction when ``id_tags`` lists none (evcc sends "evcc").
REMOTE_ID_TAG = "pvcharge"
#: the measurands pvcharge asks for in MeterValuesSampledData (§9.1.18, §7.31 Measurand).
MEASURANDS = (
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Energy.Active.Import.Register",
    "SoC",
)


@dataclass(frozen=True)
class Config:
    """Settings of an OCPP charger (the ``charger:`` section with ``type: ocpp``).

    Raises:
        SettingError: only one of ``tls_cert_file`` and ``tls_key_file``;
            ``charge_point_id`` is empty or holds ``/``; ``password`` is missing while
            ``listen`` is not a loopback address, or empty.
    """

    charge_point_id: str = setting(
        doc="the charge point's identity: the last part of the URL the wallbox connects to"
    )
    listen: str = setting("127.0.0.1", doc="address to listen on for the wallbox (0.0.0.0: every interface)")
    port: int = setting(
        8887, doc="TCP port the wallbox connects to (0: any free one, for tests)", min=0, max=65535
    )
    connector_id: int = setting(1, doc="the connector (outlet) to drive", min=1, max=100)
    password: Secret | None = setting(
        None,
        doc="HTTP Basic password of security profile 1 (the box's AuthorizationKey); required off loopback",
    )
    id_tags: str | None = setting(
        None, doc="comma-separated RFID/id tags accepted in Authorize and StartTransaction (default: all)"
    )
    meter_interval_s: int = setting(
        5, doc="MeterValueSampleInterval asked of the box: as control.interval_s", unit="s", min=1, max=900
    )
    phase_switching: bool = setting(
        False, doc="the box switches 1p/3p by numberPhases in the profile (ConnectorSwitch3to1PhaseSupported)"
    )
    timeout_s: float = setting(10.0, doc="time the box has to answer one call", unit="s", min=1.0, max=60.0)
    tls_cert_file: str | None = setting(
        None, doc="PEM certificate (chain) to serve wss:// with (security profile 2); with tls_key_file"
    )
    tls_key_file: str | None = setting(None, doc="PEM private key of tls_cert_file")

    def __post_init__(self) -> None:
        if not self.charge_point_id.strip() or "/" in self.charge_point_id:
            raise SettingError("charge_point_id", f"expected the wallbox's id, got {self.charge_point_id!r}")
        if self.password is not None and not self.password.reveal():
            raise SettingError("password", "empty; set the password configured in the wallbox")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise SettingError(missing, "tls_cert_file and tls_key_file must be set together")
        if self.password is None and not is_loopback(self.listen):
            raise SettingError(
                "password",
                f"required when listen is not a loopback address (listen: {self.listen}): anyone on the "
                "network could pose as the wallbox; set password (or password_file) here and as the "
                "wallbox's OCPP password (security profile 1), or listen on 127.0.0.1",
            )

    def accepted_id_tags(self) -> frozenset[str] | None:
        """The ``id_tags`` as a set, ``None`` for all."""
        if self.id_tags is None:
            return None
        return frozenset(t.strip() for t in self.id_tags.split(",") if t.strip())


def create(config: Config, *, name: str, clock: Callable[[], float]) -> OcppCharger:
    """Build the driver; it listens from the first :meth:`OcppCharger.read` or :meth:`OcppCharger.apply`."""
    return OcppCharger(config, name=name, clock=clock)


# -- driver ---------------------------------------------------------------------------------------


class OcppCharger:
    """An OCPP 1.6J charge point driven by a TxDefaultProfile (see the module docstring).

    Attributes:
        name: the configured device name, used in every error and log line.
        capabilities: 0.1 A steps, 0 or 6–32 A; ``phase_switching`` as configured.
        central: the :class:`~pvcharge.clients.ocpp.CentralSystem` (its ``traffic``, ``boot``, ``url``).
        box: what the box's GetConfiguration said on this connection, ``None`` before it.
        quirks: the :data:`~pvcharge.chargers.ocpp_mapping.VENDOR_QUIRKS` entry of the box's vendor (from
            its BootNotification), if any: ABB gets stack level 0, Easee a MeterValueSampleInterval of at
            least 30 s.
        soc_pct: the car's SoC in % where the box sends it (``None`` otherwise).
        energy_wh: the box's energy register in Wh where sent.

    Args:
        config: the validated settings.
        name: device name for errors and logs.
        clock: seconds on the daemon's clock (reading timestamps, staleness).
    """

    def __init__(self, config: Config, *, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self.capabilities = replace(CAPABILITIES, phase_switching=config.phase_switching)
        self._config = config
        self._clock = clock
        self._log = _log.bind(device=name)
        self.central = CentralSystem(
            host=config.listen,
            port=config.port,
            charge_point_id=config.charge_point_id,
            connector_id=config.connector_id,
            password=config.password.reveal() if config.password is not None else None,
            id_tags=config.accepted_id_tags(),
            name=name,
            clock=clock,
            response_timeout_s=config.timeout_s,
            tls=(config.tls_cert_file, config.tls_key_file)
            if config.tls_cert_file is not None and config.tls_key_file is not None
            else None,
        )
        self.box: BoxConfiguration | None = None
        self._prepared = 0  # the connection (CentralSystem.generation) the setup ran on
        self._accepted: ChargerCommand | None = None  # the last command the box accepted
        self._accepted_on = 0  # ... on this connection
        self._wanted: ChargerCommand | None = None  # the last command asked for, sent or not
        self._rejected: tuple[ChargerCommand, int, float] | None = None  # command, connection, until
        self._next_trigger_s = -math.inf
        self._listened = False
        self.quirks: VendorQuirks | None = None
        self._meter_interval_s = config.meter_interval_s
        self._setup_lock = asyncio.Lock()
        self._stopped = False  # pvcharge stopped the transaction (RemoteStopTransaction) after a refusal

    @property
    def soc_pct(self) -> float | None:
        return self.central.state.samples.get("SoC")

    @property
    def energy_wh(self) -> float | None:
        return self.central.state.samples.get("Energy.Active.Import.Register")

    async def listen(self) -> str:
        """Start listening (as the first read does, which then waits ``timeout_s`` for the box to
        connect; after this method it does not) and return the URL the box is to connect to.

        Raises:
            DeviceUnavailable: the address cannot be bound.
        """
        await self.central.start()
        self._listened = True
        return self.central.url

    async def read(self) -> ChargerReading:
        """The connector's state from the box's last reports (see
        :func:`~pvcharge.chargers.ocpp_mapping.reading_from_state`).

        ``timestamp_s`` is when the last MeterValues arrived while charging, else now (the box reports
        every change of status itself).  The first read on a connection runs the setup of the module
        docstring, which ends by sending the last command asked for (applied or not) again.

        Raises:
            DeviceUnavailable: the box is not connected (the first read waits ``timeout_s`` for it), has
                not sent its status within ``timeout_s`` of the connection, does not answer
                the setup, or sent no MeterValues for 3 × ``meter_interval_s`` + 10 s while charging.
            DeviceProtocolError: an unknown status, a malformed value, or the box lacks what
                ``phase_switching`` needs.
        """
        await self._prepare()
        state = self.central.state
        if state.status is None:  # asked for by the setup: it comes right after the connection
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.central.status_event.wait(), self._config.timeout_s)
        if state.status is None:
            raise DeviceUnavailable(
                self.name, f"connector {self._config.connector_id} has sent no StatusNotification yet"
            )
        now = self._clock()
        timestamp_s = now
        if state.status == "Charging":
            since_s = max(state.meter_at_s or -math.inf, state.charging_since_s or -math.inf)
            age_s = now - since_s
            interval_s = self._meter_interval_s
            if age_s > 3 * interval_s + 10:
                raise DeviceUnavailable(
                    self.name, f"no MeterValues for {age_s:.0f} s while charging (asked every {interval_s} s)"
                )
            if age_s > 2 * interval_s and now >= self._next_trigger_s:
                self._next_trigger_s = now + interval_s
                await self._trigger("MeterValues")
            timestamp_s = state.meter_at_s if state.meter_at_s is not None else since_s
        accepted = self._accepted
        try:
            return reading_from_state(
                state,
                limit_a=accepted.current_a if accepted is not None else 0.0,
                limit_phases=accepted.phases if accepted is not None else None,
                timestamp_s=timestamp_s,
            )
        except ValueError as exc:
            raise DeviceProtocolError(self.name, str(exc)) from exc

    async def apply(self, command: ChargerCommand) -> None:
        """Send a TxDefaultProfile limiting the connector to ``command.current_a`` (0 pauses); with
        ``phase_switching`` with ``numberPhases`` = ``command.phases``.  Nothing is sent when the box
        accepted this very command on this connection already (the connection's setup resends the last
        command) and :meth:`forget` was not called since.

        Raises:
            ValueError: the current is neither 0 nor within 6–32 A (before any I/O).
            DeviceUnavailable: the box is not connected or did not answer.
            DeviceProtocolError: the box answered Rejected or NotSupported (or a CALLERROR); the same
                profile then goes out again on this connection only after :data:`REJECTED_RETRY_S`.
        """
        caps = self.capabilities
        if command.current_a != 0 and not caps.min_current_a <= command.current_a <= caps.max_current_a:
            raise ValueError(
                f"{self.name}: current {command.current_a} A is neither 0 nor within "
                f"{caps.min_current_a:g}–{caps.max_current_a:g} A"
            )
        self._wanted = command
        await self._prepare()
        if self._accepted_on != self.central.generation or self._accepted != command:
            await self._send_profile(command)

    async def _send_profile(self, command: ChargerCommand) -> None:
        generation = self.central.generation
        what = self._describe(command)
        rejected = self._rejected
        if rejected is not None and rejected[:2] == (command, generation) and self._clock() < rejected[2]:
            raise DeviceProtocolError(
                self.name,
                f"SetChargingProfile {what}: rejected by the charge point; not sent again before "
                f"{rejected[2] - self._clock():.0f} s",
            )
        box = self.box or BoxConfiguration()
        phases = command.phases if self._config.phase_switching else None
        profile = charging_profile(
            command.current_a,
            phases,
            unit=box.rate_unit,
            stack_level=0
            if self.quirks is not None and self.quirks.stack_level_zero
            else box.max_stack_level,
            start=datetime.now(UTC) - timedelta(minutes=1),
            power_phases=command.phases,
        )
        result = await self.central.call(
            call.SetChargingProfile(connector_id=self._config.connector_id, cs_charging_profiles=profile)
        )
        if result.status != "Accepted":
            self._rejected = (command, generation, self._clock() + REJECTED_RETRY_S)
            self._log.warning("ocpp.profile_rejected", profile=what, status=result.status)
            stopped = ""
            if self._below_accepted(command) and await self._remote_stop():
                stopped = "; the box may charge above it: its transaction was stopped (RemoteStopTransaction)"
            raise DeviceProtocolError(
                self.name, f"SetChargingProfile {what}: {result.status} by the charge point{stopped}"
            )
        self._rejected = None
        self._accepted, self._accepted_on = command, generation
        self._log.debug("ocpp.profile_accepted", profile=what)
        if command.current_a > 0 and self._stopped and self.central.state.transaction_id is None:
            await self._remote_start()

    def _below_accepted(self, command: ChargerCommand) -> bool:
        """The command is below what the box holds: its last accepted limit, or its own maximum."""
        accepted = self._accepted
        return accepted is None or command.current_a < accepted.current_a

    async def _remote_stop(self) -> bool:
        """RemoteStopTransaction of the running transaction (§5.12); True when the box accepted it."""
        transaction_id = self.central.state.transaction_id
        if transaction_id is None:
            return False
        result = await self.central.call(call.RemoteStopTransaction(transaction_id=transaction_id))
        if result.status != "Accepted":
            self._log.error("ocpp.remote_stop_refused", transaction_id=transaction_id, status=result.status)
            return False
        self._stopped = True
        self._log.warning("ocpp.remote_stopped", transaction_id=transaction_id, why="profile rejected")
        return True

    async def _remote_start(self) -> None:
        """RemoteStartTransaction (§5.11) after pvcharge stopped the transaction and a limit above 0 A
        was accepted again; a refusal is logged (the car's owner can start it at the box)."""
        tags = sorted(self._config.accepted_id_tags() or ())
        id_tag = tags[0] if tags else REMOTE_ID_TAG
        result = await self.central.call(
            call.RemoteStartTransaction(id_tag=id_tag, connector_id=self._config.connector_id)
        )
        self._stopped = result.status != "Accepted"
        log = self._log.info if result.status == "Accepted" else self._log.warning
        log("ocpp.remote_start", status=result.status)

    def _describe(self, command: ChargerCommand) -> str:
        phases = f", numberPhases {command.phases}" if self._config.phase_switching else ""
        unit = self.box.rate_unit if self.box is not None else "A"
        return f"TxDefaultProfile {command.current_a:g} A{phases} (unit {unit})"

    def forget(self) -> None:
        """Send the profile with the next apply even if the box accepted the same one on this connection."""
        self._accepted_on = 0

    async def close(self) -> None:
        """Close the connection and stop listening. Safe to call twice."""
        await self.central.close()
        self._prepared = 0

    # -- per-connection setup ---------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Listen; fail while the box is not connected (the first time after starting to listen, wait up to
        ``timeout_s`` for it: a box tries again every few seconds); once per connection run the setup."""
        central = self.central
        first = central.generation == 0 and not self._listened
        await central.start()
        self._listened = True
        if first and not central.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(central.connected_event.wait(), self._config.timeout_s)
        if not central.connected:
            since = ""
            if central.disconnected_at_s is not None:
                since = f" (disconnected {self._clock() - central.disconnected_at_s:.0f} s ago)"
            raise DeviceUnavailable(self.name, f"the charge point is not connected to {central.url}{since}")
        async with self._setup_lock:  # a late read and an apply may both get here
            await self._setup(central.generation)

    async def _setup(self, generation: int) -> None:
        """The setup of a new connection (see the module docstring), once per connection."""
        central = self.central
        if self._prepared == generation:
            return
        if central.boot is None:  # a box boots first thing (§4.2); one that merely reconnects may not
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(central.boot_event.wait(), min(self._config.timeout_s, BOOT_WAIT_S))
        self._apply_quirks()
        self.box = await self._read_configuration()
        await self._configure_meter_values()
        self._prepared = generation
        if self.box.remote_trigger:  # the status may have changed while the box was away
            await self._trigger("StatusNotification")
        wanted = self._wanted
        if wanted is not None and self._accepted_on != generation:
            self._log.info("ocpp.profile_resend", profile=self._describe(wanted), note="new connection")
            try:
                await self._send_profile(wanted)
            except DeviceProtocolError as exc:  # refused: the daemon's next apply reports it; reads go on
                self._log.warning("ocpp.profile_resend_failed", error=exc.message)

    def _apply_quirks(self) -> None:
        """Look the BootNotification's vendor up in :func:`~pvcharge.chargers.ocpp_mapping.quirks_for`."""
        vendor = (self.central.boot or {}).get("vendor")
        quirks = quirks_for(vendor)
        if quirks is not None and quirks is not self.quirks:
            self._log.info("ocpp.vendor_quirks", vendor=vendor, quirks=quirks.vendor)
        self.quirks = quirks
        minimum = quirks.min_meter_interval_s if quirks is not None else 0
        self._meter_interval_s = max(self._config.meter_interval_s, minimum)

    async def _read_configuration(self) -> BoxConfiguration:
        try:
            result = await self.central.call(call.GetConfiguration())
        except DeviceProtocolError as exc:  # a CALLERROR: go on with the defaults
            self._log.info("ocpp.no_configuration", error=exc.message)
            box = BoxConfiguration()
        else:
            box = parse_configuration(result.configuration_key)
        self._log.info(
            "ocpp.configuration",
            rate_unit=box.rate_unit,
            phase_switch=box.phase_switch,
            max_stack_level=box.max_stack_level,
        )
        if self._config.phase_switching and not box.phase_switch:
            raise DeviceProtocolError(
                self.name,
                "phase_switching is set, but the box does not report ConnectorSwitch3to1PhaseSupported "
                "true in GetConfiguration; set charger.phase_switching: false",
            )
        if not box.smart_charging:
            self._log.warning("ocpp.no_smart_charging", note="SupportedFeatureProfiles lacks SmartCharging")
        return box

    async def _configure_meter_values(self) -> None:
        """MeterValuesSampledData (all at once, else one by one) and MeterValueSampleInterval."""
        if not await self._change("MeterValuesSampledData", ",".join(MEASURANDS)):
            accepted = [m for m in MEASURANDS if await self._change("MeterValuesSampledData", m)]
            if len(accepted) > 1:
                await self._change("MeterValuesSampledData", ",".join(accepted))
        await self._change("MeterValueSampleInterval", str(self._meter_interval_s))

    async def _change(self, key: str, value: str) -> bool:
        """ChangeConfiguration; True when Accepted (or RebootRequired), False otherwise (logged)."""
        try:
            result = await self.central.call(call.ChangeConfiguration(key=key, value=value))
        except DeviceProtocolError as exc:
            self._log.info("ocpp.configuration_refused", key=key, value=value, error=exc.message)
            return False
        if result.status not in ("Accepted", "RebootRequired"):
            self._log.info("ocpp.configuration_refused", key=key, value=value, status=result.status)
            return False
        return True

    async def _trigger(self, message: str) -> None:
        """TriggerMessage for the connector; a refusal is logged only (the box reports on its own too)."""
        try:
            result = await self.central.call(
                call.TriggerMessage(requested_message=message, connector_id=self._config.connector_id)
            )
        except DeviceProtocolError as exc:
            self._log.debug("ocpp.trigger_refused", message=message, error=exc.message)
            return
        if result.status != "Accepted":
            self._log.debug("ocpp.trigger_refused", message=message, status=result.status)
