"""Latency and throughput loops shared by every section of the core benchmark.

Each section hands over one coroutine function that makes one call; the loops
here time it the same way for raw NATS, HTTP and agents, so the ratios compare
transports and frameworks, not measuring code.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

CallFn = Callable[[], Awaitable[object]]


def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and mean in milliseconds of latencies given in seconds."""
    if len(samples) < 2:
        raise ValueError(f"need at least 2 samples for percentiles, got {len(samples)}")
    # "inclusive" interpolates inside the observed range: a p99 of 300
    # samples is never extrapolated beyond the slowest one.
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 4),
        "p99_ms": round(cuts[98] * 1000, 4),
        "mean_ms": round(statistics.fmean(samples) * 1000, 4),
    }


async def sequential(call: CallFn, count: int, *, warmup: int) -> list[float]:
    """Latencies of ``count`` calls made one after the other, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        await call()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


async def throughput(call: CallFn, total: int, *, inflight: int) -> float:
    """Calls per second for ``total`` calls with ``inflight`` of them outstanding at any time.

    A fixed pool of workers keeps exactly ``inflight`` calls in flight, as a
    loaded caller would, instead of creating ``total`` tasks at once (which
    would measure the event loop's scheduling of a huge backlog).
    """
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return total / (time.perf_counter() - started)


async def measure(
    call: CallFn, *, calls: int, warmup: int, burst: int, inflight: int
) -> dict[str, float]:
    """The common result of a request/reply section: sequential percentiles and throughput."""
    result: dict[str, float] = summary(await sequential(call, calls, warmup=warmup))
    # A short burst first so connection pools and caches reach their loaded size.
    await throughput(call, min(burst, inflight * 4), inflight=inflight)
    result["calls_per_s"] = round(await throughput(call, burst, inflight=inflight), 1)
    result["sequential_calls"] = calls
    result["throughput_calls"] = burst
    result["inflight"] = inflight
    return result
