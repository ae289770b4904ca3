"""OCPP 1.6J central system for one charge point: the WebSocket server and the charge point's reports.

pvcharge is the *central system* (the server); the wallbox is the *charge point* (the client) and
connects to ``ws://HOST:PORT/<charge point id>`` with the WebSocket subprotocol ``ocpp1.6``
(OCPP-J 1.6 specification §3.1, §3.2).  The RPC framing (CALL, CALLRESULT, CALLERROR), the JSON schemas
of every message and the camelCase/snake_case mapping come from the mobilityhouse ``ocpp`` library
(``ocpp.v16``); the socket from ``websockets``.

Security profile 1 (OCA "Improved security for OCPP 1.6-J", §2.4; OCTT TC_085): the charge point sends
``Authorization: Basic base64(<charge point id>:<password>)`` with its upgrade request; the server
answers a missing or wrong login with HTTP 401 and never upgrades.  Without a password any client that
knows the charge point id may connect: only for loopback (the driver's ``Config`` enforces that).
Security profile 2 adds TLS (``wss://``) with a given certificate; profile 3 (client certificates) is
not implemented.

What the charge point reports (OCPP 1.6 edition 2, §4 "Operations initiated by Charge Point") is kept in
:class:`ConnectorState`: its StatusNotification, MeterValues (each sampled value converted to W, Wh, A,
% by its ``unit``: §7.31 UnitOfMeasure; missing ``measurand`` = Energy.Active.Import.Register, missing
``unit`` = Wh, §7.45 SampledValue) and its transaction.  pvcharge answers every BootNotification with
Accepted, every Heartbeat with the time, Authorize and StartTransaction with Accepted for an id tag in
the configured list (or for any, without a list) and Invalid otherwise.

Only one connection per charge point id is kept: a newer one replaces an older one (a rebooted box
reconnects before the server notices that the old socket is dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar, cast

import structlog
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, basic_auth, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from pvcharge.errors import DeviceProtocolError, DeviceUnavailable

_log = structlog.get_logger(__name__)

#: the WebSocket subprotocol of OCPP-J 1.6 (OCPP-J 1.6 §3.1.2).
SUBPROTOCOL = Subprotocol("ocpp1.6")
#: the Heartbeat interval pvcharge asks for in its BootNotification answer, in s.
HEARTBEAT_INTERVAL_S = 60

#: SampledValue ``unit`` → factor to W, Wh, A or % (OCPP 1.6 §7.31); other units are kept unscaled.
_UNIT_SCALE = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "V": 1.0, "Percent": 1.0}


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def handles(action: Action) -> Callable[[_Handler], _Handler]:
    """``ocpp.routing.on`` with its type: marks a method of a ChargePoint as the handler of ``action``."""
    return cast(Callable[[_Handler], _Handler], on(action))


def ocpp_time(moment: datetime) -> str:
    """An aware ``datetime`` as OCPP's ``dateTime`` (RFC 3339 in UTC, whole seconds, e.g.
    ``2026-01-01T12:00:00Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_now() -> str:
    """The wall-clock time as OCPP's ``dateTime``: the charge point's clock is real time."""
    return ocpp_time(datetime.now(UTC))


def sample_key(sample: dict[str, Any]) -> str:
    """``measurand`` (default Energy.Active.Import.Register) plus ``.L1``/``.L2``/``.L3`` for a phase value;
    ``L1-N`` counts as ``L1``; a neutral or line-to-line value gets its own key (``.N``, ``.L1-L2``)."""
    measurand = str(sample.get("measurand") or "Energy.Active.Import.Register")
    phase = sample.get("phase")
    if not phase:
        return measurand
    phase = str(phase).removesuffix("-N")
    return f"{measurand}.{phase}"


