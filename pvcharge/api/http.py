"""A small HTTP/1.1 server on asyncio streams and h11 (python-hyper's sans-I/O HTTP/1.1 protocol,
https://h11.readthedocs.io/), for the API of :mod:`pvcharge.api.server`.

h11 parses and frames (request line, headers, Content-Length/chunked bodies, keep-alive, ``Expect:
100-continue``); this module drives its state machine on a stream pair and adds a router (``{name}``
path parameters; ``GET`` routes answer ``HEAD``; ``404``; ``405`` with ``Allow``) and the limits of a
server facing a LAN: a request head of at most ``max_header_bytes`` (``431``), a body of at most
``max_body_bytes`` (``413``), ``timeout_s`` for a whole request head (after connecting or the previous
answer) and for each piece of a body, at most ``max_connections`` open connections (a further one is
closed at once).  A malformed request is a ``400`` (h11's status hint) on a closed connection, logged at
debug like a client that disconnects mid-request.  :meth:`HttpServer.stop` closes the listener and the
idle connections and waits at most ``shutdown_s`` for the requests being answered.

No access log.  The answers carry ``Date`` and ``Content-Length``, no ``Server``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from email.utils import formatdate  # (loaded anyway: http.client, pvcharge.retry)
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import h11
import structlog

log = structlog.get_logger("pvcharge.api")

MAX_HEADER_BYTES = 16 * 1024  #: the largest request line plus headers taken (431 above)
TIMEOUT_S = 15.0  #: default: for a request head, and for each piece of a body, s
MAX_CONNECTIONS = 64  #: default: open connections at most (a further one is closed at once)
DRAIN_BYTES = 1024 * 1024  #: body left unread by a handler read and dropped to keep the connection
_READ_BYTES = 64 * 1024


def phrase(status: int) -> str:
    """The reason phrase of ``status`` (``404`` → ``Not Found``; ``""`` for an unknown one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Headers(MutableMapping[str, str]):
    """Header fields by case-insensitive name (the first of repeated ones); keeps the name's spelling."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        if items is not None:
            self.update(items)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class HTTPError(Exception):
    """An error answer: ``status`` (4xx/5xx), ``reason`` (the text of the JSON error; the status's
    phrase by default) and extra ``headers`` (``Allow``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, reason: str | None = None, headers: Mapping[str, str] | None = None):
        self.status = status
        self.reason = reason if reason is not None else phrase(status)
        self.headers = Headers(headers)
        super().__init__(f"{status} {self.reason}")


class Response:
    """An answer: ``status``, ``body`` (bytes; or ``text``, UTF-8) and ``headers``; ``content_type``
    (``text/…`` and JSON get ``; charset=utf-8``) unless ``headers`` has a ``Content-Type``."""

    def __init__(
        self,
        *,
        body: bytes | None = None,
        text: str | None = None,
        status: int = 200,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body if body is not None else (text or "").encode("utf-8")
        self.headers = Headers(headers)
        if "Content-Type" not in self.headers:
            kind = content_type or ("text/plain" if body is None else "application/octet-stream")
            textual = kind.startswith("text/") or kind == "application/json"
            self.headers["Content-Type"] = kind + ("; charset=utf-8" if textual else "")


Handler = Callable[["Request"], Awaitable[Response]]
Middleware = Callable[["Request", Handler], Awaitable[Response]]


class Request:
    """One request: ``method``, ``path`` (percent-decoded), ``query`` (the first value of each name),
    ``headers``, ``remote`` (the client's address), ``match_info`` (the route's path parameters) and
    the body from :meth:`read`."""

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        remote: str | None,
        body: Callable[[], Awaitable[bytes]],
    ) -> None:
        self.method = method
        self.raw_path, _, query = target.partition("?")
        self.path = unquote(self.raw_path)
        self.query: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            self.query.setdefault(name, value)
        self.headers = headers
        self.remote = remote
        self.match_info: dict[str, str] = {}
        self._body = body
        self._read: bytes | None = None

    async def read(self) -> bytes:
        """The whole body (``b""`` without one).

        Raises:
            HTTPError: ``413``, the body is larger than the server's ``max_body_bytes``; ``408``, a piece
                of it did not arrive within ``timeout_s``; ``400``, it is malformed (bad chunked framing).
        """
        if self._read is None:
            self._read = await self._body()
        return self._read


class Router:
    """Routes by method and path; a path's ``{name}`` matches one segment (``match_info[name]``)."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        pattern = re.compile(
            "".join(
                f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{\w+\})", path)
            )
            + r"\Z"
        )
        for known, handlers in self._routes:
            if known.pattern == pattern.pattern:
                handlers[method] = handler
                return
        self._routes.append((pattern, {method: handler}))

    def add_get(self, path: str, handler: Handler) -> None:
        """``GET`` and ``HEAD``."""
        self.add_route("GET", path, handler)
        self.add_route("HEAD", path, handler)

    def add_put(self, path: str, handler: Handler) -> None:
        self.add_route("PUT", path, handler)

    def add_delete(self, path: str, handler: Handler) -> None:
        self.add_route("DELETE", path, handler)

    def resolve(self, request: Request) -> Handler:
        """The handler of ``request`` (its ``match_info`` set), or one raising ``404``/``405``."""
        for pattern, handlers in self._routes:
            found = pattern.match(request.raw_path)
            if found is None:
                continue
            request.match_info = {name: unquote(value) for name, value in found.groupdict().items()}
            if request.method in handlers:
                return handlers[request.method]
            return _raiser(HTTPError(405, headers={"Allow": ", ".join(sorted(handlers))}))
        return _raiser(HTTPError(404))


def _raiser(error: HTTPError) -> Handler:
    async def handler(request: Request) -> Response:
        raise error

    return handler


def _plain_error(error: HTTPError) -> Response:
    return Response(text=error.reason, status=error.status, headers=error.headers)


class HttpServer:
    """Serves ``router`` through ``middleware`` (given the request and its resolved handler) once
    :meth:`start` has bound it; ``error_response``: the answer to an :class:`HTTPError` no middleware
    handled (a malformed request: ``400``/``431``/``501``); any other exception is a logged ``500``."""

    def __init__(
        self,
        router: Router,
        middleware: Middleware | None = None,
        *,
        error_response: Callable[[HTTPError], Response] = _plain_error,
        max_body_bytes: int = 64 * 1024,
        max_header_bytes: int = MAX_HEADER_BYTES,
        timeout_s: float = TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.router = router
        self.middleware = middleware
        self.error_response = error_response
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (``0``: a free one); returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(self._connected, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, shutdown_s: float) -> None:
        """Stop listening, close the idle connections and wait at most ``shutdown_s`` for the requests
        being answered (then close those too)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=shutdown_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) else None
        task = asyncio.current_task()
        if self._closing or task is None or len(self._connections) >= self.max_connections:
            log.debug("api_connection_refused", remote=remote, open=len(self._connections))
            writer.close()
            return
        self._connections[task] = connection = _Connection(self, reader, writer, remote)
        try:
            await connection.serve()
        except (ConnectionError, TimeoutError, h11.ProtocolError) as exc:
            log.debug("api_connection_dropped", remote=remote, error=repr(exc))
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # stop() closed it: ends quietly (asyncio's stream callback would log a cancelled task)
        finally:
            del self._connections[task]
            writer.close()


