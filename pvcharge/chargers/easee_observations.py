"""The Easee charger's state as the cloud reports it: the observations codec and the canonical reading.

``GET /state/{chargerId}/observations?ids=…`` (no ``/api`` prefix) →
``{"observations": [{"id", "dataType", "value", "timestamp"}]}``; dataType 2 bool, 3 double, 4 int,
6 string; unknown ids are left out.  **totalPower (120) is in kW**; currents are in A (reference
``chargers.md`` §1.2 and the unit table at its top; sources as keyed there: [E-enum] Easee developer
docs, [P] pyeasee, [EV] evcc ``charger/easee*``).

Pure functions, no I/O: the driver (:mod:`pvcharge.chargers.easee`) sends the request and hands the
decoded reply to :func:`parse_observations` and :func:`reading_from_observations`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pvcharge.readings import ChargerReading, IecState, charging_power_w

#: observation id → name (chargers.md §1.2; pyeasee ``const.py`` ``ChargerStreamData`` [P]).
OBSERVATIONS: dict[int, str] = {
    109: "chargerOpMode",
    120: "totalPower",  # kW
    114: "outputCurrent",  # A offered to the car
    48: "dynamicChargerCurrent",  # A
    38: "phaseMode",  # 1 locked 1p, 2 auto, 3 locked 3p
    110: "outputPhase",  # 0 unassigned, 10–15 one phase, 20–22 two, 30 three
    111: "dynamicCircuitCurrentP1",  # A
    112: "dynamicCircuitCurrentP2",
    113: "dynamicCircuitCurrentP3",
    183: "inCurrentT3",  # A on L1
    184: "inCurrentT4",  # A on L2
    185: "inCurrentT5",  # A on L3
}
OP_MODE, TOTAL_POWER, OUTPUT_CURRENT, OUTPUT_PHASE = 109, 120, 114, 110
IN_CURRENTS = (183, 184, 185)

#: ``chargerOpMode`` → (IEC state, connected, charging): chargers.md §1.2 table (1–6 official [E-enum],
#: 0/7/8 [P; EV]; IEC letters as evcc maps them [EV]).  0 Offline: the cloud has lost the charger, nothing
#: is known of a car: F, not connected.  5 Error: F, but the session is kept (connected) so the controller's
#: timers survive a transient charger fault; the car draws nothing.
OP_MODES: dict[int, tuple[IecState, bool, bool]] = {
    0: (IecState.F, False, False),  # Offline
    1: (IecState.A, False, False),  # Disconnected
    2: (IecState.B, True, False),  # AwaitingStart (SuspendedEVSE: load balancer, pause)
    3: (IecState.C, True, True),  # Charging
    4: (IecState.B, True, False),  # Completed (car paused or stopped)
    5: (IecState.F, True, False),  # Error
    6: (IecState.B, True, False),  # ReadyToCharge (SuspendedEV: waiting for the car)
    7: (IecState.B, True, False),  # AwaitingAuthentication
    8: (IecState.B, True, False),  # Deauthenticating
}

#: an inCurrentT3..T5 above this counts as a phase the car draws on, in A.
ACTIVE_PHASE_A = 1.0


ObservationValue = bool | int | float | str


def _typed(obs_id: int, data_type: int, value: object) -> ObservationValue:
    """Decode an observation value by its ``dataType`` (chargers.md §1.2): JSON-typed or, as SignalR
    sends them, a string."""
    where = f"observation {obs_id} ({OBSERVATIONS.get(obs_id, '?')})"
    if data_type == 2:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
            return value.strip().lower() in ("1", "true")
        raise ValueError(f"{where}: dataType 2 (boolean) but value {value!r}")
    if data_type in (3, 4):
        number: float
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{where}: dataType {data_type} but value {value!r}") from None
        else:
            raise ValueError(f"{where}: dataType {data_type} (number) but value {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"{where}: value {value!r} is not finite")
        if data_type == 3:
            return number
        if not number.is_integer():
            raise ValueError(f"{where}: dataType 4 (integer) but value {value!r}")
        return int(number)
    if data_type == 6:
        if not isinstance(value, str):
            raise ValueError(f"{where}: dataType 6 (string) but value {value!r}")
        return value
    raise ValueError(f"{where}: unsupported dataType {data_type!r} (expected 2, 3, 4 or 6)")


def parse_observations(payload: object) -> dict[int, ObservationValue]:
    """Decode the observations reply into ``{id: value}`` for the ids in :data:`OBSERVATIONS`.

    Args:
        payload: decoded JSON ``{"observations": [{"id": 109, "dataType": 4, "value": 3,
            "timestamp": "…"}, …]}``; values typed by ``dataType``: 2 bool, 3 double, 4 int, 6 string, as
            JSON values or as strings (``"1"``/``"true"``, ``"7.5"``).  Units are the vendor's (kW for 120).

    Returns:
        bool, float (dataType 3), int (4) or str (6) per id; ids this driver does not use are left out;
        a repeated id keeps its last value.

    Raises:
        ValueError: not an object with an ``observations`` list, an entry without an integer ``id`` and
            ``dataType``, or a used id whose value does not match its ``dataType``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("observations"), list):
        raise ValueError("observations: expected a JSON object with an 'observations' list")
    result: dict[int, ObservationValue] = {}
    for entry in payload["observations"]:
        if not isinstance(entry, dict):
            raise ValueError(f"observations: expected objects in the list, got {entry!r}")
        obs_id, data_type = entry.get("id"), entry.get("dataType")
        if not isinstance(obs_id, int) or isinstance(obs_id, bool):
            raise ValueError(f"observations: entry without an integer 'id': {entry!r}")
        if not isinstance(data_type, int) or isinstance(data_type, bool):
            raise ValueError(f"observation {obs_id}: missing or non-integer 'dataType'")
        if obs_id in OBSERVATIONS:
            result[obs_id] = _typed(obs_id, data_type, entry.get("value"))
    return result


