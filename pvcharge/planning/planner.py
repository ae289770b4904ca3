"""The charge planner: which 15-min slots to add grid charging to so a target is met by a deadline at
the least expected cost, counting the PV surplus the car gets anyway in ``pv`` mode.

Pure: no I/O, no clock of its own (``now_s`` is an argument), so the daemon, the replay and the tests
call the same code.

Algorithm (docs/plans.md has the worked example):

1. Cut ``[now_s, deadline_s)`` into slots on the 15-min grid (Unix seconds, multiples of
   :data:`SLOT_S`); the first and last slot may be partial.
2. **PV first.** Per slot, the surplus forecast ``s`` is scaled by ``pv_factor`` (a safety margin on
   the forecast, default 0.8: count 80 %). If ``s`` reaches the car's minimum power, the car is
   expected to charge ``min(s, max_power_w)`` from PV in ``pv`` mode; otherwise nothing. That energy is
   subtracted from the need; if it covers it, no grid slot is added.
3. **Cheapest grid second.** Charging at full power in a slot adds the energy the car would not have
   taken from PV there. Its cost per added kWh is the grid price, except where the surplus is below the
   minimum power: there the car's full-power draw is partly PV (costing the feed-in tariff it would
   have earned) and partly grid. Slots are taken greedily in order of that unit cost (ties: the later
   slot first, so the decision waits for fresher forecasts), the last one at reduced power (at least
   the minimum), until the need is covered. Each slot offers a fixed energy at a fixed unit cost, so
   greedy is optimal up to the minimum-power overshoot of the last slot (< 1 slot at min power).
4. **Impossible targets.** If PV plus every slot at full power cannot cover the need, the plan says
   so (``met`` False, ``shortfall_kwh``) and charges at full power in every slot from now.
   ``latest_start_s`` is always given: the last moment full grid power alone would still make it.

Fallbacks (never stop charging because a source died): no forecast (``surplus_w`` None) or a slot
missing from it: assume no PV there; no prices (``prices_per_kwh`` None) or a slot missing: the flat
``fallback_price_per_kwh``. Each fallback adds a line to :attr:`Plan.notes`.

Energy is counted at the charger (what its meter and the session record show), not in the battery.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pvcharge.control.config import ChargePoint

#: slot length in s: the day-ahead markets' and Open-Meteo's 15-min grid.
SLOT_S = 900
#: weekday names as in the config (``weekdays: [mon, tue]``), Monday first like :meth:`datetime.weekday`.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ChargeLimits:
    """The car's charging power range at the charger, in W (both > 0, ``min_power_w <= max_power_w``)."""

    min_power_w: float
    max_power_w: float

    def __post_init__(self) -> None:
        if not 0 < self.min_power_w <= self.max_power_w:
            raise ValueError(
                "expected 0 < min_power_w <= max_power_w, "
                f"got {self.min_power_w:g} W and {self.max_power_w:g} W"
            )

    @classmethod
    def of(cls, charge_point: ChargePoint, voltage_v: float) -> ChargeLimits:
        """From the ``charger:`` limits: min current on the fewest phases the charger can use (1 with
        ``phases: auto``), max current on the most (3 with ``auto``), at ``voltage_v`` per phase."""
        low = 1 if charge_point.phases == "auto" else charge_point.phases
        high = 3 if charge_point.phases == "auto" else charge_point.phases
        return cls(
            charge_point.min_current_a * voltage_v * low, charge_point.max_current_a * voltage_v * high
        )


@dataclass(frozen=True)
class PlannedSlot:
    """One slot of a plan: ``[start_s, end_s)`` Unix s.

    ``power_w``: the charging power to command there (W; 0: leave the car to ``pv`` mode);
    ``pv_kwh``/``grid_kwh``: the energy expected from PV and from the grid; ``price_per_kwh``: the grid
    price used (currency/kWh).
    """

    start_s: float
    end_s: float
    power_w: float
    pv_kwh: float
    grid_kwh: float
    price_per_kwh: float

    @property
    def grid(self) -> bool:
        """Grid charging was added to this slot."""
        return self.power_w > 0


