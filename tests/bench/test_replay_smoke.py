"""The replay benchmark records a history for real and replays it.

How fast is the benchmark's business; here: that it measures, and that the
unchanged watcher replays its own history with no difference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPLAY = Path(__file__).resolve().parents[2] / "bench" / "replay.py"


@pytest.mark.timeout(300)
def test_a_short_recording_replays_and_is_timed(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    run = subprocess.run(
        [sys.executable, str(REPLAY), "--seconds", "6", "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, f"bench/replay.py failed:\n{run.stderr[-4000:]}"
    results = json.loads(out.read_text())
    recorded = results["recorded"]
    assert recorded["by_kind"]["observation"] > 50  # a sample every 0.05 s for 6 s
    assert results["unchanged"]["x_real_time"] > 0
    unchanged = results["unchanged"]["counts"]
    assert unchanged["changed"] + unchanged["removed"] + unchanged["added"] == 0
    assert "| goal | >= 100x real time |" in run.stdout
