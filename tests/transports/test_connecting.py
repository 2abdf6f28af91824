"""Opening a NATS connection: one that is stopped half-way leaves no socket open."""

from __future__ import annotations

import asyncio

from scanflow_agents.settings import NatsSettings
from scanflow_agents.transports.connecting import open_connection


async def test_a_connection_cancelled_half_way_closes_its_socket() -> None:
    """A server that accepts and never greets: the client waits for its INFO line, and
    is cancelled there (a console closed while it connects). Its socket must close
    then, not when the garbage collector finds it (a ResourceWarning in some later
    test)."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    ends: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ends.append(writer)
        await accepted.put(reader)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = NatsSettings(url=f"nats://127.0.0.1:{port}", connect_timeout=30)
    connecting = asyncio.create_task(open_connection(settings, name="half-way"))
    try:
        reader = await asyncio.wait_for(accepted.get(), 10)
        connecting.cancel()
        done, _ = await asyncio.wait({connecting}, timeout=10)
        assert connecting in done
        assert connecting.cancelled()
        # The client's end is closed: the server reads the end of the stream.
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        for end in ends:
            end.close()
        server.close()
        await server.wait_closed()
