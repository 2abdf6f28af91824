"""The latency probe sees the time a client pays outside the handler, Nagle's floor included."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from scanflow_agents.serving.probing import probe
from scanflow_agents.serving.server import listen

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
