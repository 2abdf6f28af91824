"""The ``scanflow`` command, run as a user would: real processes on a real NATS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanflow_agents.messages import Description
from scanflow_agents.testing import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SCANFLOW = [sys.executable, "-m", "scanflow_agents.runtime"]


def scanflow(
    *args: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SCANFLOW, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"scanflow {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture
def namespace() -> str:
    return f"cli-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def quickstart(nats_url: str, namespace: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        # The scaler alone: the watcher would call it on its own and trip the cooldown.
        [*SCANFLOW, "--nats", nats_url, "-n", namespace, "run", "examples/quickstart.py:Scaler"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = scanflow("--nats", nats_url, "-n", namespace, "agents", "--wait", "0.2").stdout
            if "scaler" in found:
                break
        else:
            raise AssertionError("the quickstart scaler did not come up")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_call_describe_and_stop(
    quickstart: subprocess.Popen[str], nats_url: str, namespace: str
) -> None:
    base = ("--nats", nats_url, "-n", namespace)
    result = scanflow(*base, "call", "scaler", "scale", "replicas=4", "service=web")
    assert json.loads(result.stdout) == {"service": "web", "replicas": 4, "changed": True}

    bad = scanflow(*base, "call", "scaler", "scale", "replicas=lots", check=False)
    assert bad.returncode == 1
    assert "bad_input" in bad.stderr
    assert "(field: replicas)" in bad.stderr

    # What --json prints is the wire contract, whole: it validates with nothing left over.
    printed = scanflow(*base, "describe", "scaler", "--json").stdout
    described = Description.model_validate_json(printed)
    assert described.leader is True  # the only replica holds the lease
    assert "LEADER" in scanflow(*base, "agents", "--wait", "0.2").stdout.splitlines()[0]
    assert "yes" in scanflow(*base, "agents", "--wait", "0.2").stdout.splitlines()[1].split()[3:]
    (scale,) = described.actuators
    assert scale.params["properties"]["replicas"]["description"] == "the wanted number of replicas."

    records = [
        json.loads(line)
        for line in scanflow(*base, "history", "--agent", "scaler", "--json").stdout.splitlines()
    ]
    assert any(
        r["kind"] == "action" and r["payload"]["params"] == {"replicas": 4, "service": "web"}
        for r in records
    )

    quickstart.send_signal(signal.SIGINT)
    output, _ = quickstart.communicate(timeout=15)
    assert quickstart.returncode == 0, output
    assert "agent 'scaler' stopped" in output
    assert "Traceback" not in output


def test_call_to_absent_agent_is_a_clear_error(nats_url: str, namespace: str) -> None:
    result = scanflow("--nats", nats_url, "-n", namespace, "call", "ghost", "go", check=False)
    assert result.returncode == 1
    assert f"no agent 'ghost' is running in namespace '{namespace}'" in result.stderr


def test_bad_references_fail_clearly(tmp_path: Path, nats_url: str) -> None:
    missing = scanflow("--nats", nats_url, "run", "no/such/file.py", check=False)
    assert missing.returncode == 1
    assert "no such file no/such/file.py" in missing.stderr

    broken = tmp_path / "broken.py"
    broken.write_text("import scanflow_agents\nraise RuntimeError('bad config in user code')\n")
    result = scanflow("--nats", nats_url, "run", str(broken), check=False)
    assert result.returncode == 1
    assert "bad config in user code" in result.stderr
    assert "Traceback" in result.stderr  # the user's error is shown, not hidden

    wrong_class = scanflow("--nats", nats_url, "run", "examples/quickstart.py:Nope", check=False)
    assert "has no Agent subclass 'Nope' (agents there: LoadWatch, Scaler)" in wrong_class.stderr


def test_unreachable_nats_is_a_clear_error() -> None:
    env = {**os.environ, "SCANFLOW_NATS__CONNECT_TIMEOUT": "1"}
    result = subprocess.run(
        [*SCANFLOW, "--nats", "nats://127.0.0.1:1", "agents"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 1
    assert "Error: cannot connect to NATS at nats://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_nats_server_on_a_taken_port_is_a_clear_error(nats_url: str) -> None:
    # Before: the URL was printed and the agents quietly used the other server.
    port = nats_url.rsplit(":", 1)[1]
    result = scanflow("nats", "--port", port, check=False)
    assert result.returncode == 1
    assert f"port {port} is taken: something already listens on 127.0.0.1:{port}" in result.stderr
    assert result.stdout == ""
