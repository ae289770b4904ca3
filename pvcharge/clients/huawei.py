"""Modbus TCP link to a Huawei SUN2000 inverter or its SDongle: one lazily opened connection,
requests serialized and retried, each bounded by the caller's own timeout.

Device facts from the project reference ``meters.md`` §1.4 (sources: wlcrs/huawei-solar-lib
``huawei_solar.py`` [H2], ``const.py`` [H5]): one Modbus TCP client at a time; a wait after
connecting; slow replies; a pause between requests; exception 0x02 (illegal address) = register
absent, 0x04 (device failure) and 0x06 (busy) worth retrying, 0x80 Huawei's "permission denied";
a reply with a register count other than requested is treated as busy.  The meter semantics (which
registers, signs, what an absent one means) are in :mod:`pvcharge.meters.huawei`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU
from tenacity import retry_if_exception_type

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable
from pvcharge.retry import backoff_retrying, describe
from pvcharge.settings import setting

_EXC_ILLEGAL_ADDRESS = 0x02
_EXC_RETRYABLE = {0x04: "device failure", 0x06: "device busy"}  # reference §1.4 [H2]
_PYMODBUS_TIMEOUT_SLACK_S = 1.0  #: pymodbus' own timeouts are this much later than ``timeout_s``
_EXC_OTHER = {  # Modbus application protocol spec; 0x80 reference §1.4 [H2]
    0x01: "illegal function",
    0x03: "illegal data value",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target did not respond; check unit_id",
    0x80: "permission denied",
}


@dataclass(frozen=True)
class LinkSettings:
    """The settings of the link (reference §1.2, §1.4); the Huawei meter's ``Config`` extends it (fields
    made with ``setting()``)."""

    host: str = setting(doc="IP address or host name of the SDongle or the inverter")
    port: int = setting(
        502, doc="Modbus TCP port: 502 or 6607 (can change after a firmware update)", min=1, max=65535
    )
    unit_id: int = setting(
        1, doc="Modbus unit id: 1 via the SDongle, 0 on the inverter's own WLAN access point", min=0, max=247
    )
    timeout_s: float = setting(
        10.0, doc="connect and reply timeout (the SDongle can answer slowly)", unit="s", min=0.1, max=120
    )
    connect_delay_s: float = setting(
        1.5,
        doc="wait after connecting before the first request (huawei-solar waits 1.5 s)",
        unit="s",
        min=0,
        max=30,
    )
    request_gap_s: float = setting(
        0.05,
        doc="pause between requests; the inverter cannot cope with back-to-back ones",
        unit="s",
        min=0,
        max=5,
    )
    retries: int = setting(
        2, doc="extra attempts after a timeout, busy reply or broken connection", min=0, max=10
    )
    backoff_s: float = setting(
        0.5,
        doc="wait before the first retry; doubles per retry, plus up to as much jitter",
        unit="s",
        min=0,
        max=30,
    )


class RegistersAbsent(Exception):
    """Exception 0x02 (illegal address) to a read: a register in it does not exist for the device.
    The message names the register and the read, e.g. ``register 37760 absent: exception 0x02
    (illegal address) reading 37760×7``."""


class _Transient(Exception):
    """A failure worth retrying: timeout, connection problem, exception 0x04/0x06, short reply."""


@dataclass
class _Link:
    """One open Modbus TCP connection."""

    client: AsyncModbusTcpClient
    closed: asyncio.Event  #: set when the connection breaks (the device closed it, or we did)


class HuaweiModbus:
    """Reads holding registers from a SUN2000 over one lazily opened Modbus TCP connection.

    Requests are serialized with ``request_gap_s`` between them, the first one ``connect_delay_s``
    after connecting (reference §1.4 [H2, H5]).  Each request is tried ``1 + retries`` times with
    exponential backoff and jitter on timeouts, connection errors, exception 0x04 (device failure),
    0x06 (busy) and replies with a wrong register count (treated as busy, §1.4).  Connecting and
    each reply are bounded by ``timeout_s`` (the driver's own deadline; pymodbus' is only a
    backstop), a connection the device closes is noticed at once rather than at the timeout, and
    after a timeout or a broken connection the connection is closed and reopened on the next
    attempt.  pymodbus' own retries and automatic reconnects are switched off so that this is the
    only retry layer.  A SUN2000 serves one client at a time (§1.4): another client connecting
    closes our connection, and the next attempt reconnects.

    Args:
        config: the settings.
        name: the configured device name, used in errors and logs.
        log: a structlog logger for retries and reconnects (bound here to the device and endpoint).

    Attributes:
        endpoint: ``host:port unit N``, for messages.
        log: ``log`` bound to the device and endpoint.
    """

    def __init__(self, config: LinkSettings, *, name: str, log: Any) -> None:
        self.name = name
        self.endpoint = f"{config.host}:{config.port} unit {config.unit_id}"
        self.log = log.bind(device=name, endpoint=self.endpoint)
        self._config = config
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._next_request_at = 0.0  #: event-loop time before which no request may be sent
        self._lost_reason: str | None = None  #: why the last connection broke, until reconnected

    async def close(self) -> None:
        """Close the connection; the next read reconnects. Safe to call twice."""
        self._drop(None)

    async def read_registers(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address`` in one request, retried on transient failures.

        Raises:
            RegistersAbsent: exception 0x02 (not retried).
            DeviceUnavailable: no usable answer after ``1 + retries`` attempts: cannot connect, no
                answer within ``timeout_s``, connection closed by the device, exception 0x06
                (device busy) or 0x04 (device failure), a reply with a wrong register count; the
                message names the last cause.  One attempt takes at most ``2 × timeout_s +
                connect_delay_s + request_gap_s``, plus the backoff before each retry.
            DeviceProtocolError: another Modbus exception (not retried).
        """
        retrying = backoff_retrying(
            attempts=self._config.retries + 1,
            backoff_s=self._config.backoff_s,
            retry=retry_if_exception_type(_Transient),
            log=self.log,
            event="huawei.retry",
        )
        try:
            return await retrying(self._request, address, count)
        except _Transient as exc:
            raise DeviceUnavailable(
                self.name,
                f"{self.endpoint}: no usable answer after {self._config.retries + 1} attempt(s): {exc}",
            ) from exc

    async def _request(self, address: int, count: int) -> list[int]:
        """One attempt at reading ``count`` holding registers from ``address``."""
        loop = asyncio.get_running_loop()
        what = f"reading {address}×{count}"
        async with self._lock:
            link = await self._connect()
            await asyncio.sleep(max(0.0, self._next_request_at - loop.time()))
            try:
                result = await self._exchange(link, address, count, what)
            except _Transient as exc:
                self._drop(str(exc))
                raise
            except asyncio.CancelledError:
                # e.g. the daemon's per-read timeout: a late reply must not meet the next request
                self._drop(f"{what}: cancelled")
                raise
            finally:
                self._next_request_at = loop.time() + self._config.request_gap_s
        if result.isError():
            code = result.exception_code
            if code == _EXC_ILLEGAL_ADDRESS:
                raise RegistersAbsent(f"register {address} absent: exception 0x02 (illegal address) {what}")
            if code in _EXC_RETRYABLE:
                raise _Transient(f"{what}: exception 0x{code:02X} ({_EXC_RETRYABLE[code]})")
            raise DeviceProtocolError(
                self.name,
                f"{self.endpoint}: {what}: exception 0x{code:02X} ({_EXC_OTHER.get(code, 'unknown')})",
            )
        if len(result.registers) != count:
            raise _Transient(f"{what}: got {len(result.registers)} registers (treated as busy)")
        return list(result.registers)

    async def _exchange(self, link: _Link, address: int, count: int, what: str) -> ModbusPDU:
        """Send one request and wait for its reply, the connection breaking, or ``timeout_s``.

        Raises:
            _Transient: no reply within ``timeout_s``, the connection broke, or the reply was garbled.
        """
        timeout_s = self._config.timeout_s
        if link.closed.is_set():  # e.g. another client connected during connect_delay_s
            raise _Transient(f"{what}: connection closed by the device")
        read = asyncio.ensure_future(
            link.client.read_holding_registers(address, count=count, device_id=self._config.unit_id)
        )
        lost = asyncio.ensure_future(link.closed.wait())
        try:
            await asyncio.wait((read, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not read.done():
                read.cancel()
        if not read.done() or read.cancelled():
            if lost.done() and not lost.cancelled():
                raise _Transient(f"{what}: connection closed by the device")
            raise _Transient(f"{what}: no answer within {timeout_s:g} s")
        try:
            return read.result()
        except ConnectionException as exc:
            raise _Transient(f"{what}: connection closed by the device") from exc
        except ModbusException as exc:
            raise _Transient(f"{what}: garbled reply ({exc})") from exc
        except OSError as exc:
            raise _Transient(f"{what}: connection error ({describe(exc)})") from exc

    async def _connect(self) -> _Link:
        """The open connection, connecting (and waiting ``connect_delay_s``) when there is none."""
        if self._link is not None:
            if self._link.client.connected and not self._link.closed.is_set():
                return self._link
            self._drop("connection closed by the device")
        cfg = self._config
        closed = asyncio.Event()

        def traced(connected: bool) -> None:
            if not connected:
                closed.set()

        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            name=self.name,
            timeout=cfg.timeout_s + _PYMODBUS_TIMEOUT_SLACK_S,  # ours below fires first
            retries=0,
            reconnect_delay=0,
            trace_connect=traced,
        )
        try:
            async with asyncio.timeout(cfg.timeout_s):
                connected = await client.connect()
        except TimeoutError:
            client.close()
            raise _Transient(f"cannot connect: no answer within {cfg.timeout_s:g} s") from None
        except BaseException:
            client.close()
            raise
        if not connected:
            client.close()
            raise _Transient("cannot connect: connection refused, or host unknown or unreachable")
        if self._lost_reason is not None:
            self.log.warning("huawei.reconnected", after=self._lost_reason)
            self._lost_reason = None
        self._link = _Link(client, closed)
        await asyncio.sleep(cfg.connect_delay_s)
        return self._link

    def _drop(self, reason: str | None) -> None:
        """Close the connection; ``reason`` (why it broke) is logged on the next reconnect."""
        if self._link is not None:
            self._link.closed.set()
            self._link.client.close()
            self._link = None
            self._lost_reason = reason
            if reason is not None:
                self.log.debug("huawei.disconnected", reason=reason)
