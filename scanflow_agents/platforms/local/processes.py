"""Child processes: start them with logs, probe them over HTTP, stop them surely."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from scanflow_agents._kit.sockets import free_port
from scanflow_agents._kit.tethers import tethered

__all__ = ["free_port", "http_get", "http_request", "spawn", "terminate", "wait_healthy"]


async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, log_path: Path
) -> asyncio.subprocess.Process:
    """Start ``argv`` with stdout and stderr appended to ``log_path``.

    The child is tethered to this process (it cannot outlive it, not even a
    SIGKILL of it) and leads its own session (process group), so stopping it
    also stops whatever it started, and a Ctrl-C in our terminal does not reach
    it twice.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *tethered(argv),
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def terminate(process: asyncio.subprocess.Process, grace: float) -> int:
    """Ask a child's process group to stop (SIGTERM), kill it after ``grace`` seconds.

    Returns:
        The exit code (negative for the signal that ended it).
    """
    if process.returncode is None:
        # To the tether, which passes it on to the whole group once.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
    # Also reap the group: a grandchild that ignored SIGTERM must not outlive us.
    _signal_group(process.pid, signal.SIGKILL)
    return await process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET, enough for health probes without an HTTP client library.

    Raises:
        OSError: If the connection fails; TimeoutError if it takes too long.
    """
    return await http_request(host, port, "GET", path, timeout)


async def http_request(
    host: str, port: int, method: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 request without a body (``http_get`` with another method)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"not an HTTP response from {host}:{port}{path}")
    return int(status_line[1]), body


async def wait_healthy(
    process: asyncio.subprocess.Process, host: str, port: int, timeout: float
) -> None:
    """Wait until ``GET /health`` on ``host:port`` answers 200.

    Raises:
        RuntimeError: If the process exits first (with its exit code).
        TimeoutError: If it is not healthy within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"exited with code {process.returncode} before it was ready")
        with contextlib.suppress(OSError, TimeoutError):
            status, _ = await http_get(host, port, "/health", timeout=1.0)
            if status == 200:
                return
        if loop.time() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f} s")
        await asyncio.sleep(0.05)
