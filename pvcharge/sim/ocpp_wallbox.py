"""The wallbox behind the OCPP 1.6J charge point emulator
(:class:`~pvcharge.sim.ocpp.OcppChargePointEmulator`): its configuration keys, its charging profiles, what
it offers the car of the :class:`~pvcharge.sim.site.SiteModel`, its connector status and its meter samples
(OCPP 1.6 edition 2, §5, §7.31, §9).

- Configuration keys (§9): ``MeterValueSampleInterval`` and ``MeterValuesSampledData`` are writable (the
  measurands of :data:`SUPPORTED_MEASURANDS`), ``HeartbeatInterval`` is accepted and not kept, the others
  are read-only (Rejected); unknown keys NotSupported.
- SetChargingProfile: a TxDefaultProfile or TxProfile in the allowed unit becomes the site's offered
  current (its first period's limit; 0 outside a transaction) on its ``numberPhases`` (where the box
  switches phases; else a ``numberPhases`` other than its wiring is Rejected).  Without a profile the box
  offers its ``max_current_a``; below :data:`MIN_CURRENT_A` it offers nothing.
- Status: Available without a car, Preparing before a transaction, Charging while the car draws,
  SuspendedEVSE while offered less than 6 A, SuspendedEV otherwise.

The connection (WebSocket, reconnects, the calls it sends and the central system's calls it answers) is
:mod:`pvcharge.sim.ocpp`.
"""

from __future__ import annotations

from typing import Any

from pvcharge.sim.site import SiteModel

#: measurands the emulator can sample (§7.31).
SUPPORTED_MEASURANDS = (
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Energy.Active.Import.Register",
    "SoC",
)
#: the box's own default of MeterValuesSampledData (before a central system changes it).
DEFAULT_MEASURANDS = "Energy.Active.Import.Register"
#: the energy register's reading before the emulated car took anything, Wh: a box in use for a while (the
#: emulator's choice; a driver must count from the register's value at the start, never from 0).
REGISTER_START_WH = 1_000_000.0
#: below this offered current the car does not draw: status SuspendedEVSE (IEC 61851), in A.
MIN_CURRENT_A = 6.0


