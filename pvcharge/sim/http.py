"""What every HTTP(S) device emulator shares: an aiohttp server that listens on loopback only, serves
HTTPS with a throwaway certificate on request, and plays the HTTP faults of :mod:`pvcharge.sim.faults`.

Subclasses build their routes in :meth:`LoopbackHttpServer._application`.  The fault middleware is put
in front of every route, so each emulator plays every fault of :data:`~pvcharge.sim.faults.HTTP_FAULTS`
on every request while it is set (``emulator.faults.set(Fault.HTTP_503)``):

===============  ==================================================================================
fault            what the client gets
===============  ==================================================================================
``TIMEOUT``      nothing: the request is taken and never answered; once cleared, the connection is
                 closed
``DROP``         the connection closed without an answer
``SLOW``         the normal answer, ``faults.delay_s`` late
``HTTP_500``     ``500 Internal Server Error`` (plain text)
``HTTP_503``     ``503 Service Unavailable`` (plain text)
``HTTP_429``     ``429 Too Many Requests`` with ``Retry-After: ceil(faults.retry_after_s)`` (whole s)
``TRUNCATED``    the normal status and ``Content-Length``, but the connection closes half way through
                 the body (an empty body announces 1 byte and sends none)
``NOT_JSON``     ``200`` with an HTML error page (``text/html``)
``STALE``        the normal answer, with the values measured when the fault was set: the subclass
                 freezes its state in :meth:`LoopbackHttpServer._freeze` (called when ``STALE`` is
                 set) and thaws it in :meth:`LoopbackHttpServer._thaw` (when it ends)
``GARBAGE``      the normal answer with well-formed but impossible values: the subclass's handlers
                 check ``faults.active(Fault.GARBAGE)``
===============  ==================================================================================

Every request is recorded in :attr:`LoopbackHttpServer.received` before the fault is played, so a test
can count what a driver sent (e.g. nothing before a ``Retry-After``); :attr:`tls_handshakes` counts TLS
handshakes begun, which a driver that rejects the certificate never gets past.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, Self

import trustme
from aiohttp import web
from multidict import CIMultiDict

from pvcharge.settings import is_loopback
from pvcharge.sim.faults import HTTP_FAULTS, Fault, FaultSwitch

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the body of ``NOT_JSON``: what a proxy, a captive portal or a crashed web server sends instead.
NOT_JSON_BODY = (
    "<html><head><title>500 Internal Server Error</title></head>"
    "<body><h1>Internal Server Error</h1><p>The server encountered an internal error and was unable "
    "to complete your request.</p></body></html>"
)


@dataclass(frozen=True, slots=True)
class Received:
    """One request that reached an emulator.

    Attributes:
        t_s: ``time.monotonic()`` on arrival.
        method: ``GET``, ``POST``, …
        path: the path with the query string, e.g. ``/api/getLastPowerData?sysSn=AL1``.
        fault: the fault played on it, ``None`` if none.
    """

    t_s: float
    method: str
    path: str
    fault: Fault | None


class _NotifyingFaultSwitch(FaultSwitch):
    """A :class:`FaultSwitch` that tells its emulator when the fault changes (to freeze for ``STALE``)."""

    def __init__(
        self, supported: Iterable[Fault], changed: Callable[[Fault | None, Fault | None], None]
    ) -> None:
        super().__init__(supported)
        self._changed = changed

    def set(
        self, fault: Fault | None, *, delay_s: float | None = None, retry_after_s: float | None = None
    ) -> None:
        before = self.fault
        super().set(fault, delay_s=delay_s, retry_after_s=retry_after_s)
        if before is not self.fault:
            self._changed(before, self.fault)

    def clear(self) -> None:
        self.set(None)


class LoopbackHttpServer:
    """An aiohttp server on a loopback address: ``start``/``stop``/``async with``, HTTP faults on command.

    Args:
        host: a loopback address (127.0.0.0/8, ::1) or ``localhost``.
        port: TCP port, 0 for a free one; :attr:`port` is the real one after :meth:`start`, and a
            restart after :meth:`stop` reuses it.
        what: the device's name for error messages.
        tls: serve HTTPS with a certificate for 127.0.0.1, localhost and ::1 from a throwaway CA made
            with ``trustme`` at the first :meth:`start` (see :attr:`ca_pem_path`,
            :attr:`fingerprint_sha256`); ``False``: plain HTTP.

    Attributes:
        faults: the fault played on every request (:data:`~pvcharge.sim.faults.HTTP_FAULTS`).
        received: the last 1024 requests that reached the server, faulted ones included (:class:`Received`).
        tls_handshakes: TLS handshakes begun (with ``tls``), whether they succeeded or not.

    Raises:
        ValueError: ``host`` is not a loopback address (tests and tools never listen elsewhere).
    """

    scheme = "http"

    def __init__(self, host: str, port: int, *, what: str, tls: bool = False) -> None:
        if not is_loopback(host):
            raise ValueError(f"the {what} emulator listens on loopback only, e.g. 127.0.0.1; got {host!r}")
        self.host = host
        self.what = what
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.faults: FaultSwitch = _NotifyingFaultSwitch(HTTP_FAULTS, self._fault_changed)
        self.received: deque[Received] = deque(maxlen=1024)
        self.tls_handshakes = 0
        self._port = port
        self._runner: web.AppRunner | None = None
        self._ca: trustme.CA | None = None
        self._cert: trustme.LeafCert | None = None
        self._ca_pem_path: str | None = None
        self._timeout_over: asyncio.Event | None = None  #: set when TIMEOUT ends: the held requests go

    @property
    def port(self) -> int:
        """The TCP port; the real one once started."""
        return self._port

    @property
    def base_url(self) -> str:
        """``scheme://host:port``, IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self._port}"

    @property
    def ca_pem_path(self) -> str:
        """Path of a PEM file with the throwaway CA, while running with TLS (removed by :meth:`stop`).

        Raises:
            RuntimeError: not running, or ``tls=False``.
        """
        if self._ca_pem_path is None:
            raise RuntimeError("the CA file exists only while the emulator runs with tls=True")
        return self._ca_pem_path

    @property
    def fingerprint_sha256(self) -> str:
        """SHA-256 of the server certificate (DER), 64 lower-case hex digits; fixed from the first start.

        Raises:
            RuntimeError: never started with TLS.
        """
        if self._cert is None:
            raise RuntimeError("no certificate: the emulator was not started with tls=True")
        der = ssl.PEM_cert_to_DER_cert(self._cert.cert_chain_pems[0].bytes().decode())
        return hashlib.sha256(der).hexdigest()

    def requests_to(self, path: str) -> list[Received]:
        """The :attr:`received` requests whose path (without the query) is ``path``."""
        return [r for r in self.received if r.path.partition("?")[0] == path]

    def _application(self) -> web.Application:
        raise NotImplementedError

    def _ssl_context(self) -> ssl.SSLContext | None:
        """Make the CA and certificate on first use; write the CA PEM file (``None`` without TLS)."""
        if not self.tls:
            return None
        if self._ca is None or self._cert is None:
            self._ca = trustme.CA(organization_name=f"pvcharge {self.what} emulator")
            self._cert = self._ca.issue_cert("127.0.0.1", "localhost", "::1")
        fd, path = tempfile.mkstemp(prefix=f"pvcharge-{self.what.lower()}-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as file:
            file.write(self._ca.cert_pem.bytes())
        self._ca_pem_path = path
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        context.sni_callback = self._count_handshake
        return context

    def _count_handshake(
        self, sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        self.tls_handshakes += 1

    def _stopped(self) -> None:
        """Called after the server stopped (or failed to start): remove the CA file."""
        path, self._ca_pem_path = self._ca_pem_path, None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- faults -----------------------------------------------------------------------------------

    def _end_timeouts(self) -> None:
        """Let the requests held by ``TIMEOUT`` go (they close their connections unanswered)."""
        if self._timeout_over is not None:
            self._timeout_over.set()

    def _freeze(self) -> None:
        """``STALE`` was set: from now on answer with the values measured now (subclasses)."""

    def _thaw(self) -> None:
        """``STALE`` ended: answer with live values again (subclasses)."""

    def _fault_changed(self, before: Fault | None, after: Fault | None) -> None:
        if before is Fault.TIMEOUT:
            self._end_timeouts()
        if before is Fault.STALE:
            self._thaw()
        if after is Fault.STALE:
            self._freeze()

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.faults.play()
        self.received.append(Received(time.monotonic(), request.method, request.path_qs, fault))
        if fault is None or fault in (Fault.STALE, Fault.GARBAGE):
            return await handler(request)  # the handlers play these two
        if fault is Fault.SLOW:
            await asyncio.sleep(self.faults.delay_s)
            if request.transport is None or request.transport.is_closing():
                _hang_up(request)  # the client gave up meanwhile: nobody to read a body from or answer
            return await handler(request)
        if fault is Fault.TIMEOUT:
            if self._timeout_over is None or self._timeout_over.is_set():
                self._timeout_over = asyncio.Event()
            await self._timeout_over.wait()  # until cleared or stopped
            _hang_up(request)
        if fault is Fault.DROP:
            _hang_up(request)
        if fault is Fault.HTTP_500:
            return web.Response(status=500, text="Internal Server Error")
        if fault is Fault.HTTP_503:
            return web.Response(status=503, text="Service Unavailable")
        if fault is Fault.HTTP_429:
            retry_after = str(max(0, math.ceil(self.faults.retry_after_s)))
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": retry_after})
        if fault is Fault.NOT_JSON:
            return web.Response(status=200, text=NOT_JSON_BODY, content_type="text/html")
        if fault is Fault.TRUNCATED:
            return await _truncated(request, await handler(request))
        raise AssertionError(f"unhandled fault {fault}")  # pragma: no cover

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port``. Raises ``OSError`` if the port cannot be bound."""
        if self._runner is not None:
            return
        context = self._ssl_context()
        app = self._application()
        app.middlewares.insert(0, self._fault_middleware)  # outermost: faults come before everything
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._stopped()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and all connections. Safe to call twice."""
        runner, self._runner = self._runner, None
        self._end_timeouts()
        if runner is not None:
            await runner.cleanup()
        self._stopped()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _hang_up(request: web.Request) -> NoReturn:
    """Close the connection without an answer (aiohttp's path for a vanished client: no error log)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


async def _truncated(request: web.Request, response: web.StreamResponse) -> NoReturn:
    """Send ``response``'s status and headers with its full ``Content-Length``, half its body, then close."""
    body = response.body if isinstance(response, web.Response) else None
    data = body if isinstance(body, bytes) else b""
    headers = CIMultiDict(response.headers)
    for name in ("Content-Length", "Transfer-Encoding"):
        headers.popall(name, None)
    cut = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    cut.content_length = len(data) if data else 1
    await cut.prepare(request)
    await cut.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then closes
    raise asyncio.CancelledError
