"""Huawei SUN2000 hybrid inverter (with its power meter and LUNA2000 battery) over Modbus TCP.

Device facts come from the project reference ``meters.md`` §1 (sources: wlcrs/huawei-solar-lib
``registers.py`` [H1], ``huawei_solar.py`` [H2], ``const.py`` [H5]; evcc and ioBroker.sun2000 [H9, H10]).
Holding registers (function 0x03), big-endian, 32-bit values high word first (§1.1):

==========  ====  ======  ==================================================================
register    type  gain    meaning (vendor sign)
==========  ====  ======  ==================================================================
32064       I32   1 W     PV input (DC) power
37107/9/11  I32   100 A   grid phase currents L1–L3, signed like 37113
37113       I32   1 W     meter active power, **+ = export**, − = import
37760       U16   10 %    battery state of charge
37765       I32   1 W     battery power, **+ = charging**, − = discharging
==========  ====  ======  ==================================================================

Invalid markers ("no value", §1.3): U16 ``0xFFFF``, I32 ``0x7FFFFFFF``.  One read is three requests:
``32064×2``, ``37107×8`` and ``37760×7`` (the last one skipped with ``battery: false``).  Some
firmware answers exception 0x02 to a block read that spans a register it does not document (37761
inside 37760–37766; issue 12): the driver then reads the registers it uses one by one (``37760×1``,
``37765×2``), and keeps doing so for that block without trying it whole again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from pvcharge.clients.huawei import HuaweiModbus, LinkSettings, RegistersAbsent
from pvcharge.errors import DeviceProtocolError
from pvcharge.readings import SiteReading
from pvcharge.settings import setting

log = structlog.get_logger(__name__)

PV_POWER = 32064  #: I32 W, PV input power [H1 ``input_power``]
GRID_CURRENTS = 37107  #: 3 × I32, gain 100 A, + = export [H9, H11]
GRID_POWER = 37113  #: I32 W, + = export [H1 ``power_meter_active_power``; H10]
BATTERY_SOC = 37760  #: U16, gain 10 % [H1 ``storage_state_of_capacity``]
BATTERY_POWER = 37765  #: I32 W, + = charging [H1 ``storage_charge_discharge_power``; H10]

#: (first register, count) of each request; reads span ≤ 64 registers (reference §1.4 [H5]).
PV_BLOCK = (PV_POWER, 2)
METER_BLOCK = (GRID_CURRENTS, GRID_POWER + 2 - GRID_CURRENTS)  # 37107..37114
BATTERY_BLOCK = (BATTERY_SOC, BATTERY_POWER + 2 - BATTERY_SOC)  # 37760..37766
#: (first register, count) of each value the driver uses in each block: what it reads one by one
#: when the device refuses the block read.
PV_FIELDS = (PV_BLOCK,)
METER_FIELDS = tuple((address, 2) for address in range(GRID_CURRENTS, GRID_POWER + 1, 2))
BATTERY_FIELDS = ((BATTERY_SOC, 1), (BATTERY_POWER, 2))

U16_INVALID = 0xFFFF
I32_INVALID = 0x7FFFFFFF


@dataclass(frozen=True)
class Config(LinkSettings):
    """Settings of a Huawei SUN2000 meter source (config ``type: huawei``): the link's
    (:class:`~pvcharge.clients.huawei.LinkSettings`) and which registers to read."""

    battery: bool = setting(True, doc="read the home battery (37760–37766); false for a site without one")


def create(config: Config, *, name: str, clock: Callable[[], float]) -> HuaweiMeter:
    """Build the driver from its config (no I/O yet)."""
    return HuaweiMeter(config, name=name, clock=clock)


# -- pure encoding -------------------------------------------------------------------------------
def decode_u16(reg: int, *, register: int) -> int:
    """One register as an unsigned 16-bit value.

    Raises:
        ValueError: ``reg`` is not 0..0xFFFF, or it is the invalid marker ``0xFFFF`` (reference §1.3 [H1]);
            the message names ``register``.
    """
    _check_word(reg, register)
    if reg == U16_INVALID:
        raise ValueError(f"register {register} reports 'no value' (0xFFFF)")
    return reg


def encode_u16(value: int) -> list[int]:
    """``value`` (0..0xFFFF) as one register."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} does not fit in U16")
    return [value]