def _number(obs: Mapping[int, ObservationValue], obs_id: int) -> float:
    if obs_id not in obs:
        raise ValueError(f"observation {obs_id} ({OBSERVATIONS[obs_id]}) missing from the reply")
    value = obs[obs_id]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"observation {obs_id} ({OBSERVATIONS[obs_id]}) must be a number, got {value!r}")
    return float(value)


def _phases_from_output_phase(code: float | None) -> int:
    """Phases from ``outputPhase`` (chargers.md §1.2): 10–15 one, 20–22 two, 30 three; otherwise 3, an
    assumption: the charger does not say."""
    if code is not None and 10 <= code <= 15:
        return 1
    if code is not None and 20 <= code <= 22:
        return 2
    return 3


def reading_from_observations(obs: Mapping[int, ObservationValue], *, timestamp_s: float) -> ChargerReading:
    """Build a canonical reading from decoded observations (:func:`parse_observations`).

    Args:
        obs: 109 chargerOpMode; 120 totalPower (kW) and 114 outputCurrent (A), required while charging
            and read as 0 when left out otherwise (the cloud leaves out what it does not know); optionally
            183–185 inCurrentT3..T5 (A on L1..L3) and 110 outputPhase.
        timestamp_s: when the reply arrived, seconds on the daemon's clock.

    Returns:
        ``connected``/``charging``/``iec_state`` from chargerOpMode per :data:`OP_MODES`; ``power_w`` =
        totalPower × 1000 (kW → W); ``current_a`` = outputCurrent; ``phase_currents_a`` = inCurrentT3..T5
        when all three are present.  ``phases`` is 0 unless charging; while charging, the number of
        inCurrentT3..T5 above :data:`ACTIVE_PHASE_A` (0 while the car ramps up), or from outputPhase
        without them.

    Raises:
        ValueError: a required observation is missing, a used one is not a number, an unknown chargerOpMode, a
            negative outputCurrent or a totalPower further below 0 than
            :data:`~pvcharge.readings.CHARGING_POWER_NOISE_W` (:func:`~pvcharge.readings.charging_power_w`).
    """
    op_mode = _number(obs, OP_MODE)
    if op_mode not in OP_MODES:
        raise ValueError(f"observation 109 (chargerOpMode): unknown value {obs[OP_MODE]!r} (expected 0..8)")
    iec_state, connected, charging = OP_MODES[int(op_mode)]
    power_kw = _number(obs, TOTAL_POWER) if charging or TOTAL_POWER in obs else 0.0
    power_w = charging_power_w(power_kw * 1000.0, "observation 120 (totalPower)", shown=f"{power_kw} kW")
    output_a = _number(obs, OUTPUT_CURRENT) if charging or OUTPUT_CURRENT in obs else 0.0
    if output_a < 0:
        raise ValueError(f"observation 114 (outputCurrent) is {output_a} A, negative")
    phase_currents: tuple[float, float, float] | None = None
    if all(i in obs for i in IN_CURRENTS):
        l1, l2, l3 = (_number(obs, i) for i in IN_CURRENTS)
        phase_currents = (l1, l2, l3)
    if not charging:
        phases = 0
    elif phase_currents is not None:
        phases = sum(1 for a in phase_currents if a > ACTIVE_PHASE_A)
    else:
        phases = _phases_from_output_phase(_number(obs, OUTPUT_PHASE) if OUTPUT_PHASE in obs else None)
    return ChargerReading(
        connected=connected,
        charging=charging,
        power_w=power_w,
        current_a=output_a,
        phases=phases,
        timestamp_s=timestamp_s,
        iec_state=iec_state,
        phase_currents_a=phase_currents,
    )
