"""A test run leaves no process behind, even when pytest itself is killed with SIGKILL;
a test that hangs fails alone and the run goes on.

A probe suite (``tests/support/hygiene_probe.py``: two tests, two xdist workers,
the suite's own conftest) starts what the real suite's fixtures start: a
nats-server, an MLflow server (uvicorn under a click entry point), and a
model-server-like child through the local platform's ``spawn``.
Once every one of them runs, the probe's pytest controller is killed with
SIGKILL, and every process it had below it must be gone soon after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from scanflow_agents.testing import die_with_parent

ROOT = Path(__file__).parents[1]
PROBE = "tests/support/hygiene_probe.py"
HANG_PROBE = "tests/support/hang_probe.py"


def test_killing_pytest_leaves_no_process_of_it(tmp_path: Path) -> None:
    env = {**os.environ, "PROBE_DIR": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", PROBE],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    below: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        ready = [tmp_path / "one.ready", tmp_path / "two.ready"]
        while not all(path.exists() for path in ready):
            assert run.poll() is None, "the probe suite ended before its servers ran"
            assert time.monotonic() < deadline, "the probe's servers did not start in 120 s"
            time.sleep(0.2)
        time.sleep(0.5)  # the spawned children start right after the ready file
        below = psutil.Process(run.pid).children(recursive=True)
        names = sorted({" ".join(p.cmdline()[:3]) for p in below})
        # Two workers, two nats-servers, two MLflow servers (tether, click, uvicorn), two
        # tethered children.
        assert len(below) >= 12, names
        for path in ready:
            assert psutil.pid_exists(json.loads(path.read_text())[0])

        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 20
        while alive := [p for p in below if _running(p)]:
            assert time.monotonic() < deadline, [" ".join(p.cmdline()) for p in alive]
            time.sleep(0.2)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        for process in below:  # what failed the test must not outlive it either
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_hung_test_fails_and_the_run_goes_on() -> None:
    # pytest-timeout's thread method ends the hung test's worker; xdist reports
    # the test failed (its worker "crashed while running" it) and goes on with a
    # new worker.
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "no:randomly", HANG_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=die_with_parent,
    )
    assert run.returncode == 1, run.stdout[-3000:]
    assert "crashed while running 'tests/support/hang_probe.py::test_hangs'" in run.stdout
    assert "FAILED tests/support/hang_probe.py::test_hangs" in run.stdout
    assert "1 failed, 1 passed" in run.stdout
    # And it says where the test hung: the stack of its task, awaiting for ever.
    assert "test_hangs hung: its stacks" in run.stdout
    assert "await asyncio.Event().wait()  # never set" in run.stdout