@dataclass(frozen=True)
class Plan:
    """The planner's answer.

    ``met``: the target is expected to be met by ``deadline_s``; ``expected_kwh``: energy expected by
    then (PV + grid); ``shortfall_kwh``: what is missing (0 if met); ``grid_kwh``, ``pv_kwh``;
    ``cost``: grid energy × price plus PV energy × feed-in (the export given up), in currency;
    ``latest_start_s``: the last start from which full power alone meets the need (Unix s; before
    ``now_s`` when that is too late); ``notes``: fallbacks used, in words.
    """

    need_kwh: float
    deadline_s: float
    met: bool
    expected_kwh: float
    shortfall_kwh: float
    pv_kwh: float
    grid_kwh: float
    cost: float
    latest_start_s: float
    slots: tuple[PlannedSlot, ...]
    notes: tuple[str, ...] = field(default=())

    def power_at(self, t_s: float) -> float:
        """The grid-charging power planned at ``t_s`` (W), 0 outside grid slots."""
        for slot in self.slots:
            if slot.start_s <= t_s < slot.end_s:
                return slot.power_w
        return 0.0

    @property
    def grid_slots(self) -> tuple[PlannedSlot, ...]:
        return tuple(slot for slot in self.slots if slot.grid)


def slot_start(t_s: float) -> int:
    """The start of the 15-min slot holding ``t_s`` (Unix s)."""
    return int(t_s // SLOT_S) * SLOT_S


def energy_to_add_kwh(target_soc_pct: float, soc_pct: float, capacity_kwh: float) -> float:
    """kWh to add to reach ``target_soc_pct`` from ``soc_pct`` in a battery of ``capacity_kwh`` (net
    capacity; 0 if already there). Raises ValueError for a SoC outside 0–100 or a capacity <= 0."""
    for name, value in (("target_soc_pct", target_soc_pct), ("soc_pct", soc_pct)):
        if not 0 <= value <= 100:
            raise ValueError(f"{name}: expected 0–100 %, got {value:g}")
    if capacity_kwh <= 0:
        raise ValueError(f"capacity_kwh: expected > 0, got {capacity_kwh:g}")
    return max(0.0, (target_soc_pct - soc_pct) / 100 * capacity_kwh)


def next_deadline(now_s: float, at: time, tz: ZoneInfo, weekdays: Iterable[str] = WEEKDAYS) -> float:
    """The next wall-clock ``at`` in ``tz`` after ``now_s`` on one of ``weekdays`` (Unix s): "07:00"
    at 22:00 is tomorrow morning. Raises ValueError for an unknown weekday name or an empty list."""
    days = set(weekdays)
    unknown = days - set(WEEKDAYS)
    if unknown or not days:
        raise ValueError(f"weekdays: expected some of {', '.join(WEEKDAYS)}, got {sorted(days)}")
    today = datetime.fromtimestamp(now_s, tz).date()
    for offset in range(8):
        day = today + timedelta(days=offset)
        when = datetime.combine(day, at, tzinfo=tz).timestamp()
        if when > now_s and WEEKDAYS[day.weekday()] in days:
            return when
    raise AssertionError("unreachable: every weekday occurs within 8 days")


@dataclass
class _Slot:
    start_s: float
    end_s: float
    surplus_w: float
    price: float
    pv_w: float = 0.0
    power_w: float = 0.0

    @property
    def kwh_per_w(self) -> float:
        """kWh that 1 W for the whole slot gives."""
        return (self.end_s - self.start_s) / 3600 / 1000


def plan_charge(
    *,
    need_kwh: float,
    deadline_s: float,
    now_s: float,
    limits: ChargeLimits,
    surplus_w: Mapping[int, float] | None,
    prices_per_kwh: Mapping[int, float] | None,
    fallback_price_per_kwh: float,
    feed_in_per_kwh: float = 0.0,
    pv_factor: float = 0.8,
) -> Plan:
    """Plan the grid slots for ``need_kwh`` more by ``deadline_s`` (see the module docstring).

    Args:
        need_kwh: energy still to add (kWh, >= 0), e.g. from :func:`energy_to_add_kwh`.
        deadline_s, now_s: Unix s.
        limits: the car's power range.
        surplus_w: expected PV surplus available to the car (W, >= 0) per slot start (Unix s, a
            multiple of :data:`SLOT_S`); ``None``: no forecast.
        prices_per_kwh: grid price per slot start (currency/kWh); ``None``: no tariff data.
        fallback_price_per_kwh: the flat price for slots without one.
        feed_in_per_kwh: paid per kWh exported; the price of PV energy used by the car.
        pv_factor: share of the forecast surplus counted on (0–1).

    Raises:
        ValueError: negative need, ``pv_factor`` outside 0–1.
    """
    if need_kwh < 0 or not math.isfinite(need_kwh):
        raise ValueError(f"need_kwh: expected a finite value >= 0, got {need_kwh}")
    if not 0 <= pv_factor <= 1:
        raise ValueError(f"pv_factor: expected 0–1, got {pv_factor:g}")
    notes: list[str] = []
    if surplus_w is None:
        notes.append("no solar forecast: assuming no PV")
    if prices_per_kwh is None:
        notes.append(f"no prices: assuming a flat {fallback_price_per_kwh:g}/kWh")
    slots = _slots(now_s, deadline_s)
    missing_pv = missing_price = 0
    work: list[_Slot] = []
    for start_s, end_s in slots:
        key = slot_start(start_s)
        surplus = None if surplus_w is None else surplus_w.get(key)
        price = None if prices_per_kwh is None else prices_per_kwh.get(key)
        missing_pv += surplus_w is not None and surplus is None
        missing_price += prices_per_kwh is not None and price is None
        work.append(
            _Slot(
                start_s,
                end_s,
                max(0.0, surplus or 0.0) * pv_factor,
                fallback_price_per_kwh if price is None else price,
            )
        )
    if missing_pv:
        notes.append(f"forecast missing for {missing_pv} slot(s): assuming no PV there")
    if missing_price:
        notes.append(
            f"prices missing for {missing_price} slot(s): assuming {fallback_price_per_kwh:g}/kWh there"
        )

    # 2. PV first
    for slot in work:
        if slot.surplus_w >= limits.min_power_w:
            slot.pv_w = min(slot.surplus_w, limits.max_power_w)
    remaining = need_kwh - sum(slot.pv_w * slot.kwh_per_w for slot in work)

    # 3. cheapest grid second
    def unit_cost(slot: _Slot) -> float:
        if slot.pv_w > 0:  # PV charging anyway: what is added comes from the grid
            return slot.price
        share_pv = min(slot.surplus_w, limits.max_power_w) / limits.max_power_w
        return share_pv * feed_in_per_kwh + (1 - share_pv) * slot.price

    candidates = sorted(
        (slot for slot in work if slot.pv_w < limits.max_power_w and slot.kwh_per_w > 0),
        key=lambda slot: (unit_cost(slot), -slot.start_s),
    )
    for slot in candidates:
        if remaining <= 1e-9:
            break
        room_kwh = (limits.max_power_w - slot.pv_w) * slot.kwh_per_w
        if room_kwh <= remaining:
            slot.power_w = limits.max_power_w
            remaining -= room_kwh
        else:
            slot.power_w = max(limits.min_power_w, slot.pv_w + remaining / slot.kwh_per_w)
            remaining -= (slot.power_w - slot.pv_w) * slot.kwh_per_w
    met = remaining <= 1e-9

    planned = tuple(_planned(slot) for slot in work)
    pv_kwh = sum(slot.pv_kwh for slot in planned)
    grid_kwh = sum(slot.grid_kwh for slot in planned)
    cost = sum(slot.grid_kwh * slot.price_per_kwh for slot in planned) + pv_kwh * feed_in_per_kwh
    expected = pv_kwh + grid_kwh
    return Plan(
        need_kwh=need_kwh,
        deadline_s=deadline_s,
        met=met,
        expected_kwh=expected,
        shortfall_kwh=0.0 if met else need_kwh - expected,
        pv_kwh=pv_kwh,
        grid_kwh=grid_kwh,
        cost=cost,
        latest_start_s=deadline_s - need_kwh / (limits.max_power_w / 1000) * 3600,
        slots=planned,
        notes=tuple(notes),
    )


def _slots(now_s: float, deadline_s: float) -> list[tuple[float, float]]:
    """``[now_s, deadline_s)`` cut on the 15-min grid."""
    out: list[tuple[float, float]] = []
    start = now_s
    while start < deadline_s:
        end = min(slot_start(start) + SLOT_S, deadline_s)
        out.append((start, end))
        start = end
    return out


def _planned(slot: _Slot) -> PlannedSlot:
    """The expected energy split of a worked slot: with grid power the car draws ``power_w``, PV covers
    up to the surplus; without, it draws ``pv_w`` from PV."""
    if slot.power_w > 0:
        pv_kwh = min(slot.surplus_w, slot.power_w) * slot.kwh_per_w
        grid_kwh = slot.power_w * slot.kwh_per_w - pv_kwh
    else:
        pv_kwh, grid_kwh = slot.pv_w * slot.kwh_per_w, 0.0
    return PlannedSlot(slot.start_s, slot.end_s, slot.power_w, pv_kwh, grid_kwh, slot.price)
