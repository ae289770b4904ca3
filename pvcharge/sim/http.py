"""What every HTTP(S) device emulator shares: an aiohttp server that listens on loopback only.

Subclasses build their routes in :meth:`LoopbackHttpServer._application` and, for HTTPS, return a
server context from :meth:`LoopbackHttpServer._ssl_context`.
"""

from __future__ import annotations

import ipaddress
import ssl
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopbackHttpServer:
    """An aiohttp server on a loopback address: ``start``/``stop``/``async with``.

    Args:
        host: a loopback address (127.0.0.0/8, ::1) or ``localhost``.
        port: TCP port, 0 for a free one; :attr:`port` is the real one after :meth:`start`, and a
            restart after :meth:`stop` reuses it.
        what: the device's name for error messages.

    Raises:
        ValueError: ``host`` is not a loopback address (tests and tools never listen elsewhere).
    """

    scheme = "http"

    def __init__(self, host: str, port: int, *, what: str) -> None:
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(
                    f"the {what} emulator listens on loopback only, e.g. 127.0.0.1; got {host!r}"
                )
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The TCP port; the real one once started."""
        return self._port

    @property
    def base_url(self) -> str:
        """``scheme://host:port``, IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self._port}"

    def _application(self) -> web.Application:
        raise NotImplementedError

    def _ssl_context(self) -> ssl.SSLContext | None:
        return None

    def _stopped(self) -> None:
        """Called after the server stopped (or failed to start): release what ``_ssl_context`` made."""

    async def start(self) -> None:
        """Listen on ``host:port``. Raises ``OSError`` if the port cannot be bound."""
        if self._runner is not None:
            return
        context = self._ssl_context()
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=1.0)
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
