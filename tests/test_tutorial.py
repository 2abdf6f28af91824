"""The tutorial "Your own model, end to end", run as its page says.

The files of ``examples/churn/`` (the ones the page shows) in a fresh folder;
the four built-in agents started with the page's ``scanflow up`` command;
then the page's commands: apply with the builds, train, wait, promote,
deploy, status. Traffic with labels, then rows moved on three features: the
loop has to close by itself (drift found, retrained, the candidate held for
approval), and the approval given with the page's command rolls the new
version out. A real nats-server and MLflow server; about two minutes.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scanflow_agents.knowledge.servers import MlflowServer
from scanflow_agents.testing import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
SCANFLOW = [sys.executable, "-m", "scanflow_agents.runtime"]
SHIFT = (2.5, -2.0, 0.0, 0.0, 1.5, 0.0)  # the moved features: 0, 1 and 4


@pytest.fixture
def folder(
    tmp_path: Path, nats_url: str, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A folder holding ``churn/``, and the environment the page's commands run in."""
    shutil.copytree(ROOT / "examples" / "churn", tmp_path / "churn")
    monkeypatch.setenv("SCANFLOW_NATS__URL", nats_url)
    monkeypatch.setenv("SCANFLOW_MLFLOW__TRACKING_URI", mlflow_server.url)
    # Its own namespace on the session's server; the experiment and model names
    # are the page's, so a session runs this test once.
    monkeypatch.setenv("SCANFLOW_NAMESPACE", f"tutorial-{uuid.uuid4().hex[:8]}")
    return tmp_path


def scanflow(folder: Path, *args: str, timeout: float = 120) -> str:
    """One of the page's commands (``scanflow --settings churn/settings.yaml ...``)."""
    result = subprocess.run(
        [*SCANFLOW, "--settings", "churn/settings.yaml", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"scanflow {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout


def eventually(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"not within {seconds:.0f} s: {what}")


def history(folder: Path, *kinds: str) -> list[dict[str, Any]]:
    """The audit trail, newest first (``history --json`` prints a record a line)."""
    args = [arg for kind in kinds for arg in ("--kind", kind)]
    out = scanflow(folder, "history", "--limit", "200", "--json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Traffic(threading.Thread):
    """Predictions with their labels, 50 rows/s; ``shift`` moves the inputs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from sklearn.datasets import make_classification

        self.url = url
        self.x, self.y = make_classification(
            n_samples=4000, n_features=6, n_informative=4, random_state=0
        )
        self.shift = False
        self.stop = threading.Event()
        self.sent = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def run(self) -> None:
        import numpy as np

        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            index = rng.integers(0, len(self.y), 10)
            rows = self.x[index] + (np.array(SHIFT) if self.shift else 0.0)
            try:
                out = self.post("/predict", {"instances": rows.tolist()})
                labels = [
                    {"id": p["id"], "label": int(label)}
                    for p, label in zip(out["predictions"], self.y[index], strict=True)
                ]
                self.post("/labels", {"labels": labels})
                self.sent += len(labels)
            except OSError:
                pass  # a replica rolling over; the next request goes to the new one
            self.stop.wait(0.2)


@pytest.mark.e2e(seconds=80)
@pytest.mark.timeout(480)
def test_the_tutorial_closes_the_loop_around_a_model_of_your_own(folder: Path) -> None:
    log = (folder / "agents.log").open("w")
    agents = subprocess.Popen(
        [*SCANFLOW, "--settings", "churn/settings.yaml", "up"],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    traffic: Traffic | None = None
    try:
        eventually(lambda: len(scanflow(folder, "agents").splitlines()) == 5, 60, "four agents")
        scanflow(folder, "apply", "churn/application.yaml", "--build", timeout=300)
        run_id = json.loads(scanflow(folder, "call", "planner", "run", "workflow=train"))
        status = json.loads(scanflow(folder, "call", "planner", "wait", f"run_id={run_id}"))
        assert status["state"] == "succeeded", status
        scanflow(folder, "call", "planner", "promote", "model=churn", "version=1")
        scanflow(folder, "call", "planner", "deploy", "workflow=serve", timeout=300)
        served = json.loads(scanflow(folder, "call", "planner", "status", "workflow=serve"))
        traffic = Traffic(served["services"][0]["url"])
        traffic.start()
        # Clean traffic first: the checker's reference is the training run's, and
        # nothing may drift on the rows the model was trained on.
        time.sleep(25)
        assert not history(folder, "decision") or all(
            record["name"] != "drift" for record in history(folder, "decision")
        )
        traffic.shift = True

        def held() -> list[dict[str, Any]]:
            approvals: list[dict[str, Any]] = json.loads(scanflow(folder, "approvals", "--json"))
            return approvals

        waiting = eventually(held, 240, "a retrained candidate held for approval")
        decisions = {record["name"] for record in history(folder, "decision")}
        assert {"drift", "retrain_on_drift", "judge_candidate"} <= decisions, decisions
        (approval,) = waiting
        assert approval["kind"] == "promote"
        assert approval["details"]["model"] == "churn"
        assert (
            approval["details"]["recent_accuracy"]
            > approval["details"]["production_recent_accuracy"]
        )
        scanflow(folder, "approve", approval["id"], "--reason", "recent accuracy checked")

        def rolled_out() -> bool:
            return any(
                record["agent"] == "planner"
                and record["name"] == "redeploy"
                and record["payload"].get("ok")
                for record in history(folder, "action")
            )

        eventually(rolled_out, 120, "the new version rolled out")
        promoted = [
            record["payload"]["params"]
            for record in history(folder, "action")
            if record["agent"] == "planner" and record["name"] == "promote"
        ]
        assert {"model": "churn", "version": "2"} in promoted, promoted
        assert traffic.sent > 0
    finally:
        if traffic is not None:
            traffic.stop.set()
            traffic.join(timeout=15)
        # The page's order: the agents first (the planner stops its model servers).
        agents.send_signal(signal.SIGINT)
        try:
            agents.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agents.kill()
            agents.wait()
        log.close()
