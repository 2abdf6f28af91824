"""Child processes of the benchmark: started in their own session, always stopped.

Every child is registered in a :class:`Children` set that the benchmark leaves
in a ``finally``; a SIGTERM to the benchmark is turned into ``SystemExit`` so
that ``finally`` runs then too. On Linux a child also gets a parent-death
signal, so even a benchmark killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
PEERS = str(BENCH_DIR / "_peers.py")
AGENTS_FILE = str(BENCH_DIR / "_agents.py")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The signal fires when the
    # thread that forked exits, so children are only started from the main thread.
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One child process; its stderr goes to a temporary file shown if it fails."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.label = label
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
            prefix=f"bench-{label}-", suffix=".log"
        )
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a Ctrl-C reaches us; we stop children in order
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / 2**20

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.label} exited with code {self.process.returncode}:\n{self.stderr_tail()}"
            )

    def stderr_tail(self, chars: int = 2000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def wait_line(self, expected: str, timeout: float) -> None:
        """Wait until the child prints ``expected`` on a line of its stdout."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # select() before read: a child that hangs silently must not hang us.
            ready, _, _ = select.select([fd], [], [], 0.1)
            chunk = os.read(fd, 4096) if ready else b""
            seen += chunk
            if expected.encode() in seen.splitlines():
                return
            if ready and not chunk:  # end of file: the child closed stdout or died
                time.sleep(0.1)
            self.check_alive()
        raise TimeoutError(f"{self.label} did not print {expected!r} within {timeout:g} s")

    def wait_port(self, port: int, timeout: float) -> None:
        """Wait until the child accepts TCP connections on 127.0.0.1:``port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.label} did not listen on port {port} within {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (a graceful stop: agents drain), then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()
        return self.process.returncode


class Children:
    """The set of running children; ``stop_all`` is safe to call more than once."""

    def __init__(self) -> None:
        self._running: list[Child] = []

    def start(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(label, argv, env)
        self._running.append(child)
        return child

    def stop(self, child: Child) -> int | None:
        if child in self._running:
            self._running.remove(child)
        return child.stop()

    def stop_all(self) -> None:
        while self._running:
            self._running.pop().stop()


def sigterm_exits() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread, so ``finally`` blocks run."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python(*args: str) -> list[str]:
    """A command line running this interpreter with unbuffered output (READY lines arrive)."""
    return [sys.executable, "-u", *args]


def scanflow(nats_url: str, namespace: str, *args: str) -> list[str]:
    """The ``scanflow`` command (as ``python -m``) against the benchmark's NATS."""
    return python("-m", "scanflow_agents.runtime", "--nats", nats_url, "-n", namespace, *args)
