"""The one-shot commands, run as a user would, against real agent processes on NATS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanflow_agents.messages import Heartbeat, PendingApproval
from scanflow_agents.testing import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SCANFLOW = [sys.executable, "-m", "scanflow_agents.runtime"]
AGENTS = "tests/console/operated.py"


def scanflow(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SCANFLOW, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"scanflow {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture
def base(nats_url: str) -> tuple[str, ...]:
    return ("--nats", nats_url, "-n", f"cmd-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def running(base: tuple[str, ...]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [*SCANFLOW, *base, "run", AGENTS],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        deadline = time.monotonic() + 30
        while "gate" not in scanflow(*base, "agents").stdout or "scaler" not in (
            scanflow(*base, "agents").stdout
        ):
            if time.monotonic() > deadline:
                raise AssertionError("the operated agents did not come up")
        yield process
    finally:
        process.terminate()
        process.wait(15)


def test_agents_and_describe_print_tables(running: object, base: tuple[str, ...]) -> None:
    listing = scanflow(*base, "agents").stdout.splitlines()
    assert listing[0].split() == [
        "AGENT", "INSTANCE", "STATE", "READY", "LEADER", "UP", "APPROVALS"
    ]  # fmt: skip
    assert [line.split()[0] for line in listing[1:]] == ["gate", "scaler"]
    found = json.loads(scanflow(*base, "agents", "--json").stdout)
    assert {Heartbeat.model_validate(item).agent for item in found} == {"gate", "scaler"}

    described = scanflow(*base, "describe", "scaler").stdout
    assert "load" in described
    assert "replicas" in described
    assert "the wanted number of replicas." in described


def test_control_commands_and_the_audit_trail(running: object, base: tuple[str, ...]) -> None:
    paused = scanflow(*base, "pause", "scaler", "load", "--reason", "noisy")
    assert paused.stdout.startswith("paused scaler.load on 1 replica(s)")
    state = json.loads(scanflow(*base, "agents", "--json").stdout)
    assert next(a for a in state if a["agent"] == "scaler")["paused_sensors"] == ["load"]
    skipped = scanflow(*base, "run-sensor", "scaler", "load").stdout
    assert "skipped: sensor 'load' is paused: noisy" in skipped
    scanflow(*base, "resume", "scaler", "load")
    observed = json.loads(scanflow(*base, "run-sensor", "scaler", "load", "--json").stdout)
    assert observed["observation"] == {"rps": 42.0}

    assert "dry-run on for scaler" in scanflow(*base, "dry-run", "scaler", "on").stdout
    dry = json.loads(scanflow(*base, "call", "scaler", "scale", "replicas=5").stdout)
    assert dry["dry_run"] is True
    scanflow(*base, "dry-run", "scaler", "off")

    missing = scanflow(*base, "pause", "scaler", "nope", check=False)
    assert missing.returncode == 1
    assert "has no sensor 'nope' (sensors: load)" in missing.stderr

    history = scanflow(*base, "history", "--agent", "scaler", "--kind", "control").stdout
    lines = history.splitlines()
    assert lines[0].split()[:5] == ["TIME", "KIND", "AGENT", "NAME", "WHAT"]
    names = [line.split()[3] for line in lines[1:]]
    assert names == ["dry-run", "dry-run", "resume", "pause"]  # newest first


def test_a_long_call_shows_progress_and_outlasts_the_default_timeout(
    running: object, base: tuple[str, ...]
) -> None:
    # drain's own timeout is 45 s: the reply is awaited that long (+10 s), not 30 s.
    slow = scanflow(*base, "call", "scaler", "drain", "seconds=3.5")
    assert json.loads(slow.stdout) == {"drained_after": 3.5}
    assert "scaler.drain: still waiting (2 s)" in slow.stderr
    short = scanflow(*base, "call", "scaler", "drain", "seconds=5", "--timeout", "1", check=False)
    assert "did not answer the call to 'drain' within 1 s" in short.stderr


def test_approve_from_the_command_line(running: object, base: tuple[str, ...]) -> None:
    assert scanflow(*base, "approvals").stdout.strip() == "nothing waits for approval"
    scanflow(*base, "run-sensor", "gate", "candidate")
    printed = json.loads(scanflow(*base, "approvals", "--json").stdout)
    waiting = [PendingApproval.model_validate(item) for item in printed]
    assert [a.summary for a in waiting] == ["deploy models:/digits/7"]
    approval = waiting[0]

    no_reason = scanflow(*base, "approve", approval.id, check=False)
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    wrong = scanflow(*base, "reject", "nosuchid", "--reason", "no", check=False)
    assert "no approval 'nosuchid' waits on any running agent" in wrong.stderr

    done = scanflow(*base, "approve", approval.id, "--reason", "metrics look right").stdout
    assert done.startswith(f"approved {approval.id} (deploy)")

    chain = [
        json.loads(line)
        for line in scanflow(
            *base, "history", "--correlation", approval.correlation_id, "--json"
        ).stdout.splitlines()
    ]
    what = {(r["kind"], r["name"]): r for r in chain}
    assert ("observation", "candidate") in what
    assert ("decision", "deploy_candidate") in what
    assert what[("control", "approve")]["payload"]["reason"] == "metrics look right"


def test_history_is_newest_first_and_limited_after_filtering(
    running: object, base: tuple[str, ...]
) -> None:
    for _ in range(3):
        scanflow(*base, "call", "scaler", "scale", "replicas=1")
    # The scaler's load sensor observes every second: far more records than 2.
    actions = scanflow(*base, "history", "--kind", "action", "--limit", "2", "--json").stdout
    records = [json.loads(line) for line in actions.splitlines()]
    assert [r["kind"] for r in records] == ["action", "action"]
    assert records[0]["time"] >= records[1]["time"]

    events = scanflow(*base, "events", "--agent", "scaler", "--kind", "observation", "--limit", "3")
    assert len(events.stdout.splitlines()) == 4  # a header and three events
    since = scanflow(*base, "events", "--since", "1h", "--limit", "1", "--json").stdout
    assert len(since.splitlines()) == 1
    bad = scanflow(*base, "events", "--since", "yesterday", check=False)
    assert "neither a duration" in bad.stderr


def test_events_follow_prints_new_events(running: object, base: tuple[str, ...]) -> None:
    process = subprocess.Popen(
        [*SCANFLOW, *base, "events", "--follow", "--agent", "scaler", "--limit", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the load sensor observes every second
        assert "observation  scaler" in line
        assert "load" in line
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_apply_through_the_planner_with_paths_relative_to_the_file(
    base: tuple[str, ...], tmp_path: Path
) -> None:
    env = {
        **__import__("os").environ,
        "SCANFLOW_AGENTS__PLANNER__STORE": "false",
        "SCANFLOW_AGENTS__PLANNER__LOCAL__BASE_DIR": str(tmp_path / "local"),
    }
    planner = subprocess.Popen(
        [*SCANFLOW, *base, "run", "scanflow_agents.builtin.planner:Planner"],
        cwd=tmp_path,  # not the application's folder: its paths must not depend on this
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        deadline = time.monotonic() + 60
        while "planner" not in scanflow(*base, "agents").stdout:
            if time.monotonic() > deadline:
                raise AssertionError("the planner did not come up")
        applied = scanflow(*base, "apply", "examples/digits/application.yaml", "--json")
        result = json.loads(applied.stdout)
        assert result["applied"]["application"] == "digits"
        text = scanflow(*base, "apply", "examples/digits/application.yaml").stdout
        assert text.startswith("applied digits")
        status = json.loads(scanflow(*base, "call", "planner", "status", "workflow=train").stdout)
        assert status is not None
        missing = scanflow(*base, "apply", "no/such.yaml", check=False)
        assert missing.returncode == 2
        assert "does not exist" in missing.stderr
    finally:
        planner.terminate()
        planner.communicate(timeout=30)