def sample_value(sample: dict[str, Any]) -> float:
    """The value of one SampledValue in W, Wh, A, V or % (``unit`` default Wh).

    Raises:
        ValueError: ``value`` is not a decimal number (``format: SignedData`` is not decoded).
    """
    if sample.get("format") == "SignedData":
        raise ValueError(f"signed meter data is not decoded ({sample_key(sample)})")
    value = float(str(sample.get("value", "")).strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{sample_key(sample)}: not a finite number")
    return value * _UNIT_SCALE.get(str(sample.get("unit") or "Wh"), 1.0)


@dataclass
class ConnectorState:
    """What the charge point last reported about the configured connector (times on the daemon's clock).

    Attributes:
        status: the last StatusNotification ``status`` (``"Available"``, ``"Charging"``, ...), ``None``
            before the first.
        error_code: its ``errorCode`` (``"NoError"`` normally) and ``info`` (vendor text or ``None``).
        charging_since_s: when the status last became ``Charging``.
        samples: the last value of each measurand key (:func:`sample_key`) in W, Wh, A, V or %.
        meter_at_s: when the last MeterValues for the connector arrived, ``None`` before the first.
        transaction_id: the running transaction (pvcharge's id), ``None`` without one.
    """

    status: str | None = None
    error_code: str = "NoError"
    info: str | None = None
    charging_since_s: float | None = None
    samples: dict[str, float] = field(default_factory=dict)
    meter_at_s: float | None = None
    transaction_id: int | None = None


@dataclass
class Traffic:
    """The charge point's traffic: the calls it sent, by action, and its connections."""

    received: Counter[str] = field(default_factory=Counter)
    connections: int = 0


class _Session(ChargePoint):  # type: ignore[misc]  # the ocpp library has no type information
    """One WebSocket connection of the charge point, with pvcharge's answers to its calls."""

    def __init__(self, central: CentralSystem, connection: ServerConnection) -> None:
        super().__init__(central.charge_point_id, connection, response_timeout=central.response_timeout_s)
        self.central = central
        self.connection = connection

    async def route_message(self, raw_msg: str) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(raw_msg)
            if isinstance(message, list) and len(message) > 2 and message[0] == 2:
                self.central.traffic.received[str(message[2])] += 1
        await super().route_message(raw_msg)

    @handles(Action.boot_notification)
    def _boot(self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any) -> Any:
        self.central.boot = {"vendor": charge_point_vendor, "model": charge_point_model, **kwargs}
        self.central.boot_event.set()
        self.central.log.info(
            "ocpp.boot",
            vendor=charge_point_vendor,
            model=charge_point_model,
            firmware=kwargs.get("firmware_version"),
        )
        return call_result.BootNotification(
            current_time=utc_now(), interval=HEARTBEAT_INTERVAL_S, status="Accepted"
        )

    @handles(Action.heartbeat)
    def _heartbeat(self, **kwargs: Any) -> Any:
        return call_result.Heartbeat(current_time=utc_now())

    @handles(Action.status_notification)
    def _status(self, connector_id: int, error_code: str, status: str, **kwargs: Any) -> Any:
        central = self.central
        if connector_id == central.connector_id:
            state = central.state
            if status == "Charging" and state.status != "Charging":
                state.charging_since_s = central.clock()
            if status == "Available" and state.transaction_id is not None:
                state.transaction_id = None  # unplugged: any transaction is over (evcc does the same)
            if status == "Available":
                state.samples.pop("SoC", None)  # the next car's SoC is not this one's
            state.status, state.error_code, state.info = status, error_code, kwargs.get("info")
            central.status_event.set()
            central.log.debug("ocpp.status", status=status, error_code=error_code)
        elif connector_id == 0 and status in ("Unavailable", "Faulted"):
            central.log.warning("ocpp.charge_point_status", status=status, error_code=error_code)
        return call_result.StatusNotification()

    @handles(Action.meter_values)
    def _meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any) -> Any:
        """Keep the samples (oldest first) and adopt a transaction the connector has but pvcharge did not
        start (it began before pvcharge started)."""
        central = self.central
        if connector_id == central.connector_id:
            state = central.state
            for value in sorted(meter_value, key=lambda v: str(v.get("timestamp", ""))):
                for sample in value.get("sampled_value", []):
                    try:
                        state.samples[sample_key(sample)] = sample_value(sample)
                    except ValueError as exc:
                        central.log.debug("ocpp.sample_ignored", sample=sample, reason=str(exc))
            state.meter_at_s = central.clock()
            transaction_id = kwargs.get("transaction_id")
            if state.transaction_id is None and transaction_id and state.status != "Available":
                state.transaction_id = transaction_id  # begun before pvcharge started (evcc does the same)
        return call_result.MeterValues()

    @handles(Action.authorize)
    def _authorize(self, id_tag: str, **kwargs: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": self.central.id_tag_status(id_tag)})

    @handles(Action.start_transaction)
    def _start_transaction(self, connector_id: int, id_tag: str, **kwargs: Any) -> Any:
        central = self.central
        status = central.id_tag_status(id_tag)
        transaction_id = next(central.transaction_ids)
        if connector_id == central.connector_id and status == "Accepted":
            central.state.transaction_id = transaction_id
        central.log.info("ocpp.start_transaction", transaction_id=transaction_id, id_tag_status=status)
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": status})

    @handles(Action.stop_transaction)
    def _stop_transaction(self, transaction_id: int, **kwargs: Any) -> Any:
        central = self.central
        if central.state.transaction_id == transaction_id:
            central.state.transaction_id = None
        central.log.info("ocpp.stop_transaction", transaction_id=transaction_id, reason=kwargs.get("reason"))
        return call_result.StopTransaction()

    @handles(Action.data_transfer)
    def _data_transfer(self, vendor_id: str, **kwargs: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @handles(Action.firmware_status_notification)
    def _firmware_status(self, **kwargs: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @handles(Action.diagnostics_status_notification)
    def _diagnostics_status(self, **kwargs: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()


class CentralSystem:
    """The WebSocket server for one charge point and what it last reported.

    Args:
        host, port: where to listen (port 0: any free one, see :attr:`port` after :meth:`start`).
        charge_point_id: the id the charge point puts at the end of its URL (and, with a password, as
            its Basic login name).
        connector_id: the connector whose status and meter values are kept (1 for a single-outlet box).
        password: the security profile 1 password; ``None`` accepts any client (loopback only).
        id_tags: the id tags to accept in Authorize and StartTransaction; ``None`` accepts every tag.
        name: the device name for errors and logs.
        clock: the daemon's clock, for :class:`ConnectorState` times.
        response_timeout_s: how long to wait for the charge point's answer to one call.
        tls: ``(certificate file, key file)`` (PEM) to serve ``wss://`` (security profile 2), ``None`` for
            ``ws://``.

    Attributes:
        state: the connector's :class:`ConnectorState`.
        boot: the last BootNotification's fields (``vendor``, ``model``, ``firmware_version``, ...).
        traffic: what the charge point sent and how often it connected (:class:`Traffic`).
        generation: counts connections; a driver compares it to know that a new one needs its setup.
        status_event: set whenever a StatusNotification for the connector arrives.
        boot_event: set by a BootNotification, cleared by a new connection.
        connected_event: set while the charge point is connected.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        charge_point_id: str,
        connector_id: int,
        password: str | None,
        id_tags: frozenset[str] | None,
        name: str,
        clock: Callable[[], float],
        response_timeout_s: float,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.host, self._port = host, port
        self.charge_point_id = charge_point_id
        self.connector_id = connector_id
        self.response_timeout_s = response_timeout_s
        self.name = name
        self.clock = clock
        self.log = _log.bind(device=name)
        self.state = ConnectorState()
        self.boot: dict[str, Any] | None = None
        self.traffic = Traffic()
        self.generation = 0
        self.status_event = asyncio.Event()
        self.boot_event = asyncio.Event()
        self.connected_event = asyncio.Event()
        self.transaction_ids = itertools.count(1)
        self.disconnected_at_s: float | None = None
        self._tls = tls
        # security profile 1: websockets checks the Basic login (password compared in constant time) and
        # answers 401 with WWW-Authenticate
        self._login = (
            basic_auth(realm="pvcharge OCPP", credentials=(charge_point_id, password))
            if password is not None
            else None
        )
        self._id_tags = id_tags
        self._server: Server | None = None
        self._session: _Session | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on (the bound one once started with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """The URL the charge point is to connect to."""
        scheme = "wss" if self._tls is not None else "ws"
        return f"{scheme}://{self.host}:{self._port}/{self.charge_point_id}"

    @property
    def connected(self) -> bool:
        """The charge point has a connection open."""
        return self._session is not None

    def id_tag_status(self, id_tag: str) -> str:
        """``Accepted`` for an id tag in the list (or any, without one), else ``Invalid`` (§7.1)."""
        return "Accepted" if self._id_tags is None or id_tag in self._id_tags else "Invalid"

    async def start(self) -> None:
        """Listen, unless already listening.

        Raises:
            DeviceUnavailable: the address cannot be bound (in use, not on this host, no permission).
            DeviceProtocolError: the TLS certificate or key cannot be loaded.
        """
        if self._server is not None:
            return
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(*self._tls)
            except (OSError, ssl.SSLError) as exc:
                raise DeviceProtocolError(
                    self.name, f"cannot load tls_cert_file/tls_key_file {self._tls[0]}: {exc}"
                ) from exc
        try:
            self._server = await serve(
                self._serve,
                self.host,
                self._port,
                subprotocols=[SUBPROTOCOL],
                process_request=self._check_request,
                server_header=None,
                ssl=context,
            )
        except OSError as exc:
            raise DeviceUnavailable(
                self.name, f"cannot listen on {self.host}:{self._port} for the charge point: {exc.strerror}"
            ) from exc
        self._port = self._server.sockets[0].getsockname()[1]
        self.log.info("ocpp.listening", url=self.url)

    async def close(self) -> None:
        """Close the connection and stop listening. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self._session = None
        self.connected_event.clear()

    async def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse an upgrade for another charge point id (404) or without the right login (401)."""
        path = request.path.split("?", 1)[0].rstrip("/")
        if path.rpartition("/")[2] != self.charge_point_id:
            self.log.warning("ocpp.unknown_charge_point", path=path)
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point id\n")
        if self._login is None:
            return None
        refused = await self._login(connection, request)
        if refused is not None:
            self.log.warning("ocpp.login_refused", charge_point=self.charge_point_id)
        return refused

    async def _serve(self, connection: ServerConnection) -> None:
        if connection.subprotocol != SUBPROTOCOL:
            self.log.warning(
                "ocpp.no_subprotocol",
                offered=connection.request.headers.get("Sec-WebSocket-Protocol")
                if connection.request
                else None,
            )
            await connection.close(1002, "subprotocol ocpp1.6 required")
            return
        session = _Session(self, connection)
        old, self._session = self._session, session
        if old is not None:
            self.log.info("ocpp.replaced_connection")
            await old.connection.close(1000, "replaced by a newer connection")
        self.generation += 1
        self.boot_event.clear()
        self.connected_event.set()
        self.traffic.connections += 1
        self.disconnected_at_s = None
        self.log.info("ocpp.connected", remote=str(connection.remote_address[0]))
        try:
            await session.start()
        except ConnectionClosed as exc:
            self.log.info("ocpp.disconnected", code=exc.rcvd.code if exc.rcvd else None)
        finally:
            if self._session is session:
                self._session = None
                self.connected_event.clear()
                self.disconnected_at_s = self.clock()

    async def call(self, payload: Any) -> Any:
        """Send one call to the charge point and return its answer (an ``ocpp.v16.call_result`` object).

        Raises:
            DeviceUnavailable: no connection, the connection closed before the answer, or no answer
                within ``response_timeout_s``.
            DeviceProtocolError: the charge point answered with a CALLERROR (its code and description).
        """
        action = type(payload).__name__
        session = self._session
        if session is None:
            raise DeviceUnavailable(self.name, f"{action}: the charge point is not connected")
        request = asyncio.ensure_future(session.call(payload, suppress=False))
        closed = asyncio.ensure_future(session.connection.wait_closed())
        try:
            await asyncio.wait({request, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not request.done():
                request.cancel()
        if request.cancelled():
            raise DeviceUnavailable(self.name, f"{action}: the connection closed before the answer")
        exc = request.exception()
        if isinstance(exc, asyncio.TimeoutError):
            raise DeviceUnavailable(
                self.name, f"{action}: no answer within {self.response_timeout_s:g} s"
            ) from exc
        if isinstance(exc, ConnectionClosed):
            raise DeviceUnavailable(self.name, f"{action}: the connection closed") from exc
        if isinstance(exc, OCPPError):
            raise DeviceProtocolError(
                self.name, f"{action}: the charge point answered CALLERROR {exc.code}: {exc.description}"
            ) from exc
        if exc is not None:
            raise exc
        return request.result()
