"""The one-shot commands, run as a user would, against real agent processes on NATS."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.runtime.loading import BUILTIN_AGENTS

from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.messages import Heartbeat, PendingApproval
from scanflow_agents.testing import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
SCANFLOW = [sys.executable, "-m", "scanflow_agents.runtime"]
# The scaler of the console tests, and the approval gate of the docs' example.
AGENTS = ("tests/console/operated.py", "examples/approval_gate.py")
GUIDE_AGENTS = ("examples/approval_gate.py", "examples/quickstart.py")


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


@contextlib.contextmanager
def operated(base: tuple[str, ...]) -> Iterator[subprocess.Popen[bytes]]:
    """The operated agents (gate, scaler) in a `scanflow run` process, up and listed."""
    process = subprocess.Popen(
        [*SCANFLOW, *base, "run", *AGENTS],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        deadline = time.monotonic() + 60
        while "gate" not in scanflow(*base, "agents").stdout or "scaler" not in (
            scanflow(*base, "agents").stdout
        ):
            if time.monotonic() > deadline:
                raise AssertionError("the operated agents did not come up")
        yield process
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
def running(base: tuple[str, ...]) -> Iterator[subprocess.Popen[bytes]]:
    with operated(base) as process:
        yield process


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


@pytest.mark.parametrize(("how", "shown"), [(signal.SIGTERM, "stopped"), (signal.SIGKILL, "stale")])
def test_agents_tells_a_clean_stop_from_a_silent_death(
    base: tuple[str, ...], how: signal.Signals, shown: str
) -> None:
    # Each listing is a new process: it never heard the agents' heartbeats,
    # only what they kept (a last `stopped` on SIGTERM; nothing after SIGKILL).
    with operated(base) as process:
        process.send_signal(how)
        process.wait(15)
        found = json.loads(scanflow(*base, "agents", "--json").stdout)
        assert sorted((row["agent"], row["state"]) for row in found) == [
            ("gate", shown),
            ("scaler", shown),
        ]
        listing = scanflow(*base, "agents").stdout.splitlines()
        assert [line.split()[2] for line in listing[1:]] == [shown, shown]


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


@contextlib.contextmanager
def embedded(tmp_path: Path, *references: str) -> Iterator[tuple[str, ...]]:
    """`scanflow run REFERENCES --embedded-nats`, as a guide runs it; yields `--nats URL`.

    On leaving, the process is stopped with Ctrl-C, and must exit 0.
    """
    log_path = tmp_path / "agents.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*SCANFLOW, "run", *references, "--embedded-nats"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent,  # gone with its test process
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"embedded NATS at (\S+)", log_path.read_text())):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no embedded NATS URL printed"
            time.sleep(0.1)
        yield ("--nats", found[1])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert process.returncode == 0, log_path.read_text()[-3000:]


def _until_listed(base: tuple[str, ...], agent: str, state: str = "running") -> None:
    deadline = time.monotonic() + 60
    while not any(
        line.split()[:1] == [agent] and line.split()[2] == state
        for line in scanflow(*base, "agents").stdout.splitlines()
    ):
        assert time.monotonic() < deadline, f"{agent} did not come up as {state}"


def test_the_approval_guide_as_written(tmp_path: Path) -> None:
    # docs/guides/approvals.md: its command, with its embedded NATS, and its steps.
    with embedded(tmp_path, *GUIDE_AGENTS) as base:
        _until_listed(base, "gate")
        scanflow(*base, "run-sensor", "gate", "candidate")
        table = scanflow(*base, "approvals").stdout
        assert table.split("\n")[0].split() == ["ID", "AGENT", "KIND", "WAITING", "SUMMARY"]
        (approval,) = json.loads(scanflow(*base, "approvals", "--json").stdout)
        assert approval["id"] in table
        done = scanflow(*base, "approve", approval["id"], "--reason", "offline metrics checked")
        assert done.stdout.startswith(f"approved {approval['id']} (deploy)")
        chain = scanflow(*base, "history", "--correlation", approval["correlation_id"]).stdout
        names = [line.split()[3] for line in chain.splitlines()[1:]]
        assert names == ["approve-done", "approve", "deploy_candidate", "candidate"]
        again = scanflow(*base, "approve", approval["id"], "--reason", "twice", check=False)
        assert f"no approval '{approval['id']}' waits on any running agent" in again.stderr


def test_the_replay_section_of_the_shadow_guide_as_written(tmp_path: Path) -> None:
    # docs/guides/shadow.md, "Replay the change on what was recorded".
    exported = str(tmp_path / "history.jsonl")
    with embedded(tmp_path, "examples/quickstart.py") as base:
        _until_listed(base, "load-watch")
        deadline = time.monotonic() + 90
        while len(_decisions(base)) < 3:
            assert time.monotonic() < deadline, "the watcher decided nothing in 90 s"
            time.sleep(0.5)
        scanflow(*base, "pause", "load-watch")
        assert "record(s) written to" in scanflow(*base, "history", "--export", exported).stderr
    changed = scanflow(
        "replay", "examples/shadow_policy.py:LoadWatch", "--file", exported, "--json"
    )
    found = json.loads(changed.stdout)
    # From 80 instead of 100, a replica per 40: every scale-out of then is made
    # now too, most with more replicas, and some observations get one of their own.
    assert found["counts"]["removed"] == 0
    assert found["counts"]["changed"] + found["counts"]["added"] > 0
    table = scanflow("replay", "examples/shadow_policy.py:LoadWatch", "--file", exported).stdout
    assert table.splitlines()[0].split() == ["TIME", "STATUS", "RULE", "ON", "THEN", "NOW"]
    unchanged = scanflow(
        "replay", "examples/quickstart.py:LoadWatch", "--file", exported, "--check-determinism"
    )
    assert re.fullmatch(
        r"\d+ recorded observation\(s\) and event\(s\) replayed; (\d+) cause\(s\) decided on: "
        r"\1 same, 0 changed, 0 removed, 0 added\n",
        unchanged.stdout,
    ), unchanged.stdout


def _decisions(base: tuple[str, ...]) -> list[str]:
    listed = scanflow(*base, "history", "--agent", "load-watch", "--kind", "decision", "--json")
    return listed.stdout.splitlines()


def test_the_shadow_guide_as_written(tmp_path: Path) -> None:
    # docs/guides/shadow.md: the quickstart's agents live, the changed watcher as a shadow.
    with embedded(tmp_path, "examples/quickstart.py") as base:
        shadow = subprocess.Popen(
            [*SCANFLOW, *base, "run", "--shadow", "examples/shadow_policy.py:LoadWatch"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            _until_listed(base, "load-watch-shadow", "running,shadow:load-watch")
            deadline = time.monotonic() + 90

            def shadow_actions() -> list[dict[str, Any]]:
                found = scanflow(
                    *base, "history", "--agent", "scaler", "--kind", "action", "--json"
                )
                records = [json.loads(line) for line in found.stdout.splitlines()]
                return [a for a in records if a["payload"]["caller"] == "load-watch-shadow"]

            while not (actions := shadow_actions()):
                assert time.monotonic() < deadline, "no call of the shadow reached the scaler"
                time.sleep(0.5)
            assert all(a["payload"]["dry_run"] for a in actions), actions
            listed = scanflow(
                *base, "history", "--agent", "load-watch-shadow", "--kind", "decision", "--json"
            ).stdout
            decisions = [json.loads(line) for line in listed.splitlines()]
            assert decisions
            assert all(d["payload"]["shadow"] is True for d in decisions)
            assert all("rps is over 80" in d["payload"]["reason"] for d in decisions)
            # The shadow decided on the live watcher's own observations: each of its
            # decisions pairs with the live one on the same observation, or stands alone.
            observed = {
                json.loads(line)["id"]
                for line in scanflow(
                    *base, "history", "--agent", "load-watch", "--kind", "observation", "--json"
                ).stdout.splitlines()
            }
            assert {d["payload"]["trigger"]["observation"] for d in decisions} <= observed
            while True:
                found = json.loads(
                    scanflow(*base, "shadow-diff", "load-watch", "--all", "--json").stdout
                )
                if found["counts"]["changed"] + found["counts"]["same"]:
                    break
                assert time.monotonic() < deadline, f"no cause decided on by both: {found}"
                time.sleep(0.5)
            # Whatever the live watcher decided on (over 100 rps) the shadow decided
            # on too (over 80), once it had caught up with the observation.
            caught_up = max(row["time"] for row in found["rows"] if row["shadow"])
            behind = [r for r in found["rows"] if r["status"] == "only_live"]
            assert all(row["time"] > caught_up for row in behind), behind
            lines = scanflow(*base, "shadow-diff", "load-watch").stdout.splitlines()
            assert lines[0].split() == ["TIME", "STATUS", "RULE", "ON", "LIVE", "SHADOW"]
            assert re.fullmatch(
                r"\d+ cause\(s\) decided on: \d+ same, \d+ changed, \d+ only live, "
                r"\d+ only shadow",
                lines[-1],
            )
            refused = scanflow(*base, "dry-run", "load-watch-shadow", "off", check=False)
            assert refused.returncode != 0
            assert "is a shadow (settings.agent.shadow) and stays in dry-run" in " ".join(
                refused.stderr.split()
            )
        finally:
            shadow.send_signal(signal.SIGINT)
            shadow.wait(30)
        assert shadow.returncode == 0


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


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_up_starts_the_built_in_agents_together(
    nats_url: str, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "SCANFLOW_MLFLOW__TRACKING_URI": mlflow_server.url,
        "SCANFLOW_AGENTS__PLANNER__STORE": "false",
        "SCANFLOW_AGENTS__PLANNER__LOCAL__BASE_DIR": str(tmp_path / "local"),
    }

    def up(*names: str) -> list[str]:
        """The agents ``scanflow up NAMES`` started, once all came up; then stopped."""
        base = ("--nats", nats_url, "-n", f"up-{uuid.uuid4().hex[:6]}")
        process = subprocess.Popen(
            [*SCANFLOW, *base, "up", *names],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent,  # gone with its test process
        )
        deadline = time.monotonic() + 90
        running: list[str] = []
        while len(running) < len(names or BUILTIN_AGENTS):
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, f"only {running} came up"
            listing = scanflow(*base, "agents").stdout.splitlines()[1:]
            running = [line.split()[0] for line in listing]
        # On SIGINT, as on Ctrl-C: every agent stops and the process exits 0.
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0, output[-3000:]
        return running

    assert up() == ["checker", "improver", "planner", "tracker"]
    assert up("planner", "tracker") == ["planner", "tracker"]
    typo = scanflow("--nats", nats_url, "up", "trackr", check=False)
    assert typo.returncode == 2
    assert "'trackr' is not one of 'tracker', 'checker', 'improver', 'planner'" in typo.stderr


def test_apply_through_the_planner_with_paths_relative_to_the_file(
    base: tuple[str, ...], tmp_path: Path
) -> None:
    env = {
        **os.environ,
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


def test_freeze_stops_every_action_of_the_namespace_until_unfrozen(
    running: object, base: tuple[str, ...]
) -> None:
    frozen = scanflow(*base, "freeze", "--reason", "runaway policy")
    assert frozen.stdout.startswith("froze the namespace's actuators (2 running replica(s)")
    state = scanflow(*base, "agents").stdout
    assert "running,frozen" in state
    refused = scanflow(*base, "call", "scaler", "scale", "replicas=5", check=False)
    assert refused.returncode == 1
    assert "frozen by operator:" in refused.stderr
    assert "runaway policy" in refused.stderr
    assert "unfroze" in scanflow(*base, "unfreeze").stdout
    scaled = json.loads(scanflow(*base, "call", "scaler", "scale", "replicas=5").stdout)
    assert scaled["replicas"] == 5
    no_reason = scanflow(*base, "freeze", check=False)
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
