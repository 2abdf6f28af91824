"""The chain benchmark runs end to end on a small stream and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAINS = Path(__file__).resolve().parents[2] / "bench" / "chains.py"


@pytest.mark.timeout(300)
def test_chain_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "chains.json"
    run = subprocess.run(
        [sys.executable, str(CHAINS), "--records", "400", "--baseline", "200", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, f"bench/chains.py failed:\n{run.stderr[-4000:]}"
    results = json.loads(out.read_text())
    assert results["with_index"]["messages"] == 800  # each record and its chain copy
    assert results["without_index"]["messages"] == 200
    assert results["chain_lookup_ms"]["count"] == 20
    for key in ("scan_lookup_ms", "history_command_ms", "newest_100_of_agent_ms"):
        assert results[key] > 0
