"""The latency probe sees the time a client pays outside the handler, Nagle's floor included."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.probing import ProbeTimeout, probe
from scanflow_agents.serving.reporting import Reporter
from scanflow_agents.serving.server import listen
from scanflow_agents.serving.stats import ServingStats

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b'{"ready": true}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            # Head and body in two sends, as uvicorn writes them.
            writer.write(HEAD % len(BODY))
            await writer.drain()
            writer.write(BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _server(sock: socket.socket) -> AsyncIterator[int]:
    server = await asyncio.start_server(_answer, sock=sock)
    async with server:
        yield sock.getsockname()[1]


@pytest.fixture
async def nagle_port() -> AsyncIterator[int]:
    """A server whose accepted sockets keep Nagle's algorithm (no IPPROTO_TCP: asyncio
    then leaves TCP_NODELAY off), as the model server's listener was made before."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    async for port in _server(sock):
        yield port


@pytest.fixture
async def served_port() -> AsyncIterator[int]:
    """The same server on the model server's own listener."""
    async for port in _server(listen("127.0.0.1", 0, reuse_port=False)):
        yield port


async def test_the_probe_sees_the_nagle_floor(nagle_port: int) -> None:
    assert await probe("127.0.0.1", nagle_port, count=7) >= 30.0


async def test_the_probe_of_the_model_servers_listener_is_fast(served_port: int) -> None:
    assert await probe("127.0.0.1", served_port, count=7) < 10.0


def _stalling(answered: int) -> Handler:
    """A handler that answers the first ``answered`` requests, then reads and never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(answered):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(HEAD % len(BODY) + BODY)
                await writer.drain()
            await reader.read()  # the rest waits, as a replica whose loop is saturated
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


@pytest.mark.parametrize("answered", [0, 2])
async def test_a_probe_that_runs_out_of_time_gives_a_lower_bound(answered: int) -> None:
    server = await asyncio.start_server(_stalling(answered), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ProbeTimeout) as raised:
            await probe("127.0.0.1", port, count=5, timeout=0.3)
    # Three of five requests unanswered: the median is one of them, so at least
    # what the pending one had waited, nearly the whole 300 ms.
    assert 250.0 <= raised.value.at_least_ms <= 1000.0


async def test_an_overloaded_replica_reports_its_probe_bound_not_nothing() -> None:
    server = await asyncio.start_server(_stalling(0), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        config = ServingConfig(model_uri="models:/m/1", host="127.0.0.1", port=port)
        reporter = Reporter(config, ServingStats())
        await reporter._probe()
        report = await reporter.report()
    # Two seconds without an answer (the probe's own limit) breach any objective:
    # the checker adds probe_ms to the handlers' p95.
    assert report["probe_ms"] >= 1900.0
    assert report["probe_timed_out"] is True
