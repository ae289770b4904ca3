"""What an OCPP 1.6J charge point's reports and pvcharge's charging profiles mean, for
:mod:`pvcharge.chargers.ocpp`: the pure mapping (no I/O) and the table of vendor quirks.

Device facts (OCPP 1.6 edition 2, "Open Charge Point Protocol 1.6" §3.13 Smart Charging, §5, §7, §9; evcc
``charger/ocpp*.go`` as the peer that drives 29 OCPP charger templates, reference ``sources.md`` "OCPP
1.6J"):

- StatusNotification ``status`` → IEC 61851 state (evcc ``charger/ocpp.go`` Status): Available,
  Unavailable, Reserved → A; Preparing, SuspendedEV, SuspendedEVSE, Finishing → B (connected, not
  drawing); Charging → C; Faulted → F.  ``charging`` is the status Charging.
- MeterValues (converted to W, Wh, A, % by :func:`pvcharge.clients.ocpp.sample_value`):
  ``Power.Active.Import`` (or the sum of its phases), ``Current.Import`` per phase, ``Current.Offered``,
  ``Energy.Active.Import.Register``, ``SoC``.  A box sends them every ``MeterValueSampleInterval``
  during a transaction only (§9.1.17); outside one the power reads 0 W.
- GetConfiguration (§6.21): ``ChargingScheduleAllowedChargingRateUnit``,
  ``ConnectorSwitch3to1PhaseSupported``, ``ChargeProfileMaxStackLevel``, ``SupportedFeatureProfiles``.
- Vendor quirks (:data:`VENDOR_QUIRKS`, by BootNotification ``chargePointVendor``, with their sources):
  ABB profiles at stack level 0, Easee a MeterValueSampleInterval of at least 30 s.
- The profile (§3.13.2, §5.16, §7.7–7.9): a ``TxDefaultProfile`` (it holds for every transaction, the
  next ones too), kind Absolute from a given start (the driver: a minute ago, evcc's default), id
  :data:`PROFILE_ID` (a profile with the same id replaces the old one), one period with ``limit`` in A,
  one decimal (§7.8: "at most one digit fraction"); ``numberPhases`` 1 or 3 where given.  A box that
  allows Power only gets ``limit`` in W = A × the phases the car draws on × 230 V.  0 A pauses (§3.13.1:
  a limit of 0 stops the energy flow without ending the transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pvcharge.clients.ocpp import ConnectorState, ocpp_time
from pvcharge.readings import ChargerReading, IecState, charging_power_w

#: the chargingProfileId of pvcharge's profile: sending it again replaces it (§5.16.3).
PROFILE_ID = 1
#: voltage used to turn a current into a power limit for boxes that take W only, in V.
NOMINAL_VOLTAGE_V = 230.0
#: a phase draws when its Current.Import is above this, in A.
PHASE_ACTIVE_A = 1.0

#: StatusNotification status → IEC 61851 state (see the module docstring).
STATUS_IEC = {
    "Available": IecState.A,
    "Unavailable": IecState.A,
    "Reserved": IecState.A,
    "Preparing": IecState.B,
    "SuspendedEV": IecState.B,
    "SuspendedEVSE": IecState.B,
    "Finishing": IecState.B,
    "Charging": IecState.C,
    "Faulted": IecState.F,
}


@dataclass(frozen=True, slots=True)
class VendorQuirks:
    """What a vendor's boxes need beyond OCPP 1.6, as far as it is documented.

    Attributes:
        vendor: matched against the start of BootNotification ``chargePointVendor`` (any case).
        stack_level_zero: profiles must use stack level 0 (others are Rejected); pvcharge otherwise
            uses ``ChargeProfileMaxStackLevel``, so its profile sits above any the vendor installed.
        min_meter_interval_s: the shortest MeterValueSampleInterval the box keeps to, in s.
        units: the ``ChargingScheduleAllowedChargingRateUnit`` reported, where known.
        number_phases: what is known of ``numberPhases`` in a profile.
        notes: what else a user must know.
        sources: where each fact comes from.
    """

    vendor: str
    stack_level_zero: bool = False
    min_meter_interval_s: int = 0
    units: str = "unknown"
    number_phases: str = "unknown"
    notes: str = ""
    sources: tuple[str, ...] = ()


#: the vendor quirks pvcharge applies (stack level, meter interval) and documents.  Nothing here was
#: measured on a real box by pvcharge: every line is what the sources report.
VENDOR_QUIRKS = (
    VendorQuirks(
        vendor="ABB",
        stack_level_zero=True,
        units="Current,Power",
        notes="Terra AC rejects SetChargingProfile with a stack level above 0 (FW 1.8.0 and later reports)",
        sources=(
            "evcc templates/definition/charger/ocpp-abb-tac.yaml (stacklevelzero: true)",
            "evcc issue #15493 (SetChargingProfile rejected, FW 1.8.0)",
            "lbbrhzn/ocpp issue #1737 (rejected at stackLevel 3; GetConfiguration units Current,Power)",
        ),
    ),
    VendorQuirks(
        vendor="Easee",
        min_meter_interval_s=30,
        notes="firmware >= 328 with OCPP enabled through the Easee cloud API; current control over OCPP "
        "needed beta firmware (evcc tested v9012); evcc starts transactions remotely (remotestart)",
        sources=(
            "evcc templates/definition/charger/ocpp-easee.yaml (meterinterval: 30s, remotestart: true)",
        ),
    ),
    VendorQuirks(
        vendor="Alfen",
        number_phases="works: 1p/3p by numberPhases (evcc template capability 1p3p; tested on an Eve S-line)",
        notes="evcc uses the box's PlugAndChargeIdentifier as the id tag of a remote start",
        sources=(
            "evcc templates/definition/charger/ocpp-alfen.yaml (capabilities mA, 1p3p)",
            "evcc pull request #4946 (phase switching tested on an Alfen Eve S-line)",
            "evcc charger/ocpp/const.go (KeyAlfenPlugAndChargeIdentifier)",
        ),
    ),
)


def quirks_for(vendor: str | None) -> VendorQuirks | None:
    """The :data:`VENDOR_QUIRKS` entry for a BootNotification ``chargePointVendor``, ``None`` if none."""
    if not vendor:
        return None
    name = vendor.strip().lower()
    return next((q for q in VENDOR_QUIRKS if name.startswith(q.vendor.lower())), None)


@dataclass(frozen=True, slots=True)
class BoxConfiguration:
    """What GetConfiguration said (defaults where the box did not say).

    Attributes:
        rate_unit: ``"A"`` or ``"W"``: the unit of profile limits
            (``ChargingScheduleAllowedChargingRateUnit``).
        phase_switch: ``ConnectorSwitch3to1PhaseSupported`` is true.
        max_stack_level: ``ChargeProfileMaxStackLevel`` (0 when not given).
        remote_trigger: ``SupportedFeatureProfiles`` lists RemoteTrigger (true when not given).
        smart_charging: ``SupportedFeatureProfiles`` lists SmartCharging (true when not given).
    """

    rate_unit: str = "A"
    phase_switch: bool = False
    max_stack_level: int = 0
    remote_trigger: bool = True
    smart_charging: bool = True


def parse_configuration(keys: list[dict[str, Any]] | None) -> BoxConfiguration:
    """Map GetConfiguration's ``configurationKey`` list (``[{"key", "readonly", "value"}]``, §6.21).

    Key names compare case-insensitively (boxes differ); unparseable values keep the default.
    """
    values = {str(k.get("key", "")).lower(): str(k.get("value") or "") for k in keys or []}
    config = BoxConfiguration()
    units = values.get("chargingscheduleallowedchargingrateunit")
    if units:
        allowed = {u.strip() for u in units.split(",")}
        if "Current" not in allowed and "A" not in allowed and allowed & {"Power", "W"}:
            config = replace(config, rate_unit="W")
    if values.get("connectorswitch3to1phasesupported", "").lower() == "true":
        config = replace(config, phase_switch=True)
    level = values.get("chargeprofilemaxstacklevel", "")
    if level.isdigit():
        config = replace(config, max_stack_level=int(level))
    profiles = values.get("supportedfeatureprofiles")
    if profiles and "Core" in profiles:
        config = replace(
            config, remote_trigger="RemoteTrigger" in profiles, smart_charging="SmartCharging" in profiles
        )
    return config


def charging_profile(
    current_a: float,
    phases: int | None,
    *,
    unit: str,
    stack_level: int,
    start: datetime,
    power_phases: int = 3,
) -> dict[str, Any]:
    """The ``csChargingProfiles`` of SetChargingProfile (snake_case keys, as the ``ocpp`` library takes).

    Args:
        current_a: the limit per phase in A (0 pauses), rounded to 0.1 A.
        phases: ``numberPhases``, or ``None`` to leave it out (the box assumes 3, §7.9).
        unit: ``"A"``, or ``"W"`` for a box that takes power only (then ``limit`` is
            ``current_a × phases × 230 V``, in whole W, with ``power_phases`` where ``phases`` is ``None``).
        stack_level: the profile's stack level.
        start: ``startSchedule`` (wall-clock time: the box's clock).
        power_phases: the phases the car draws on, for a limit in W without ``numberPhases`` (a power
            limit caps the sum over the phases: 10 A on one phase is 2300 W; evcc ``charger/ocpp.go``
            createTxDefaultChargingProfile uses the loadpoint's phases the same way).
    """
    if unit == "W":
        limit: float = float(round(current_a * (phases or power_phases) * NOMINAL_VOLTAGE_V))
    else:
        limit = round(current_a, 1)
    period: dict[str, Any] = {"start_period": 0, "limit": limit}
    if phases is not None:
        period["number_phases"] = phases
    return {
        "charging_profile_id": PROFILE_ID,
        "stack_level": stack_level,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "charging_rate_unit": unit,
            "start_schedule": ocpp_time(start),
            "charging_schedule_period": [period],
        },
    }


def reading_from_state(
    state: ConnectorState, *, limit_a: float, limit_phases: int | None, timestamp_s: float
) -> ChargerReading:
    """Build a reading from what the connector reported.

    Args:
        state: the connector's reports; ``state.status`` must be set.
        limit_a: the last limit the box accepted, in A (``Current.Offered`` wins where the box sends it
            during a transaction).
        limit_phases: the phases of the command behind that limit (its ``numberPhases`` where sent,
            else the installation's ``charger.phases``), ``None`` before any.
        timestamp_s: when the values were received.

    Returns:
        ``power_w`` from Power.Active.Import (else the sum of its phases, else 0), 0 outside a
        transaction and while not charging; ``phases`` while charging: the phases whose Current.Import
        is above :data:`PHASE_ACTIVE_A` (where the box sends per-phase currents), else ``limit_phases``
        or 3; ``phase_currents_a`` where any phase current was sent; ``vehicle_soc_pct`` from the
        ``SoC`` measurand (OCPP 1.6 Measurand enumeration, unit Percent; boxes that learn it from the
        car over ISO 15118 or CHAdeMO send it) in a transaction with a car plugged in, ``None`` when
        not sent or outside 0–100.

    Raises:
        ValueError: an unknown status, Power.Active.Import further than
            :data:`~pvcharge.readings.CHARGING_POWER_NOISE_W` below 0 W, or a value the reading refuses.
    """
    assert state.status is not None
    iec = STATUS_IEC.get(state.status)
    if iec is None:
        raise ValueError(f"StatusNotification: unknown status {state.status!r}")
    charging = state.status == "Charging"
    samples = state.samples if (charging or state.transaction_id is not None) else {}
    power_w = samples.get("Power.Active.Import")
    if power_w is None:
        phase_powers = [samples.get(f"Power.Active.Import.L{i}") for i in (1, 2, 3)]
        power_w = sum(p for p in phase_powers if p is not None)
    power_w = charging_power_w(power_w, "Power.Active.Import")
    currents = [samples.get(f"Current.Import.L{i}") for i in (1, 2, 3)]
    phase_currents = None
    if any(c is not None for c in currents):
        phase_currents = (currents[0] or 0.0, currents[1] or 0.0, currents[2] or 0.0)
    phases = 0
    if charging:
        if phase_currents is not None:
            phases = sum(1 for c in phase_currents if c > PHASE_ACTIVE_A)
        else:
            phases = limit_phases or 3
    offered = samples.get("Current.Offered")
    connected = iec in (IecState.B, IecState.C, IecState.D)
    soc_pct = samples.get("SoC") if connected else None
    return ChargerReading(
        connected=connected,
        charging=charging,
        power_w=power_w,
        current_a=offered if offered is not None and offered >= 0 else limit_a,
        phases=phases,
        timestamp_s=timestamp_s,
        iec_state=iec,
        phase_currents_a=phase_currents,
        vehicle_soc_pct=soc_pct if soc_pct is not None and 0 <= soc_pct <= 100 else None,
    )
