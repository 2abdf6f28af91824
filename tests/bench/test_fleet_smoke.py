"""The fleet benchmark runs end to end: reports flow, the tracker closes windows, the checker runs.

How fast is the benchmark's business: only that it measures is checked here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FLEET = Path(__file__).resolve().parents[2] / "bench" / "fleet.py"


@pytest.mark.timeout(300)
def test_the_quick_fleet_run_measures_reports_stream_and_tracker(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    run = subprocess.run(
        [sys.executable, str(FLEET), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, f"bench/fleet.py --quick failed:\n{run.stderr[-4000:]}"
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["reports_per_s"] > 0
    assert size["report_bytes"] > 1000
    assert size["telemetry_stream_bytes_per_s"] > 0  # the reports are kept, as telemetry
    assert size["mlflow_metrics_per_report"] > 0
    assert size["tracker_windows"] >= 1  # the tracker closed a window of the fleet's reports
    assert size["tracker_lag_s"]["median"] is not None
    # The checker ran beside it, with drift started in 5 % of the replicas (one
    # here); the quick run ends before two windows in a row can show it.
    assert size["drifted_replicas"] == 1
    assert "drift_detected_s" in size
    assert size["false_findings"] == 0
