"""A real ``mlflow server`` in a subprocess, for tests, benches and the local stack.

The server listens on 127.0.0.1 on a free port, with one worker (more workers
add tens of milliseconds to every keep-alive request) and MLflow's job
execution disabled (it would start a Huey consumer we never use). Starting
takes 5-8 s, most of it importing MLflow and migrating the database, so share
one server per test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from scanflow_agents._kit.sockets import free_port
from scanflow_agents._kit.tethers import tethered


class MlflowServer:
    """One ``mlflow server`` process; usable with ``with`` and ``async with``.

    Args:
        backend_store_uri: Where runs and models are kept; default a sqlite file
            in a temporary directory owned by this object.
        artifacts_destination: Where artifacts go (a directory or ``s3://...``;
            for S3 pass ``MLFLOW_S3_ENDPOINT_URL`` and AWS credentials in ``env``);
            default a temporary directory.
        port: Port to listen on; default a free one. Kept across restarts.
        env: Extra environment variables for the server process.
        startup_timeout: Seconds to wait for ``/health``.
        stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="scanflow-mlflow-")
        tmp = Path(self._tmp.name)
        self.backend_store_uri = backend_store_uri or f"sqlite:///{tmp / 'mlflow.db'}"
        self.artifacts_destination = artifacts_destination or str(tmp / "artifacts")
        self.port = port or free_port()
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = tmp / "server.log"

    @property
    def url(self) -> str:
        """The tracking URI, e.g. ``http://127.0.0.1:5123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def start(self) -> None:
        """Start the process and wait until ``/health`` answers.

        Raises:
            RuntimeError: The server exited or did not answer in time; the
                message carries the end of its log.
        """
        if self.running:
            return
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with self._log_path.open("ab") as log:
            # Tethered: the server (uvicorn under the click entry point) cannot outlive
            # us, even if we are killed with SIGKILL; a new session, so a Ctrl-C meant
            # for us does not reach it before we stop it.
            self._process = subprocess.Popen(
                tethered(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"mlflow server exited on start:\n{self.log()[-3000:]}")
            if self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"mlflow server at {self.url} not healthy after {self.startup_timeout} s:\n"
            f"{self.log()[-3000:]}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Terminate the server's process group, kill it after ``stop_timeout``; idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # the tether passes it on to the whole group
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Children that outlived their parent (a worker) belong to the group too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def astart(self) -> None:
        """:meth:`start` in a thread, so the event loop keeps running meanwhile."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """:meth:`stop` in a thread."""
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> MlflowServer:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)
