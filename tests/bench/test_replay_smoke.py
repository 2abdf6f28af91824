"""The replay benchmark records a history for real and replays it, or replays a demo's.

How fast is the benchmark's business; here: that it measures, and that the
unchanged watcher replays its own history with no difference.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scanflow_agents.builtin.checker import Checker

from scanflow_agents import Settings
from scanflow_agents.testing import AgentHarness

from ..agents.test_checker import DIGITS, ROTATED, Feed

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


@pytest.mark.timeout(300)
async def test_a_recorded_demo_folder_replays_and_is_timed(tmp_path: Path) -> None:
    """``--demo DIR``: the built-in agents on a history and settings laid out as the demo's."""
    checker = {"reference": "windows", "reference_windows": 3}
    settings = Settings.defaults().model_copy(update={"agents": {"checker": checker}})
    async with AgentHarness(Checker(), settings=settings) as h:
        feed = Feed(h)
        for _ in range(3 + 2):
            await feed.window(feed.rows(DIGITS))
        for _ in range(4):  # found at the second drifted window in a row
            await feed.window(feed.rows(ROTATED))
        await h.settle()
        history = await h.client.history(kinds=None)
    report = tmp_path / "report"
    report.mkdir()
    (report / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (report / "settings.json").write_text(json.dumps(settings.model_dump(mode="json")))
    out = tmp_path / "replay-demo.json"
    command = [sys.executable, str(REPLAY), "--demo", str(tmp_path), "--rounds", "1"]
    run = await asyncio.to_thread(
        subprocess.run,
        [*command, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert run.returncode == 0, f"bench/replay.py --demo failed:\n{run.stderr[-4000:]}"
    results = json.loads(out.read_text())
    decided = len([r for r in history if r["kind"] == "decision"])
    assert results["checker"]["counts"] == {"same": decided, "changed": 0, "removed": 0, "added": 0}
    assert results["improver"]["counts"]["same"] == 0  # it supervises no workflow here
    moved = results["checker, one more window"]["counts"]
    assert (moved["removed"], moved["added"]) == (1, 1)