class OcppWallbox:
    """One OCPP wallbox with one connector at the simulated site: configuration, profiles, status, samples.

    The state and semantics half of :class:`~pvcharge.sim.ocpp.OcppChargePointEmulator`, which inherits it
    and connects it to a central system; its arguments and attributes are documented there.

    Args:
        site: the simulated site; ``site.offer()`` when the offer changes (and at construction),
            ``site.state()`` for status and samples.
        connector_id: its one connector's id.
        phases_connected: phases the box is wired with (1 or 3).
        phase_switch: it switches 1p/3p by ``numberPhases``.
        rate_unit: ``"Current"`` or ``"Power"``: ``ChargingScheduleAllowedChargingRateUnit``.
        max_current_a: what it offers without a profile, in A.
        stack_level_zero: reject profiles with a stack level above 0.

    Raises:
        ValueError: ``phases_connected`` is not 1 or 3, or ``rate_unit`` is neither Current nor Power.
    """

    def __init__(
        self,
        site: SiteModel,
        *,
        connector_id: int,
        phases_connected: int,
        phase_switch: bool,
        rate_unit: str,
        max_current_a: float,
        stack_level_zero: bool,
    ) -> None:
        if phases_connected not in (1, 3):
            raise ValueError(f"phases_connected must be 1 or 3, got {phases_connected}")
        if rate_unit not in ("Current", "Power"):
            raise ValueError(f"rate_unit must be Current or Power, got {rate_unit!r}")
        self.site = site
        self.connector_id = connector_id
        self.phases_connected = phases_connected
        self.phase_switch = phase_switch
        self.rate_unit = rate_unit
        self.max_current_a = max_current_a
        self.stack_level_zero = stack_level_zero
        self.reject_profiles = False
        self.profiles: list[dict[str, Any]] = []
        self.limit_a: float | None = None
        self.phases = phases_connected
        self.meter_interval_s = 60
        self.measurands = DEFAULT_MEASURANDS
        self.transaction_id: int | None = None
        self._offer()

    # -- what the box reports -------------------------------------------------------------------

    def _wanted_status(self) -> str:
        state = self.site.state()
        if not state.car_connected:
            return "Available"
        if self.transaction_id is None:
            return "Preparing"
        if state.car_current_a > 0:
            return "Charging"
        if state.offered_current_a < MIN_CURRENT_A:
            return "SuspendedEVSE"
        return "SuspendedEV"

    def _energy(self) -> float:
        """The energy register in Wh: what the car took so far, on top of :data:`REGISTER_START_WH`."""
        return REGISTER_START_WH + self.site.energy.car_wh

    def _samples(self) -> list[dict[str, Any]]:
        state = self.site.state()
        wanted = {m.strip() for m in self.measurands.split(",")}
        samples: list[dict[str, Any]] = []
        if "Power.Active.Import" in wanted:
            samples.append(
                {"measurand": "Power.Active.Import", "unit": "W", "value": f"{state.car_power_w:.0f}"}
            )
        if "Current.Import" in wanted:
            for i in range(1, 4):
                current = state.car_current_a if i <= state.car_phases else 0.0
                samples.append(
                    {"measurand": "Current.Import", "phase": f"L{i}", "unit": "A", "value": f"{current:.1f}"}
                )
        if "Current.Offered" in wanted:
            samples.append(
                {"measurand": "Current.Offered", "unit": "A", "value": f"{state.offered_current_a:.1f}"}
            )
        if "Energy.Active.Import.Register" in wanted:
            samples.append(
                {"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": f"{self._energy():.0f}"}
            )
        if "SoC" in wanted:
            samples.append({"measurand": "SoC", "unit": "Percent", "value": f"{state.car_soc_pct:.0f}"})
        return samples

    # -- what the box answers -------------------------------------------------------------------

    def configuration(self) -> dict[str, tuple[str, bool]]:
        """The configuration keys: name → (value, read-only)."""
        return {
            "MeterValueSampleInterval": (str(self.meter_interval_s), False),
            "MeterValuesSampledData": (self.measurands, False),
            "ChargingScheduleAllowedChargingRateUnit": (self.rate_unit, True),
            "ConnectorSwitch3to1PhaseSupported": (str(self.phase_switch).lower(), True),
            "ChargeProfileMaxStackLevel": ("8", True),
            "NumberOfConnectors": ("1", True),
            "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
            "HeartbeatInterval": ("60", False),
        }

    def change(self, key: str, value: str) -> str:
        """ChangeConfiguration: the status to answer."""
        if key == "MeterValueSampleInterval":
            if not value.isdigit():
                return "Rejected"
            self.meter_interval_s = int(value)
            return "Accepted"
        if key == "MeterValuesSampledData":
            measurands = [m.strip() for m in value.split(",")]
            if not all(m in SUPPORTED_MEASURANDS for m in measurands):
                return "Rejected"
            self.measurands = ",".join(measurands)
            return "Accepted"
        if key == "HeartbeatInterval":
            return "Accepted"
        return "Rejected" if key in self.configuration() else "NotSupported"

    def set_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        """SetChargingProfile: check, apply to the site; the status to answer."""
        if self.reject_profiles or connector_id not in (0, self.connector_id):
            return "Rejected"
        if profile.get("charging_profile_purpose") not in ("TxDefaultProfile", "TxProfile"):
            return "Rejected"
        if self.stack_level_zero and profile.get("stack_level") != 0:
            return "Rejected"
        schedule = profile.get("charging_schedule", {})
        unit = {"A": "Current", "W": "Power"}.get(schedule.get("charging_rate_unit", ""))
        if unit != self.rate_unit:
            return "Rejected"
        periods = schedule.get("charging_schedule_period") or []
        if not periods:
            return "Rejected"
        first = periods[0]
        phases = int(first.get("number_phases", self.phases_connected))
        if phases not in (1, 3) or (phases != self.phases_connected and not self.phase_switch):
            return "Rejected"
        limit = float(first["limit"])
        if unit == "Power":
            limit = limit / (phases * self.site.voltage_v)
        self.limit_a, self.phases = limit, min(phases, self.phases_connected)
        self.profiles.append(profile)
        self._offer()
        return "Accepted"

    def clear_profile(self) -> None:
        self.limit_a, self.phases = None, self.phases_connected
        self._offer()

    def _offer(self) -> None:
        """The site is offered the profile's limit (the box's maximum without one) during a transaction."""
        limit = self.max_current_a if self.limit_a is None else min(self.limit_a, self.max_current_a)
        if self.transaction_id is None:
            limit = 0.0
        self.site.offer(limit if limit >= MIN_CURRENT_A else 0.0, self.phases)
