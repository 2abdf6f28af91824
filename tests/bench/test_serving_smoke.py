"""The serving benchmark runs end to end: this project's server and `mlflow models serve`.

MLServer is left out here: the benchmark installs it into a virtual environment
of its own on first use, and a test installs nothing. Speeds are not asserted
(a loaded CI machine must not fail the suite); that every phase ran, that no
request failed and that every server stopped cleanly are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SERVING = Path(__file__).resolve().parents[2] / "bench" / "serving.py"
SERVERS = ("scanflow", "scanflow-bare", "mlflow")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "serving.json"
    run = subprocess.run(
        [
            sys.executable,
            str(SERVING),
            "--quick",
            "--servers",
            ",".join(SERVERS),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, f"bench/serving.py --quick failed:\n{run.stderr[-4000:]}"
    assert "logreg | scanflow " in run.stdout  # the table
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(420)
@pytest.mark.parametrize("server", SERVERS)
def test_every_phase_of_every_server_is_measured(results: dict[str, Any], server: str) -> None:
    measured = results["models"]["logreg"][server]
    for key in ("closed_1", "closed_8", "open"):
        phase = measured[key]
        assert phase["requests"] > 0, (key, phase)
        assert phase["p99_ms"] >= phase["p50_ms"] > 0
        assert phase["cpu_us_per_request"] > 0
    assert measured["open"]["rate"] == results["environment"]["plan"]["rates"]["logreg"]
    assert measured["failed_requests"] == 0
    assert measured["startup_s"] > 0
    assert measured["rss_mib"] > 0


@pytest.mark.timeout(420)
@pytest.mark.parametrize("server", ["scanflow", "scanflow-bare"])
def test_the_model_server_stops_with_status_0(results: dict[str, Any], server: str) -> None:
    # SIGTERM is how every platform stops a replica: a clean stop, not a kill.
    assert results["models"]["logreg"][server]["exit_codes"] == [0]
