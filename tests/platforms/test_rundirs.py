"""The run folder on a cluster: steps in separate pods share it through an artifact location.

Each "pod" here is a separate process with its own empty folder, as two
steps' emptyDirs are; what the first writes reaches the second only through
the run's artifact location: a folder URI, and the MLflow server's proxied
artifact store (the platform's default), real servers both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scanflow_agents.knowledge import MlflowServer

WRITE = (
    "import os, pathlib; pathlib.Path(os.environ['D'], 'candidate.json').write_text('{\"v\": 3}')"
)
READ = (
    "import os, pathlib, sys; p = pathlib.Path(os.environ['D'], 'candidate.json');"
    "sys.exit(0 if p.read_text() == '{\"v\": 3}' else 5)"
)


def _step(uri: str, folder: Path, code: str, env: dict[str, str] | None = None) -> int:
    command = [sys.executable, "-m", "scanflow_agents.platforms.rundirs", "--uri", uri]
    command += ["--dir", str(folder), "--", sys.executable, "-c", code]
    done = subprocess.run(
        command,
        env={**os.environ, **(env or {}), "D": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def test_steps_share_the_run_folder_through_a_location(tmp_path: Path) -> None:
    uri = (tmp_path / "artifacts" / "run-1").as_uri()

    assert _step(uri, tmp_path / "pod-a", WRITE) == 0
    assert _step(uri, tmp_path / "pod-b", READ) == 0
    assert _step(uri, tmp_path / "pod-c", "import sys; sys.exit(7)") == 7  # the step's code


def test_the_default_location_is_the_tracking_servers_artifact_store(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    uri = "mlflow-artifacts:/scanflow-runs/run-2"

    assert _step(uri, tmp_path / "pod-a", WRITE, env) == 0
    assert _step(uri, tmp_path / "pod-b", READ, env) == 0
