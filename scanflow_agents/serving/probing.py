"""The latency a client feels beyond the handler: a probe of the replica's own listener.

The server times each request from the handler's start to its return. A
client also waits for what happens around that: the kernel, the event loop
picking the connection up, and, before ``TCP_NODELAY`` was set, Nagle's
algorithm holding every answer's body until the client acknowledged its head
(up to 40 ms). Connections that are new see little of it (a new connection
acknowledges at once); a kept-alive connection that sends as soon as it has
its answer sees all of it. So the probe does just that: a few back-to-back
requests on one kept-alive connection, and the median round trip is what a
client pays on top of the handler's time (the health handler itself takes
well under a millisecond).

A probe that runs out of time is a measurement too, the one that matters
most: a replica so loaded that it cannot answer five small requests within
the probe's time. It raises :class:`ProbeTimeout` with a lower bound of the
median, so that the report says "at least this slow" instead of nothing (a
report without a probe figure would judge the latency objective on the
handler's time alone, and miss the very overload it is there to see).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

_REQUEST = b"GET /health HTTP/1.1\r\nHost: probe\r\nUser-Agent: scanflow-probe\r\n\r\n"


class ProbeTimeout(TimeoutError):
    """The probe ran out of time; its median round trip was at least ``at_least_ms``.

    The bound counts each request not answered in time at what it had waited
    when time ran out (a request never sent, at what the one pending had
    waited: it would have queued behind it).
    """

    def __init__(self, at_least_ms: float, timeout: float) -> None:
        super().__init__(f"the probe took more than {timeout:g} s")
        self.at_least_ms = at_least_ms


async def probe(host: str, port: int, *, count: int = 5, timeout: float = 2.0) -> float:
    """The median round trip, in ms, of ``count`` back-to-back ``GET /health`` on one connection.

    Raises:
        ProbeTimeout: the connection or the requests took longer than ``timeout``
            (each); it carries a lower bound of the median.
        OSError, asyncio.IncompleteReadError, ValueError: the probe did not
            complete (nothing listens, a broken answer): the caller reports no figure.
    """
    connect_to = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(connect_to, port)
    except TimeoutError:
        raise ProbeTimeout(timeout * 1000.0, timeout) from None
    times: list[float] = []
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            for _ in range(count):
                started = time.perf_counter()
                writer.write(_REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")  # status line and headers
                await reader.readexactly(_content_length(head))
                times.append((time.perf_counter() - started) * 1000.0)
    except TimeoutError:
        waited = (time.perf_counter() - started) * 1000.0
        bound = statistics.median(times + [waited] * (count - len(times)))
        raise ProbeTimeout(bound, timeout) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return statistics.median(times)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError("the health answer has no Content-Length")
