"""The API's own HTTP server (:mod:`pvcharge.api.http`, h11 on asyncio streams): what aiohttp did for
the API before and a server facing a LAN needs — keep-alive, pipelining, HEAD, 405 with Allow, body and
header limits, malformed requests, slow and vanishing clients, the connection cap, stop().

The requests are written as raw bytes on a socket to 127.0.0.1 and the answers parsed with h11's
client side, so each test sees exactly what went over the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import pytest
from structlog.testing import capture_logs
from test_api import loopback, make_daemon

from pvcharge.api.http import HttpServer, Request, Response, Router
from pvcharge.api.server import ApiServer, start_api

WAIT_S = 10.0  #: only bounds a failing test (a server that never answers or never closes)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    json: Any = field(default=None)


class Client:
    """A raw connection: writes bytes, reads answers with h11's client state machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, head: bool = False) -> Answer:
        """The next answer (``head``: to a HEAD request, so without a body)."""
        if head:
            self.h11.send(h11.Request(method="HEAD", target="/", headers=[("Host", "x")]))
            self.h11.send(h11.EndOfMessage())
        else:
            self.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            self.h11.send(h11.EndOfMessage())
        answer: Answer | None = None
        async with asyncio.timeout(WAIT_S):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.reader.read(65536))
                elif isinstance(event, h11.Response):
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    answer = Answer(event.status_code, headers)
                elif isinstance(event, h11.Data):
                    assert answer is not None
                    answer.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert answer is not None
                    if answer.body and answer.headers["content-type"].startswith("application/json"):
                        answer.json = json.loads(answer.body)
                    if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                        self.h11.start_next_cycle()
                    return answer
                else:
                    raise AssertionError(f"unexpected {event!r}")

    async def until_closed(self) -> bytes:
        """What the server sends until it closes the connection (EOF, or a reset: the server closed
        with bytes of ours unread); fails if it keeps the connection open."""
        received = b""
        async with asyncio.timeout(WAIT_S):
            try:
                while data := await self.reader.read(65536):
                    received += data
            except ConnectionResetError:
                pass
        return received

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(reader, writer)
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def api(**limits: Any) -> AsyncIterator[ApiServer]:
    daemon, *_ = make_daemon()
    server = await start_api(daemon, loopback(), **limits)
    assert server.port is not None
    try:
        yield server
    finally:
        await server.stop()