class _Connection:
    """One client connection: h11's state machine fed from ``reader``, written to ``writer``."""

    def __init__(
        self,
        server: HttpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str | None,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.remote = remote
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.max_header_bytes)
        self.content_length = 0  #: the body size the request being answered announced
        self.keep_alive = True  #: False: close after this answer (its body could not be read)
        self.busy = False  #: answering a request now (stop() waits for it)

    async def _next_event(self) -> h11.Event | None:
        """The client's next event (``None``: h11 is paused, the connection ends after this answer)."""
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            # h11 measures only a head it has not yet parsed: one byte over the limit at most, so it
            # never gets a longer one whole
            size = _READ_BYTES
            if self.h11.their_state is h11.IDLE:
                size = max(1, self.server.max_header_bytes + 1 - len(self.h11.trailing_data[0]))
            self.h11.receive_data(await self.reader.read(size))  # b"": the client closed

    async def _send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def serve(self) -> None:
        """Answer requests until the client closes, times out, or a request cannot be kept alive."""
        while True:
            try:
                async with asyncio.timeout(self.server.timeout_s):
                    event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                log.debug("api_bad_request", remote=self.remote, error=str(exc))
                if self.h11.our_state is h11.SEND_RESPONSE or self.h11.our_state is h11.IDLE:
                    error = HTTPError(exc.error_status_hint, f"malformed request: {exc}")
                    await self._answer(None, self.server.error_response(error))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or PAUSED after a Connection: close)
            self.busy = True
            await self._answer(event.method.decode("ascii"), await self._respond(event))
            self.busy = False
            if not self.keep_alive:
                return
            if self.h11.their_state is h11.SEND_BODY:
                await self._drain()
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _respond(self, event: h11.Request) -> Response:
        headers = Headers()
        for name, value in event.headers:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        target = event.target.decode("latin-1")
        length = headers.get("Content-Length", "")
        self.content_length = int(length) if length.isdigit() else 0  # (h11 checked it; 0: chunked)
        request = Request(event.method.decode("ascii"), target, headers, self.remote, self._body)
        if not target.startswith("/"):
            return self.server.error_response(HTTPError(400, "the request target must be a path"))
        handler = self.server.router.resolve(request)
        try:
            if self.server.middleware is not None:
                return await self.server.middleware(request, handler)
            return await handler(request)
        except HTTPError as exc:
            return self.server.error_response(exc)
        except Exception as exc:
            log.error("api_error", path=request.path, error=repr(exc), exc_info=exc)
            return self.server.error_response(HTTPError(500))

    async def _body(self) -> bytes:
        limit = self.server.max_body_bytes
        if self.h11.their_state is h11.SEND_BODY and self.content_length > limit:
            raise HTTPError(413)  # announced: not read at all
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        try:
            while self.h11.their_state is h11.SEND_BODY:
                async with asyncio.timeout(self.server.timeout_s):
                    event = await self._next_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        raise HTTPError(413)
                    chunks.append(event.data)
        except TimeoutError:
            self.keep_alive = False
            raise HTTPError(408, "the request body did not arrive in time") from None
        except h11.RemoteProtocolError as exc:
            self.keep_alive = False
            raise HTTPError(exc.error_status_hint, f"malformed request body: {exc}") from None
        return b"".join(chunks)

    async def _drain(self) -> None:
        """Drop a body no handler read (up to :data:`DRAIN_BYTES`), so the connection can go on."""
        size = 0
        while self.h11.their_state is h11.SEND_BODY and size <= DRAIN_BYTES:
            async with asyncio.timeout(self.server.timeout_s):
                event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)

    async def _answer(self, method: str | None, response: Response) -> None:
        headers = [
            (name, value) for name, value in response.headers.items() if name.lower() != "content-length"
        ]
        headers += [("Content-Length", str(len(response.body))), ("Date", formatdate(usegmt=True))]
        if self.server._closing or method is None or not self.keep_alive:
            headers.append(("Connection", "close"))
        await self._send(
            h11.Response(status_code=response.status, headers=headers, reason=phrase(response.status)),
            *([h11.Data(data=response.body)] if response.body and method != "HEAD" else []),
            h11.EndOfMessage(),
        )
