"""The model servers that ``bench/serving.py`` compares, and how each one starts.

- ``scanflow``: this project's model server (``python -m scanflow_agents.serving``)
  with its supervision on: reports to NATS and to MLflow every interval, each
  after a probe of its own listener;
- ``scanflow-bare``: the same server with no reports and no probe (what the
  supervision costs is the difference);
- ``mlserver``: Seldon's MLServer with its MLflow runtime, in a virtual
  environment of its own that :func:`mlserver_venv` creates once in a cache folder
  (it pins other versions of FastAPI, uvicorn and pydantic than this project's);
- ``mlflow``: ``mlflow models serve --env-manager local`` from this environment.

Every one loads the same registered model (``models:/digits-<model>/1``) from the
same MLflow tracking server, and answers the same request body, one row in
MLflow's scoring protocol, each on one worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from _procs import free_port

SERVERS = ("scanflow", "scanflow-bare", "mlserver", "mlflow")
MLSERVER_VERSION = "1.7.1"
#: Seconds between the supervised server's reports (the local platform's default).
REPORT_INTERVAL = 10.0


@dataclass(frozen=True)
class Peer:
    """One server to start: its command line, and where to ask it what."""

    name: str
    argv: list[str]
    port: int
    predict: str  # the path predictions are POSTed to
    ready: str  # a GET path that answers 200 once the model is loaded
    env: dict[str, str] = field(default_factory=dict)


def scanflow(
    name: str, model_uri: str, tracking_uri: str, *, nats_url: str | None, report: bool
) -> Peer:
    """This project's server; with ``report``, to NATS and MLflow, with probes."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "scanflow_agents.serving",
        "--model-uri",
        model_uri,
        "--tracking-uri",
        tracking_uri,
        "--port",
        str(port),
        "--workflow",
        "bench",
        "--node",
        "digits",
        "--replica",
        name,
    ]
    if report:
        assert nats_url is not None
        argv += [
            "--nats-url",
            nats_url,
            "--namespace",
            "bench",
            "--report-tracking-uri",
            tracking_uri,
            "--report-interval",
            str(REPORT_INTERVAL),
            "--probe",
        ]
    else:
        argv += ["--no-probe"]
    return Peer(name, argv, port, "/predict", "/health")


def mlflow_serve(model_uri: str, tracking_uri: str) -> Peer:
    """``mlflow models serve`` in this environment (its uvicorn is found on PATH)."""
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    argv = [
        mlflow,
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # Its best case, as for the others: no access-log line per request
        # (uvicorn's command line reads its options from UVICORN_* variables).
        "UVICORN_ACCESS_LOG": "false",
    }
    return Peer("mlflow", argv, port, "/invocations", "/ping", env)


def mlserver(venv: Path, model_uri: str, tracking_uri: str, folder: Path) -> Peer:
    """MLServer with its MLflow runtime (it hands a ``models:/`` URI to MLflow as is)."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        # Its default worker pool crashes under uvloop 0.23; inference in the
        # server's own process is one worker, like the others.
        "parallel_workers": 0,
        "debug": False,  # no log line per request
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    model = {
        "name": "digits",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": model_uri},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    argv = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]),
    }
    return Peer("mlserver", argv, port, "/invocations", "/v2/models/digits/ready", env)


def cache_folder() -> Path:
    """Where the benchmark keeps what it installs: ``$XDG_CACHE_HOME/scanflow-bench``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scanflow-bench"


def mlserver_venv(cache: Path) -> Path:
    """A virtual environment with MLServer and its MLflow runtime, made once.

    MLflow, scikit-learn and numpy are pinned to this environment's versions, so
    the same artifact is loaded by the same code in every server.
    """
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache / f"mlserver-{MLSERVER_VERSION}-py{python}"
    done = venv / ".complete"
    if done.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)  # an earlier attempt that did not finish
    pins = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_VERSION}"]
    pins += [f"{name}=={metadata.version(name)}" for name in ("mlflow", "scikit-learn", "numpy")]
    print(f"... installing {', '.join(pins)} into {venv} (once)", file=sys.stderr, flush=True)
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if Path(uv).exists():
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*install, *pins], check=True)
    done.touch()
    return venv