def decode_i32(hi: int, lo: int, *, register: int) -> int:
    """Two registers, high word first (reference §1.1 [H1]), as a signed 32-bit value.

    Raises:
        ValueError: a word is not 0..0xFFFF, or the value is the invalid marker ``0x7FFFFFFF``
            (reference §1.3 [H1]); the message names ``register``.
    """
    _check_word(hi, register)
    _check_word(lo, register + 1)
    raw = hi << 16 | lo
    if raw == I32_INVALID:
        raise ValueError(f"register {register} reports 'no value' (0x7FFFFFFF)")
    return raw - (1 << 32) if raw & 0x80000000 else raw


def encode_i32(value: int) -> list[int]:
    """``value`` (−2³¹..2³¹−1) as ``[hi, lo]``, two's complement, high word first."""
    if not -(1 << 31) <= value < 1 << 31:
        raise ValueError(f"{value} does not fit in I32")
    raw = value & 0xFFFFFFFF
    return [raw >> 16, raw & 0xFFFF]


def _check_word(reg: int, register: int) -> None:
    if not 0 <= reg <= 0xFFFF:
        raise ValueError(f"register {register} holds {reg!r}, not a 16-bit word")


def to_reading(
    pv_regs: Sequence[int],
    meter_regs: Sequence[int],
    battery_regs: Sequence[int] | None,
    timestamp_s: float,
) -> SiteReading:
    """Convert raw register blocks to a canonical reading (reference meters.md, sign table and §1.3).

    Args:
        pv_regs: 2 registers from 32064 (PV input power, I32 W).
        meter_regs: 8 registers from 37107: phase currents L1–L3 (I32, gain 100 A, + = export) and
            37113 meter active power (I32 W, + = export).
        battery_regs: 7 registers from 37760: SoC (U16, gain 10 %) at 37760, battery power (I32 W,
            + = charging) at 37765; ``None`` for a site without battery (battery 0 W, SoC ``None``).
        timestamp_s: when the registers were read.

    Returns:
        ``grid_power_w = -reg37113``, ``pv_power_w = max(0, reg32064)``, ``battery_power_w = -reg37765``,
        ``battery_soc_pct = reg37760 / 10``, ``grid_currents_a = -reg37107/100, …`` (> 0 import).

    Raises:
        ValueError: a block has the wrong length, a register holds an invalid marker, the SoC
            exceeds 100 %, or the meter block is all 0xFFFF (all bits set, as reported on
            communication hiccups in wlcrs/huawei_solar#1258); the message names the quantity and
            the register.
    """
    _check_len(pv_regs, PV_BLOCK)
    _check_len(meter_regs, METER_BLOCK)
    pv_w = _i32("PV power", pv_regs, 0, PV_POWER)
    currents = [-_i32(f"grid current L{n}", meter_regs, 2 * n - 2, GRID_CURRENTS) / 100.0 for n in (1, 2, 3)]
    grid_w = _i32("grid power", meter_regs, 6, GRID_CURRENTS)
    battery_w, soc_pct = 0, None
    if battery_regs is not None:
        _check_len(battery_regs, BATTERY_BLOCK)
        try:
            soc_pct = decode_u16(battery_regs[0], register=BATTERY_SOC) / 10.0
        except ValueError as exc:
            raise ValueError(f"battery SoC: {exc}") from None
        if soc_pct > 100.0:
            raise ValueError(
                f"battery SoC out of range: register {BATTERY_SOC} reports SoC {soc_pct} % (> 100 %)"
            )
        battery_w = _i32("battery power", battery_regs, 5, BATTERY_SOC)
    # All bits set decodes as 0.01 A and 1 W of import: plausible alone, impossible as a whole block.
    if all(word == U16_INVALID for word in meter_regs):
        last = METER_BLOCK[0] + METER_BLOCK[1] - 1
        raise ValueError(f"grid meter: registers {METER_BLOCK[0]}–{last} all read 0xFFFF ('no value')")
    return SiteReading(
        grid_power_w=float(-grid_w),
        pv_power_w=float(max(0, pv_w)),
        battery_power_w=float(-battery_w),
        battery_soc_pct=soc_pct,
        timestamp_s=timestamp_s,
        grid_currents_a=(currents[0], currents[1], currents[2]),
    )


def _i32(quantity: str, regs: Sequence[int], index: int, first: int) -> int:
    """The I32 at ``regs[index]`` of the block read from register ``first``; a ValueError names
    ``quantity`` and the register."""
    try:
        return decode_i32(regs[index], regs[index + 1], register=first + index)
    except ValueError as exc:
        raise ValueError(f"{quantity}: {exc}") from None


