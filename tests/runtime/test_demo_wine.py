"""``scanflow demo --example wine``: a tabular application with named columns and string labels.

Its data on its own, then the loop closed on it end to end, shortened: the
drift part only (the load part does not depend on the application), once with
the retraining as the example does it (detection, retraining, promotion,
recovery on held-out drifted batches) and once made worse on purpose (the
candidate is refused and production stays).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scanflow_agents.runtime.demo.command import demo
from scanflow_agents.runtime.demo.examples import EXAMPLES
from scanflow_agents.runtime.demo.running import DemoOptions, run_demo
from scanflow_agents.runtime.demo.stack import StackOptions, agent_sections
from scanflow_agents.runtime.demo.tabular import WineData

from .replayed import assert_the_loop_replays_its_run


def test_the_wine_data_is_named_graded_and_shifted() -> None:
    data = WineData.load(0)
    assert data.columns[:2] == ("acidity", "sugar")
    assert set(data.y_clean) == {"low", "medium", "high"}
    # The shift: the new vineyard's batches lie where the first one's never did.
    assert data.x_clean[:, 0].max() < 0 <= data.x_drifted[:, 0].min()
    assert len(data.y_drifted_eval) == 1000
    row, grade = data.sampler("drifted", np.random.default_rng(3))
    again, same = data.sampler("drifted", np.random.default_rng(3))
    assert (np.array_equal(row, again), grade) == (True, same)
    body = data.body(row)
    assert list(body["rows"][0]) == list(data.columns)


def test_the_agents_are_told_the_examples_names() -> None:
    options = StackOptions(work_dir=Path("."), example=EXAMPLES["wine"])
    sections = agent_sections(options)
    supervised = sections["improver"]["workflows"]["score"]
    assert (supervised["model"], supervised["train_workflow"], supervised["node"]) == (
        "wine-quality",
        "fit",
        "classifier",
    )
    assert sections["tracker"]["training_experiments"] == ["wine"]
    assert "slo" not in sections["checker"]  # the objective is the application's own


def test_the_command_offers_the_examples() -> None:
    result = CliRunner().invoke(demo, ["--example", "beer"])
    assert result.exit_code == 2
    assert "digits" in result.output
    assert "wine" in result.output


# The drift part of the wine example with real servers and agents: about 90 s
# on an idle 2-core machine.
@pytest.mark.e2e(seconds=120)
@pytest.mark.timeout(480)
async def test_the_loop_closes_on_the_wine_example(
    tmp_path: Path, demo_options: Callable[..., DemoOptions]
) -> None:
    options = demo_options("wine", ("drift",))
    with (tmp_path / "view.txt").open("w") as out:
        figures = await run_demo(options, out=out)

    marks, held = figures["marks"], figures["held_out_drifted"]
    assert marks["drift_onset"] < marks["detection"] < marks["new_version_serving"]
    assert marks["detection"] <= marks["retraining"] <= marks["promotion"]
    assert figures["held_out_clean"]["before"] > 0.88
    assert held["new"] > held["before"] + 0.15  # recovered on batches never sent
    assert figures["recovery_gap_points"] < 5
    assert figures["failed_requests"] < 0.01 * figures["requests"]
    assert figures["accuracy"]["before_drift"] > 0.85  # string grades compared as sent
    view = (tmp_path / "view.txt").read_text()
    assert "checker finds finding.drift.score" in view
    assert "improver decides retrain" in view
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["new_version"]
    await assert_the_loop_replays_its_run(tmp_path)


# The same, with the retraining made worse on purpose (two shallow trees on 50 rows,
# no recent rows): the improver refuses the candidate and production stays.
@pytest.mark.e2e(seconds=85)
@pytest.mark.timeout(480)
async def test_a_worse_wine_candidate_is_refused(
    tmp_path: Path, demo_options: Callable[..., DemoOptions]
) -> None:
    worse = {"trees": 2, "samples": 50, "recent-weight": 0, "holdout": 0.2}
    options = demo_options("wine", ("drift",), train_parameters=worse)
    with (tmp_path / "view.txt").open("w") as out:
        figures = await run_demo(options, out=out)

    assert figures["marks"]["detection"] is not None
    assert figures["actions"]["loop_by_actuator"]["planner.run"] == 1
    assert "planner.promote" not in figures["actions"]["loop_by_actuator"]
    assert figures["new_version"] is None
    assert "improver decides reject-candidate" in (tmp_path / "view.txt").read_text()