def request(method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body is not None and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def test_two_requests_on_one_connection_and_pipelined_ones_in_order() -> None:
    async with api() as server, connect(server.port or 0) as client:
        await client.send(request("GET", "/api/status"))
        first = await client.answer()
        await client.send(request("PUT", "/api/mode", b'{"mode": "fast"}'))
        second = await client.answer()
        assert first.status == 200 and "mode" in first.json
        assert second.status == 200 and second.json["mode"] == "fast"
        await client.send(
            b"".join(request("GET", path) for path in ["/api/status", "/nothing", "/metrics"] * 5)
        )
        answers = [await client.answer() for _ in range(15)]
    assert [a.status for a in answers] == [200, 404, 200] * 5
    assert all(a.headers["content-type"].startswith("text/plain") for a in answers[2::3])


async def test_head_answers_the_get_headers_without_a_body() -> None:
    async with api() as server, connect(server.port or 0) as client:
        await client.send(request("GET", "/api/openapi.json"))
        got = await client.answer()
        await client.send(request("HEAD", "/api/openapi.json"))
        head = await client.answer(head=True)
        await client.send(request("GET", "/api/status"))  # the connection goes on: no stray body bytes
        after = await client.answer()
    assert got.status == head.status == after.status == 200
    assert head.body == b"" and int(head.headers["content-length"]) == len(got.body) > 1000
    assert head.headers["content-type"] == got.headers["content-type"] == "application/json; charset=utf-8"
    assert head.headers["cache-control"] == "no-store" and head.headers["x-frame-options"] == "DENY"


async def test_a_known_path_with_another_method_is_a_405_naming_the_allowed_ones() -> None:
    async with api() as server, connect(server.port or 0) as client:
        for method, path in [("POST", "/api/mode"), ("DELETE", "/api/status"), ("PATCH", "/")]:
            await client.send(request(method, path, b"{}"))
        answers = [await client.answer() for _ in range(3)]
        await client.send(request("PUT", "/api/loadpoints/no%20such/mode", b'{"mode": "pv"}'))
        missing = await client.answer()
    assert [(a.status, a.headers["allow"]) for a in answers] == [
        (405, "PUT"),
        (405, "GET, HEAD"),
        (405, "GET, HEAD"),
    ]
    assert answers[0].json == {"error": "Method Not Allowed"}
    assert missing.status == 404 and missing.json["error"] == "no loadpoint 'no such'"


async def test_a_long_loadpoint_name_or_mode_is_cut_short_in_the_error() -> None:
    async with api() as server, connect(server.port or 0) as client:
        await client.send(request("PUT", "/api/loadpoints/" + "x" * 500 + "/mode", b'{"mode": "pv"}'))
        name = await client.answer()
        await client.send(request("PUT", "/api/mode", b'{"mode": "' + b"y" * 500 + b'"}'))
        mode = await client.answer()
    assert name.status == 404 and name.json["error"] == "no loadpoint '" + "x" * 39 + "…"
    assert mode.status == 422 and mode.json["error"].startswith("unknown mode '" + "y" * 39 + "…;")


async def test_a_body_over_64_kib_is_a_413_announced_or_chunked_and_the_connection_goes_on() -> None:
    big = b"x" * 100_000
    chunked = b"".join(
        f"{len(big[i : i + 8192]):x}\r\n".encode() + big[i : i + 8192] + b"\r\n"
        for i in range(0, len(big), 8192)
    )
    async with api() as server, connect(server.port or 0) as client:
        await client.send(request("PUT", "/api/mode", big))
        announced = await client.answer()
        await client.send(
            request("PUT", "/api/mode", None, Transfer_Encoding="chunked") + chunked + b"0\r\n\r\n"
        )
        streamed = await client.answer()
        await client.send(request("PUT", "/api/mode", b'{"mode": "minpv"}'))
        after = await client.answer()
    assert announced.status == streamed.status == 413
    assert announced.json == {"error": "Request Entity Too Large"}
    assert after.status == 200 and after.json["mode"] == "minpv"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"PUT /api/mode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n",
        b"GET http://127.0.0.1/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_a_400_without_a_traceback(raw: bytes) -> None:
    with capture_logs() as logs:
        async with api() as server, connect(server.port or 0) as client:
            await client.send(raw)
            answer = await client.answer()
            if answer.headers.get("connection") == "close":
                assert await client.until_closed() == b""
    assert answer.status == 400 and "error" in answer.json
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert [e for e in logs if e["log_level"] in ("error", "warning", "critical")] == []


async def test_a_request_head_over_16_kib_is_a_431() -> None:
    async with api() as server, connect(server.port or 0) as client:
        await client.send(request("GET", "/api/status", X_Filler="y" * 20_000))
        answer = await client.answer()
        assert await client.until_closed() == b""
    assert answer.status == 431


async def test_a_client_that_goes_silent_mid_request_or_idle_is_dropped_after_the_timeout() -> None:
    with capture_logs() as logs:
        async with api(timeout_s=0.2) as server:
            async with connect(server.port or 0) as half:
                await half.send(b"GET /api/status HTTP/1.1\r\nHost: 127.0")
                assert await half.until_closed() == b""
            async with connect(server.port or 0) as body:
                await body.send(request("PUT", "/api/mode", None, Content_Length="40") + b'{"mode":')
                answer = await body.answer()
                assert await body.until_closed() == b""
            async with connect(server.port or 0) as idle:
                await idle.send(request("GET", "/api/status"))
                assert (await idle.answer()).status == 200
                assert await idle.until_closed() == b""
    assert answer.status == 408
    assert [e for e in logs if e["log_level"] in ("error", "warning", "critical")] == []


async def test_a_client_that_disconnects_mid_request_leaves_no_error_in_the_log() -> None:
    with capture_logs() as logs:
        async with api() as server:
            for partial in [b"GET /api/sta", request("PUT", "/api/mode", None, Content_Length="100") + b"{"]:
                async with connect(server.port or 0) as client:
                    await client.send(partial)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
                assert (await c.get("/api/status")).status_code == 200  # still serving
    assert [e for e in logs if e["log_level"] in ("error", "warning", "critical")] == []


async def test_many_parallel_clients_are_all_answered() -> None:
    async with (
        api() as server,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", limits=httpx.Limits(max_connections=40)
        ) as client,
    ):
        answers = await asyncio.gather(*(client.get(p) for p in ["/api/status", "/metrics", "/"] * 40))
    assert [a.status_code for a in answers] == [200] * 120


async def test_connections_above_the_cap_are_closed_at_once_and_the_others_served() -> None:
    async with (
        api(max_connections=2, timeout_s=60) as server,
        connect(server.port or 0) as one,
        connect(server.port or 0) as two,
    ):
        await one.send(request("GET", "/api/status"))
        await two.send(request("GET", "/api/status"))
        assert (await one.answer()).status == (await two.answer()).status == 200
        async with connect(server.port or 0) as three:
            await three.send(request("GET", "/api/status"))
            assert await three.until_closed() == b""  # not a byte of an answer
        await one.send(request("GET", "/api/status"))
        assert (await one.answer()).status == 200


async def test_stop_closes_idle_kept_alive_connections_without_waiting_for_their_timeout() -> None:
    async with api(timeout_s=60) as server, connect(server.port or 0) as client:
        await client.send(request("GET", "/api/status"))
        assert (await client.answer()).status == 200
        await server.stop()
        assert await client.until_closed() == b""


async def test_stop_waits_for_a_request_being_answered_and_only_up_to_shutdown_s() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(text="done")

    router = Router()
    router.add_get("/slow", slow)
    for shutdown_s, released in [(60.0, True), (0.05, False)]:
        entered.clear()
        release.clear()
        server = HttpServer(router)
        port = await server.start("127.0.0.1", 0)
        async with connect(port) as client:
            await client.send(request("GET", "/slow"))
            await entered.wait()
            stopping = asyncio.create_task(server.stop(shutdown_s))
            await asyncio.sleep(0)  # stop() has closed the listener and waits for the request
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
            if released:
                release.set()
                answer = await client.answer()
                assert answer.status == 200 and answer.body == b"done"
                assert answer.headers["connection"] == "close"
            else:
                assert await client.until_closed() == b""  # cut off after shutdown_s, no answer
            async with asyncio.timeout(WAIT_S):
                await stopping