def _check_len(regs: Sequence[int], block: tuple[int, int]) -> None:
    if len(regs) != block[1]:
        raise ValueError(f"expected {block[1]} registers from {block[0]}, got {len(regs)}")


# -- driver --------------------------------------------------------------------------------------
class HuaweiMeter:
    """Reads grid, PV and battery from a SUN2000 over one lazily opened Modbus TCP connection
    (:class:`~pvcharge.clients.huawei.HuaweiModbus`: requests serialized, each bounded by
    ``timeout_s`` and retried with backoff; reference §1.4).

    Args:
        config: the settings.
        name: the configured device name, used in errors and logs.
        clock: returns the timestamp put on readings (seconds).
    """

    def __init__(self, config: Config, *, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._by_field: set[int] = set()  #: first registers of the blocks the device refused whole
        self._modbus = HuaweiModbus(config, name=name, log=log)
        self._endpoint = self._modbus.endpoint
        self._log = self._modbus.log

    async def read(self) -> SiteReading:
        """Read the site once (three requests; two with ``battery: false``; one more per value of a
        block the device refuses to read whole, see the module docstring).

        A failing request ends the read within ``(1 + retries) × (2 × timeout_s + connect_delay_s
        + request_gap_s)`` plus the backoff waits (``backoff_s``, doubling per retry, plus up to
        ``backoff_s`` of jitter each); a whole read takes at most that for each of its requests.

        Returns:
            a canonical reading (grid > 0 import, battery > 0 discharge) stamped with ``clock()``.
            A device that stopped updating its values is not detected here: it reads as usual.

        Raises:
            DeviceUnavailable: no usable answer after ``1 + retries`` attempts: cannot connect, no
                answer within ``timeout_s``, connection closed by the device, exception 0x06
                (device busy) or 0x04 (device failure); the message names the last cause.
            DeviceProtocolError: a register is absent (exception 0x02, also when read alone), holds an
                invalid marker or an out-of-range value (e.g. an all-0xFFFF reply), or the device
                answered with another Modbus exception.  Not retried.
        """
        pv = await self._read_block(PV_BLOCK, PV_FIELDS)
        meter = await self._read_block(METER_BLOCK, METER_FIELDS)
        battery = await self._read_block(BATTERY_BLOCK, BATTERY_FIELDS) if self._config.battery else None
        try:
            return to_reading(pv, meter, battery, self._clock())
        except ValueError as exc:
            raise DeviceProtocolError(self.name, f"{self._endpoint}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection; the next read reconnects. Safe to call twice."""
        await self._modbus.close()

    async def _read_block(self, block: tuple[int, int], fields: tuple[tuple[int, int], ...]) -> list[int]:
        """The ``count`` registers of ``block = (first, count)``: in one request, or, once the device
        has refused that with exception 0x02, each of ``fields`` in a request of its own (the other
        registers of the block are then 0: nothing uses them).

        Raises:
            DeviceProtocolError: a field alone is absent (exception 0x02).
            DeviceUnavailable: see :meth:`read`.
        """
        first, count = block
        remembered = first in self._by_field
        if not remembered:
            try:
                return await self._modbus.read_registers(first, count)
            except RegistersAbsent as exc:
                if fields == (block,):
                    raise self._absent(first, str(exc)) from None
        words = [0] * count
        for address, size in fields:
            try:
                value = await self._modbus.read_registers(address, size)
            except RegistersAbsent as exc:
                refused = "" if remembered else f" (after {first}×{count} was refused too)"
                raise self._absent(first, f"{exc}{refused}") from None
            words[address - first : address - first + size] = value
        if not remembered:
            self._by_field.add(first)
            self._log.warning(
                "huawei.block_refused",
                block=f"{first}×{count}",
                now_reading=", ".join(f"{address}×{size}" for address, size in fields),
                problem="the device answers exception 0x02 (illegal address) to the block read, as firmware "
                "lacking a register inside the block does; reading the registers used one by one from now on",
            )
        return words

    def _absent(self, first: int, what: str) -> DeviceProtocolError:
        """The error for exception 0x02 to ``what``, a read in the block starting at ``first``."""
        hint = ""
        if first == BATTERY_SOC:  # battery: false is right only without battery: it reads 0 W
            hint = (
                "; the inverter has no battery registers at this unit id: for a site without a battery "
                "set battery: false, but not if a battery is connected (it would read as 0 W)"
            )
        return DeviceProtocolError(self.name, f"{self._endpoint}: {what}{hint}")
