"""A Huawei SUN2000 inverter (with power meter and battery) as a Modbus TCP server on loopback.

Built on pymodbus' server (``ModbusTcpServer`` serving a ``SimDevice``): pymodbus answers addresses
outside the register map with exception 0x02, and the device's action fills the registers from
``site.state()`` when a request arrives, so the emulator follows the simulated site.

Registers, encodings and vendor signs as in the project reference ``meters.md`` §1.3 (sources:
wlcrs/huawei-solar-lib ``registers.py`` and ``register_values.py``; evcc; ioBroker.sun2000).
Holding registers, 32-bit values high word first:

==========  =====  ======  ===========================================================
register    type   gain    value served
==========  =====  ======  ===========================================================
30000       STR15  –       model ``SUN2000-10KTL-M1``
32064       I32    1 W     PV input power
32080       I32    1 W     inverter active power: PV + battery discharge
37100       U16    enum    meter status 1 (normal)
37101/3/5   I32    10 V    grid phase voltages, 230 V
37107/9/11  I32    100 A   grid phase currents, + = export: −grid / 3 / 230 V each
37113       I32    1 W     meter active power, + = export: −grid_power_w
37125       U16    enum    meter type 1 (three-phase)
37760       U16    10 %    battery SoC                                   (battery only)
37762       U16    enum    battery running status 2 (running)            (battery only)
37765       I32    1 W     battery power, + = charging: −battery_power_w (battery only)
==========  =====  ======  ===========================================================

Unlisted registers less than 16 away from listed ones read as 0 (so block reads such as
``37760×7`` work); all others answer exception 0x02.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import struct
from types import TracebackType
from typing import Protocol, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from pvcharge.sim.site import SiteState

MODEL = "SUN2000-10KTL-M1"
PHASE_VOLTAGE_V = 230.0
MAX_GAP = 16  #: unlisted registers closer than this to listed ones read as 0


class StateSource(Protocol):
    """Anything that tells what the site measures now, e.g. ``SiteModel``."""

    def state(self) -> SiteState: ...


def _i32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", round(value))))


def _u16(value: float) -> list[int]:
    return [round(value)]


def _str(text: str, size: int) -> list[int]:
    data = text.encode("ascii").ljust(2 * size, b"\0")
    return list(struct.unpack(f">{size}H", data))


async def _no_such_unit(*_: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class HuaweiEmulator:
    """A SUN2000 on ``host:port`` whose registers follow ``site``.

    Args:
        site: the state source, read at each request.
        host: a loopback IP address.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        unit_id: the Modbus unit id it answers as; other unit ids get exception 0x0B (gateway target
            did not respond, what a Modbus gateway such as the SDongle reports for an absent unit), or
            with ``unit_id=0`` every unit id is answered.
        battery: serve the battery registers; without, they answer exception 0x02 like a site
            without a battery.

    Fault knobs, settable at any time:
        reply_delay_s: delay before each reply, in s.
        busy_next: answer the next N requests with exception 0x06 (device busy).
        stale_freeze: keep serving the values of the last request before it was set.

    Raises:
        ValueError: ``host`` is not a loopback IP address.
    """

    def __init__(
        self,
        site: StateSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
        battery: bool = True,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"the Huawei emulator listens on loopback only; host must be e.g. 127.0.0.1, got {host!r}"
            )
        self.site = site
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.battery = battery
        self.reply_delay_s = 0.0
        self.busy_next = 0
        self.stale_freeze = False
        self._state: SiteState | None = None
        self._server: ModbusTcpServer | None = None

    def registers(self, state: SiteState) -> dict[int, list[int]]:
        """The served registers for ``state``: start address → vendor-encoded words."""
        phase_a = state.grid_power_w / 3 / PHASE_VOLTAGE_V
        regs = {
            30000: _str(MODEL, 15),
            32064: _i32(state.pv_power_w),
            32080: _i32(state.pv_power_w + state.battery_power_w),
            37100: _u16(1),
            37101: _i32(PHASE_VOLTAGE_V * 10),
            37103: _i32(PHASE_VOLTAGE_V * 10),
            37105: _i32(PHASE_VOLTAGE_V * 10),
            37107: _i32(-phase_a * 100),
            37109: _i32(-phase_a * 100),
            37111: _i32(-phase_a * 100),
            37113: _i32(-state.grid_power_w),
            37125: _u16(1),
        }
        if self.battery:
            regs |= {
                37760: _u16(state.battery_soc_pct * 10),
                37762: _u16(2),
                37765: _i32(-state.battery_power_w),
            }
        return regs

    async def start(self) -> None:
        """Listen on ``host:port`` (a restart reuses the port picked the first time).

        Raises:
            RuntimeError: the port cannot be bound.
        """
        if self._server is not None:
            return
        # Huawei answers block reads across small gaps (huawei-solar merges reads over gaps < 16,
        # reference §1.4), so gaps shorter than that read as 0; everything else answers 0x02.
        words = {
            first + i: word
            for first, block in self.registers(self.site.state()).items()
            for i, word in enumerate(block)
        }
        served = sorted(words)
        for a, b in itertools.pairwise(served):
            if b - a < MAX_GAP:
                words.update(dict.fromkeys(range(a + 1, b), 0))
        # Read-only: pymodbus answers writes with 0x02, as a SUN2000 does without installer login (§1.4).
        blocks = [SimData(a, values=w, datatype=DataType.REGISTERS, readonly=True) for a, w in words.items()]
        devices = [SimDevice(self.unit_id, simdata=blocks, action=self._on_request)]
        if self.unit_id != 0:  # SimDevice id 0 catches every other unit id
            devices.append(SimDevice(0, simdata=blocks, action=_no_such_unit))
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        self.port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every client connection. Safe to call twice."""
        if self._server is not None:
            self._server.close()
            self._server = None
            await asyncio.sleep(0)  # let the transports run their close callbacks

    async def __aenter__(self) -> HuaweiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for a request to valid addresses; it fills ``registers`` in place."""
        if self._state is None or not self.stale_freeze:
            self._state = self.site.state()
        state = self._state  # measured on arrival, however late the reply
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        if self.busy_next > 0:
            self.busy_next -= 1
            return ExcCodes.DEVICE_BUSY
        for first, words in self.registers(state).items():
            offset = first - start_address
            registers[offset : offset + len(words)] = words
        return None
