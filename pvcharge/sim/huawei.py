"""A Huawei SUN2000 inverter (with power meter and battery) as a Modbus TCP server on loopback.

Built on pymodbus' server (``ModbusTcpServer`` serving a ``SimDevice``): pymodbus answers addresses
outside the register map with exception 0x02, and the device's action fills the registers from
``site.state()`` when a request arrives, so the emulator follows the simulated site.

Registers, encodings and vendor signs as in the project reference ``meters.md`` §1.3 (sources:
wlcrs/huawei-solar-lib ``registers.py`` and ``register_values.py``, the community's transcription of
Huawei's "Solar Inverter Modbus Interface Definitions"; evcc; ioBroker.sun2000).  The huawei-solar
register names are given where the reference lacks a register.  Holding registers, 32-bit values
high word first, strings ASCII padded with NULs:

==========  =====  ======  ===========================================================
register    type   gain    value served
==========  =====  ======  ===========================================================
30000       STR15  –       model ``SUN2000-10KTL-M1``
30015       STR10  –       serial number :data:`SERIAL` (``serial_number``)
30025       STR10  –       part number :data:`PART_NUMBER` (``pn``)
30035       STR15  –       firmware version :data:`FIRMWARE` (``firmware_version``)
30050       STR15  –       software version :data:`SOFTWARE` (``software_version``)
30071       U16    1       PV strings 2 (``nb_pv_strings``; the 10KTL-M1 has one per MPPT)
30072       U16    1       MPP trackers 2 (``nb_mpp_tracks``)
30073       U32    1 W     rated power 10000 W (``rated_power``)
30075       U32    1 W     maximum active power 11000 W (``P_max``)
32064       I32    1 W     PV input power
32080       I32    1 W     inverter active power: PV + battery discharge
32089       U16    enum    device status 0x0200 on-grid (``device_status``)
37000       U16    enum    battery unit 1 status 2 (running)             (battery only)
37001       I32    1 W     battery unit 1 power, + = charging            (battery only)
37003       U16    10 V    battery unit 1 bus voltage, :data:`BUS_VOLTAGE_V`
                           (``storage_unit_1_bus_voltage``)              (battery only)
37004       U16    10 %    battery unit 1 SoC                            (battery only)
37100       U16    enum    meter status 1 (normal)
37101/3/5   I32    10 V    grid phase voltages, 230 V
37107/9/11  I32    100 A   grid phase currents, + = export: −grid / 3 / 230 V each
37113       I32    1 W     meter active power, + = export: −grid_power_w
37125       U16    enum    meter type 1 (three-phase)
37200       U16    1       optimizers 0 (``nb_optimizers``)
37758       U32    1 Wh    battery rated capacity 10000 Wh               (battery only)
37760       U16    10 %    battery SoC                                   (battery only)
37762       U16    enum    battery running status 2 (running)            (battery only)
37763       U16    10 V    battery bus voltage, :data:`BUS_VOLTAGE_V`
                           (``storage_bus_voltage``)                     (battery only)
37764       I16    10 A    battery bus current, + = charging: power / voltage
                           (``storage_bus_current``)                     (battery only)
37765       I32    1 W     battery power, + = charging: −battery_power_w (battery only)
42900       U16    bool    daylight saving time 1 (``daylight_saving_time``)
43006       I16    1 min   time zone +60 min, Central European (``time_zone``)
47000       U16    enum    battery 1 model: 2 LUNA2000 (0 none without battery)
47089       U16    enum    battery 2 model: 0 none
==========  =====  ======  ===========================================================

These are what huawei-solar 2.5.0's ``create_tcp_bridge`` reads (30000, 30015×50, 30071, 37200,
47000, 47089, 37100, 37125, 42900, 43006; reference §1.5) and the 37000–37004 block other tools read
(EaseeLoadBalancer, ioBroker.sun2000).  Unlisted registers less than 16 away from listed ones read as
0 (so block reads such as ``37760×7`` work), unless ``refuse_gaps``: then, like firmware that
answers a block read spanning an undocumented register (37761 inside 37760–37766) with exception
0x02, every read touching an unlisted register answers 0x02.  All other registers answer 0x02.

The emulator answers unit id 0 and ``unit_id`` (1 by default): the inverter's own access point and
huawei-solar's default use 0, an SDongle 1, some SDongles 0 too (reference §1.2); any other unit id
gets exception 0x0B (gateway target did not respond), as from an SDongle.

Faults (:mod:`pvcharge.sim.faults`): ``emulator.faults.set(Fault.X)`` makes every request misbehave
until ``emulator.faults.clear()``; it plays every fault of ``MODBUS_FAULTS``:

==============  ==================================================================================
fault           what the emulator does
==============  ==================================================================================
TIMEOUT         takes the request and never answers it (not even after the fault is cleared)
DROP            closes the client's TCP connection without answering
SLOW            answers correctly ``faults.delay_s`` late (the values measured on arrival)
STALE           answers with the values measured when the fault was set (a device that stopped
                updating)
GARBAGE         answers every requested register with 0xFFFF, all bits set: well-formed, but SoC
                0xFFFF ("no value", as a number 6553.5 %), grid power −1 W, … ; a Huawei EMMA
                behind a Modbus proxy was reported answering all bits set on communication
                hiccups (wlcrs/huawei_solar#1258)
BUSY            exception 0x06 (server device busy), as a SUN2000 answers right after connecting
DEVICE_FAILURE  exception 0x04 (server device failure)
KICK            one Modbus TCP client at a time, like an SDongle or inverter (reference §1.4): a new
                connection closes every older one; requests are answered normally
==============  ==================================================================================

``faults.played`` counts the requests each fault was played on, for KICK the connections it closed;
``reads`` counts the read requests by (first register, count), whatever they were answered with.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from pvcharge.settings import is_loopback
from pvcharge.sim.faults import MODBUS_FAULTS, Fault, FaultSwitch
from pvcharge.sim.site import SiteState

log = logging.getLogger(__name__)

MODEL = "SUN2000-10KTL-M1"
SERIAL = "HV2150123456"  #: 30015, a made-up serial number in Huawei's format
PART_NUMBER = "01074385"  #: 30025, made up
FIRMWARE = "V100R001C00"  #: 30035
SOFTWARE = "V100R001C00SPC141"  #: 30050
RATED_POWER_W = 10_000  #: 30073, the 10KTL's rated power
MAX_POWER_W = 11_000  #: 30075, the 10KTL-M1's maximum active power
BATTERY_CAPACITY_WH = 10_000  #: 37758, a LUNA2000-10 (the reference site's 10 kWh battery)
BUS_VOLTAGE_V = 450.0  #: 37003/37763, in V: made up, a high-voltage battery's DC bus
TIME_ZONE_MIN = 60  #: 43006, UTC+1
PHASE_VOLTAGE_V = 230.0
MAX_GAP = 16  #: unlisted registers closer than this to listed ones read as 0
GARBAGE_WORD = 0xFFFF  #: what every register reads while GARBAGE is played
TIMEOUT_POLL_S = 0.05  #: how often a request held by TIMEOUT checks whether to give up


class StateSource(Protocol):
    """Anything that tells what the site measures now, e.g. ``SiteModel``."""

    def state(self) -> SiteState: ...


def _i32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", round(value))))


def _u16(value: float) -> list[int]:
    return [round(value)]


def _i16(value: float) -> list[int]:
    return [round(value) & 0xFFFF]


def _u32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">I", round(value))))


def _str(text: str, size: int) -> list[int]:
    data = text.encode("ascii").ljust(2 * size, b"\0")
    return list(struct.unpack(f">{size}H", data))


@dataclass(frozen=True)
class _Reply:
    """What the request being answered serves: the state measured for it, or garbage."""

    state: SiteState
    garbage: bool


#: set by the connection handler for the request it answers, read by the register action below it
_REPLY: contextvars.ContextVar[_Reply | None] = contextvars.ContextVar("huawei_reply", default=None)


class _Faults(FaultSwitch):
    """A :class:`FaultSwitch` that tells the emulator when the fault changes (STALE freezes then)."""

    def __init__(self, supported: Iterable[Fault], changed: Callable[[], None]) -> None:
        super().__init__(supported)
        self._changed = changed

    def set(
        self, fault: Fault | None, *, delay_s: float | None = None, retry_after_s: float | None = None
    ) -> None:
        super().set(fault, delay_s=delay_s, retry_after_s=retry_after_s)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()


class HuaweiEmulator:
    """A SUN2000 on ``host:port`` whose registers follow ``site``.

    Args:
        site: the state source, read at each request.
        host: a loopback IP address.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        unit_id: the Modbus unit id it answers as, besides 0 (both with the same registers; the one
            to configure in pvcharge, as the demo does); other unit ids get exception 0x0B (gateway
            target did not respond, what a Modbus gateway such as the SDongle reports for an absent
            unit).
        battery: serve the battery registers; without, they answer exception 0x02 like a site
            without a battery.
        refuse_gaps: answer exception 0x02 to a read that spans an unlisted register, like firmware
            that refuses ``37760×7`` because of 37761; default: such registers read as 0.

    Attributes:
        faults: the fault played on every request (module docstring), set and cleared at any time.
        reply_delay_s: delay before every reply, in s, fault or not (a slow SDongle); SLOW adds
            ``faults.delay_s`` on top.
        busy_next: answer the next N requests with exception 0x06 (device busy), then behave again (a
            BUSY that ends by itself, as right after connecting).
        connections: TCP connections accepted so far (a driver's reconnects show here).
        reads: read requests received, by (first register, count), whatever the answer.

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
        refuse_gaps: bool = False,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(
                f"the Huawei emulator listens on loopback only; host must be e.g. 127.0.0.1, got {host!r}"
            )
        self.site = site
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.battery = battery
        self.refuse_gaps = refuse_gaps
        self.faults: FaultSwitch = _Faults(MODBUS_FAULTS, self._fault_changed)
        self.reply_delay_s = 0.0
        self.busy_next = 0
        self.connections = 0
        self.reads: collections.Counter[tuple[int, int]] = collections.Counter()
        self._frozen: SiteState | None = None  #: the state STALE serves
        self._server: ModbusTcpServer | None = None
        self._handlers: set[_Connection] = set()  #: open client connections
        self._tasks: set[asyncio.Task[Any]] = set()  #: requests being answered (or held by TIMEOUT)

    def registers(self, state: SiteState) -> dict[int, list[int]]:
        """The served registers for ``state``: start address → vendor-encoded words."""
        phase_a = state.grid_power_w / 3 / PHASE_VOLTAGE_V
        charge_w = -state.battery_power_w  # vendor sign: + = charging
        regs = {
            30000: _str(MODEL, 15),
            30015: _str(SERIAL, 10),
            30025: _str(PART_NUMBER, 10),
            30035: _str(FIRMWARE, 15),
            30050: _str(SOFTWARE, 15),
            30071: _u16(2),
            30072: _u16(2),
            30073: _u32(RATED_POWER_W),
            30075: _u32(MAX_POWER_W),
            32064: _i32(state.pv_power_w),
            32080: _i32(state.pv_power_w + state.battery_power_w),
            32089: _u16(0x0200),
            37100: _u16(1),
            37101: _i32(PHASE_VOLTAGE_V * 10),
            37103: _i32(PHASE_VOLTAGE_V * 10),
            37105: _i32(PHASE_VOLTAGE_V * 10),
            37107: _i32(-phase_a * 100),
            37109: _i32(-phase_a * 100),
            37111: _i32(-phase_a * 100),
            37113: _i32(-state.grid_power_w),
            37125: _u16(1),
            37200: _u16(0),
            42900: _u16(1),
            43006: _i16(TIME_ZONE_MIN),
            47000: _u16(2 if self.battery else 0),
            47089: _u16(0),
        }
        if self.battery:
            regs |= {
                37000: _u16(2),
                37001: _i32(charge_w),
                37003: _u16(BUS_VOLTAGE_V * 10),
                37004: _u16(state.battery_soc_pct * 10),
                37758: _u32(BATTERY_CAPACITY_WH),
                37760: _u16(state.battery_soc_pct * 10),
                37762: _u16(2),
                37763: _u16(BUS_VOLTAGE_V * 10),
                37764: _i16(charge_w / BUS_VOLTAGE_V * 10),
                37765: _i32(charge_w),
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
        # reference §1.4), so gaps shorter than that read as 0 (unless refuse_gaps); everything else
        # answers 0x02: pymodbus does that for the addresses it has no SimData for.
        words = {
            first + i: word
            for first, block in self.registers(self.site.state()).items()
            for i, word in enumerate(block)
        }
        served = sorted(words)
        for a, b in itertools.pairwise(served):
            if b - a < MAX_GAP and not self.refuse_gaps:
                words.update(dict.fromkeys(range(a + 1, b), 0))
        # Read-only: pymodbus answers writes with 0x02, as a SUN2000 does without installer login (§1.4).
        blocks = [SimData(a, values=w, datatype=DataType.REGISTERS, readonly=True) for a, w in words.items()]
        # SimDevice id 0 catches every unit id; _answer turns away those other than 0 and unit_id.
        devices = [SimDevice(0, simdata=blocks, action=self._on_request)]
        server = _Server(self, devices, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        self.port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every client connection, and give up held requests. Safe to call twice."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._handlers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the transports run their close callbacks

    @property
    def clients(self) -> int:
        """Client connections open now."""
        return len(self._handlers)

    async def __aenter__(self) -> HuaweiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- faults ----------------------------------------------------------------------------------
    def _fault_changed(self) -> None:
        """STALE freezes the values measured now; any other fault (or none) unfreezes."""
        self._frozen = self.site.state() if self.faults.active(Fault.STALE) else None

    def _measure(self) -> SiteState:
        if not self.faults.active(Fault.STALE):
            return self.site.state()
        if self._frozen is None:  # STALE set without set(), e.g. by assigning faults.fault
            self._frozen = self.site.state()
        return self._frozen

    def _connected(self, handler: _Connection) -> None:
        self.connections += 1
        if self.faults.active(Fault.KICK):
            for older in list(self._handlers):
                self._close(older)
                self.faults.played[Fault.KICK] += 1
        self._handlers.add(handler)

    def _close(self, handler: _Connection) -> None:
        """Close a client connection from the device's side."""
        self._handlers.discard(handler)
        handler.close()

    async def _answer(self, handler: _Connection, pdu: ModbusPDU) -> ModbusPDU | None:
        """The response to ``pdu``, or ``None`` for no answer at all."""
        address, count = getattr(pdu, "address", None), getattr(pdu, "count", None)
        if pdu.function_code == 0x03 and isinstance(address, int) and isinstance(count, int):
            self.reads[address, count] += 1
        fault = None if self.faults.active(Fault.KICK) else self.faults.play()  # KICK acts on connect
        if fault is Fault.TIMEOUT:
            # Hold the request until the client gives up on the connection, or the fault is cleared
            # (then it stays unanswered: the client has long given up on it).  Polled, not an Event:
            # a test may also assign ``faults.fault`` directly, which notifies nobody.
            while self.faults.active(Fault.TIMEOUT) and handler.is_active():  # noqa: ASYNC110
                await asyncio.sleep(TIMEOUT_POLL_S)
            return None
        if fault is Fault.DROP:
            self._close(handler)
            return None
        code: ExcCodes | None = None
        if fault is Fault.BUSY:
            code = ExcCodes.DEVICE_BUSY
        elif fault is Fault.DEVICE_FAILURE:
            code = ExcCodes.DEVICE_FAILURE
        elif self.busy_next > 0:
            self.busy_next -= 1
            code = ExcCodes.DEVICE_BUSY
        reply = None if code is not None else _Reply(self._measure(), garbage=fault is Fault.GARBAGE)
        delay_s = self.reply_delay_s + (self.faults.delay_s if fault is Fault.SLOW else 0.0)
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # the values stay those measured on arrival
        if code is None and pdu.dev_id not in (0, self.unit_id):
            code = ExcCodes.GATEWAY_NO_RESPONSE
        if code is not None:
            return ExceptionResponse(pdu.function_code, code)
        _REPLY.set(reply)
        try:
            return await pdu.datastore_update(handler.server.context, pdu.dev_id)
        except NoSuchIdException:  # cannot happen: SimDevice 0 catches every unit id
            return ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:  # as pymodbus' own handler does
            log.exception("huawei emulator: cannot answer %s", pdu)
            return ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)

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
        reply = _REPLY.get() or _Reply(self._measure(), garbage=False)
        offset = address - start_address
        if reply.garbage:
            registers[offset : offset + count] = [GARBAGE_WORD] * count
            return None
        registers[offset : offset + count] = [0] * count  # the gaps, should garbage have been served
        for first, words in self.registers(reply.state).items():
            offset = first - start_address
            registers[offset : offset + len(words)] = words
        return None


class _Server(ModbusTcpServer):
    """pymodbus' TCP server with a connection handler that plays the emulator's faults."""

    def __init__(self, emulator: HuaweiEmulator, devices: list[SimDevice], address: tuple[str, int]) -> None:
        super().__init__(devices, address=address)
        self.emulator = emulator

    def callback_new_connection(self) -> _Connection:
        return _Connection(self)


class _Connection(ServerRequestHandler):
    """One client connection: pymodbus' request handler, with faults, and answering each request
    with the transaction id it came with (pymodbus reads ``last_pdu`` again after a slow reply)."""

    def __init__(self, server: _Server) -> None:
        super().__init__(server, None, None, None)  # type: ignore[no-untyped-call]  # pymodbus: untyped
        self.emulator = server.emulator

    def callback_connected(self) -> None:
        super().callback_connected()
        self.emulator._connected(self)

    def callback_disconnected(self, exc: Exception | None) -> None:
        super().callback_disconnected(exc)
        self.emulator._handlers.discard(self)

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self.emulator._tasks.add(task)
        try:
            response = await self.emulator._answer(self, pdu)
        finally:
            if task is not None:
                self.emulator._tasks.discard(task)
        if response is None or not self.is_active():
            return
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]  # pymodbus: untyped
