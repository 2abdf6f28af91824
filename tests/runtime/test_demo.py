"""``scanflow demo``: its parts on their own, then the whole loop end to end.

The parts: the scenario's data and corruption, the phases, the summary computed
from a recorded audit trail given as data, and the report's files. The end to
end test runs a shortened demo (both parts, fixed durations divided by four)
on its own NATS, MLflow, agents and model servers, and checks that the figures
are there and tell a consistent story.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scanflow_agents.runtime.demo import report, summary
from scanflow_agents.runtime.demo.command import demo
from scanflow_agents.runtime.demo.running import DemoOptions, run_demo
from scanflow_agents.runtime.demo.scenario import Data, corrupt, phases
from scanflow_agents.runtime.demo.view import describe_event
from scanflow_agents.runtime.demo.watching import Seen

from .replayed import assert_the_loop_replays_its_run

T0 = 1_800_000_000.0
LATER_CHECKER = {"checker": {"consecutive": 3}}


def test_data_is_split_as_the_example_trains_and_seeded() -> None:
    data, again, other = Data.load(0), Data.load(0), Data.load(1)

    # The example's prepare step keeps 25 % of 1797 digits for testing: the demo's pools.
    assert len(data.y_train) == 1347
    assert (len(data.y_clean), len(data.y_held_out)) == (150, 300)
    assert np.array_equal(data.x_drifted_eval, again.x_drifted_eval)
    # Each held-out image is judged in several corruptions, never the same pixels twice.
    assert len(data.y_drifted_eval) == len(data.x_drifted_eval) == 4 * len(data.y_held_out)
    assert not np.array_equal(data.x_drifted_eval[0], data.x_drifted_eval[1])
    assert not np.array_equal(data.x_drifted_eval, other.x_drifted_eval)
    image, label = data.sampler("drifted", np.random.default_rng(7))
    same, same_label = data.sampler("drifted", np.random.default_rng(7))
    assert image.shape == (64,)
    assert 0 <= label <= 9
    assert (np.array_equal(image, same), label) == (True, same_label)  # seeded per client


def test_corruption_moves_the_pixels_and_hurts_a_model_trained_on_clean_digits() -> None:
    from sklearn.linear_model import LogisticRegression

    data = Data.load(0)
    model = LogisticRegression(max_iter=2000).fit(data.x_train, data.y_train)
    corrupted = corrupt(data.x_clean[:50], np.random.default_rng(0))

    assert corrupted.shape == (50, 64)
    assert corrupted.min() >= 0
    assert corrupted.max() <= 16
    assert np.abs(corrupted - data.x_clean[:50]).mean() > 1.0
    clean = model.score(data.x_held_out, data.y_held_out)
    drifted = model.score(data.x_drifted_eval, data.y_drifted_eval)
    assert clean > 0.9
    assert drifted < clean - 0.25


def test_phases_follow_the_parts_and_the_speed() -> None:
    both = phases(["drift", "load"], speed=2.0)
    load_only = phases(["load"])

    assert [p.name for p in both] == ["clean", "drift", "spike", "calm"]
    assert [p.name for p in load_only] == ["clean", "spike", "calm"]
    assert both[0].seconds == load_only[0].seconds / 2
    assert both[1].until == "recovered"
    assert both[2].pool == "drifted"  # the world stays drifted after the drift part
    assert load_only[1].pool == "clean"
    assert both[2].clients > both[0].clients
    with pytest.raises(ValueError, match="unknown demo parts"):
        phases(["drfit"])


def test_the_example_application_is_found_from_the_package() -> None:
    import yaml
    from scanflow_agents.runtime.demo.stack import EXAMPLE, StackOptions

    # The demo finds its application through the package (shipped in the wheel), not
    # through a checkout's layout; every step it names must lie next to it.
    application = yaml.safe_load(StackOptions(work_dir=Path(".")).application.read_text())
    nodes = [node for workflow in application["workflows"] for node in workflow["nodes"]]
    steps = [node["entry_point"] for node in nodes if "entry_point" in node]
    assert steps == ["prepare.py", "train.py", "evaluate.py"]
    assert all((EXAMPLE / step).is_file() for step in steps)


def _record(kind: str, agent: str, name: str, at: float, **payload: Any) -> dict[str, Any]:
    time = datetime.fromtimestamp(T0 + at, UTC).isoformat()
    return {"kind": kind, "agent": agent, "name": name, "time": time, "payload": payload}


def _action(actuator: str, at: float, caller: str = "improver", **result: Any) -> dict[str, Any]:
    params = result.pop("params", {})
    payload = {"ok": True, "caller": caller, "params": params, "result": result}
    return _record("action", "planner", actuator, at, **payload)


TRAIL = [
    _action("deploy", 1, caller="demo", services=[{"details": {"replicas": 1}}]),
    _record("finding", "checker", "finding.drift.serve", 5, statistic=0.4),  # a false alarm
    _record("finding", "checker", "finding.drift.serve", 24, statistic=0.8),
    _record("decision", "checker", "drift", 24.1, action="drift"),
    _action("run", 25, params={"workflow": "train"}),
    _action("promote", 40, params={"model": "digits", "version": "2"}),
    _action("redeploy", 45, params={"model_uri": "models:/digits/2"}),
    _record("finding", "checker", "finding.slo.serve", 60, breached=False),
    _record("finding", "checker", "finding.slo.serve", 63, breached=True),
    _action("scale", 66, params={"replicas": 3}, details={"before": 1, "replicas": 3}),
    _action("scale", 80, params={"replicas": 1}, details={"before": 3, "replicas": 1}),
]
PHASES: list[dict[str, Any]] = [
    {"name": "clean", "start": T0 + 2, "end": T0 + 20},
    {"name": "drift", "start": T0 + 20, "end": T0 + 55},
    {"name": "spike", "start": T0 + 55, "end": T0 + 75},
    {"name": "calm", "start": T0 + 75, "end": T0 + 85},
]


def _requests() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    requests = []
    for at in np.arange(2, 85, 0.1):
        phase = next(p["name"] for p in PHASES if p["start"] <= T0 + at < p["end"])
        new = at >= 45
        right = rng.random() < (0.95 if phase == "clean" else 0.85 if new else 0.4)
        requests.append(
            {
                "time": T0 + at,
                "phase": phase,
                "latency_ms": 120.0 if 58 <= at < 70 else 8.0,
                "status": 200,
                "prediction": 3 if right else 5,
                "label": 3,
                "labelled": rng.random() < 0.6,
                "replica": "r1",
                "model_uri": "models:/digits/2" if new else "models:/digits@production",
            }
        )
    return requests


def test_summary_is_computed_from_the_trail_and_the_requests() -> None:
    drifted = {"before": 0.45, "new": 0.962, "after": 0.962}
    figures = summary.compute(TRAIL, _requests(), PHASES, drifted, {"before": 0.98})

    assert figures["requests"] == 830
    assert figures["accuracy"]["before_drift"] > 0.9
    assert figures["accuracy"]["during_drift"] < 0.5
    assert figures["accuracy"]["after_recovery"] > 0.8
    assert figures["seconds"] == {
        "onset_to_detection": 4.0,  # the false alarm before onset does not count...
        "onset_to_retraining": 5.0,
        "onset_to_promotion": 20.0,
        "onset_to_new_version_serving": 25.0,
        "new_version_serving_to_rollback": None,
        "breach_to_scale_out": 3.0,  # the window that met the objective is no breach
        "spike_to_breach": 8.0,
        "load_end_to_scale_in": 5.0,  # calm begins at 75, the planner scales in at 80
    }
    assert figures["scaling_turnarounds"] == 1  # out, then in once: no flapping
    assert figures["drift_findings_before_onset"] == 1  # ...but is reported
    assert figures["new_version"] == "models:/digits/2"
    assert figures["actions"]["by_the_loop"] == 5
    assert figures["actions"]["by_the_demo"] == 1
    assert figures["actions"]["loop_by_actuator"]["planner.scale"] == 2
    assert summary.replica_timeline(TRAIL) == [(T0 + 1, 1), (T0 + 66, 3), (T0 + 80, 1)]
    text = summary.table(figures)
    assert "accuracy after recovery" in text
    assert re.search(r"^seconds breach to scale out +3\.0$", text, re.MULTILINE)
    # Accuracies with three digits, points and seconds with one, whatever their size.
    assert re.search(r"^accuracy after recovery +0\.\d{3}$", text, re.MULTILINE)
    # The bar pairs the same held-out images: before the drift (clean) and after (drifted).
    assert figures["recovery_gap_points"] == 1.8
    small = {**figures, "recovery_gap_points": 0.4}
    assert re.search(r"^recovery gap, held-out \(points\) +0\.4$", summary.table(small), re.M)


def test_a_run_without_the_drift_part_has_no_drift_figures() -> None:
    figures = summary.compute(TRAIL[-3:], _requests(), [PHASES[0], PHASES[2], PHASES[3]])

    assert figures["accuracy"]["during_drift"] is None
    assert figures["seconds"]["onset_to_detection"] is None
    assert figures["seconds"]["breach_to_scale_out"] == 3.0
    assert "-" in summary.table(figures)


def test_report_writes_the_plots_and_the_page(tmp_path: Path) -> None:
    figures = summary.compute(TRAIL, _requests(), PHASES, {"before": 0.45, "after": 0.83})

    paths = report.render(
        figures, _requests(), summary.replica_timeline(TRAIL), tmp_path, objective_ms=50
    )

    assert set(paths) == {"accuracy", "latency", "replicas", "html"}
    for name in ("accuracy", "latency", "replicas"):
        assert paths[name].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert all(f'src="{name}.png"' in page for name in ("accuracy", "latency", "replicas"))
    assert "accuracy after recovery" in page


def test_the_view_words_decisions_and_actions() -> None:
    decision = Seen(
        T0, "decision.improver.on_drift", "improver", {"action": "retrain", "reason": "x"}
    )
    refused = Seen(
        T0,
        "action.planner.scale",
        "planner",
        {"ok": False, "params": {"replicas": 3}, "error": {"code": "rejected"}},
    )
    passed = Seen(T0, "finding.slo.serve", "checker", {"breached": False})

    assert describe_event(decision) == "improver decides retrain: x"
    assert describe_event(refused) == "planner.scale(replicas=3) → rejected"
    assert describe_event(passed) == ""


def test_the_command_refuses_unknown_parts() -> None:
    result = CliRunner().invoke(demo, ["--parts", "drift,nope"])

    assert result.exit_code == 2
    assert "choose among drift, load" in result.output


def test_the_log_goes_to_a_file_and_the_terminal_keeps_warnings(tmp_path: Path) -> None:
    import io
    import logging

    from scanflow_agents.runtime.demo.command import _log_to_file

    root, stream = logging.getLogger(), io.StringIO()
    terminal = logging.StreamHandler(stream)
    root.addHandler(terminal)
    level, root.level = root.level, logging.INFO
    try:
        with _log_to_file(tmp_path / "report" / "demo.log"):
            logging.getLogger("scanflow_agents.x").info("agent started")
            logging.getLogger("scanflow_agents.x").warning("MLflow unreachable")
        logging.getLogger("scanflow_agents.x").info("after the demo")
    finally:
        root.removeHandler(terminal)
        root.level = level

    written = (tmp_path / "report" / "demo.log").read_text()
    assert "agent started" in written
    assert "MLflow unreachable" in written
    assert "after the demo" not in written
    shown = stream.getvalue()
    assert "agent started" not in shown
    assert "MLflow unreachable" in shown
    assert "after the demo" in shown  # the terminal's level is given back


# The whole loop with real servers and agents, in the test profile (conftest.py):
# MLflow starts in 5-8 s, the first training and deployment take about 20 s, and
# the loop's own reactions (a retraining, replicas starting) are not shortened by
# --speed; about 100 s on a quiet machine, 215 s on a slow day (the timeout only
# guards against a hang).
@pytest.mark.e2e(seconds=150)
@pytest.mark.timeout(480)
async def test_the_demo_closes_the_loop_end_to_end(
    tmp_path: Path, demo_options: Callable[..., DemoOptions]
) -> None:
    # Beside the loop's checker, a shadow that wants one more drifted window in a row.
    options = replace(demo_options("digits", ("drift", "load")), shadows=LATER_CHECKER)

    with (tmp_path / "view.txt").open("w") as out:
        figures = await run_demo(options, out=out)

    marks, seconds = figures["marks"], figures["seconds"]
    accuracy, held = figures["accuracy"], figures["held_out_drifted"]
    assert marks["drift_onset"] < marks["detection"] < marks["new_version_serving"]
    assert marks["detection"] <= marks["retraining"] <= marks["promotion"]
    assert seconds["onset_to_detection"] > 0
    assert accuracy["before_drift"] > 0.85
    assert accuracy["after_recovery"] > accuracy["during_drift"] + 0.15
    assert held["new"] > held["before"] + 0.15
    # The bar's figure is computed (the same held-out images, clean then drifted).
    assert figures["held_out_clean"]["before"] > 0.9
    assert figures["recovery_gap_points"] < 5
    assert marks["spike"] < marks["slo_breach"] < marks["scale_out"]
    assert seconds["breach_to_scale_out"] > 0
    # Replicas come back down after the load, once: out, then in, no flapping. Before
    # the spike, a busy machine may breach the objective (a freshly deployed replica,
    # a retraining beside it, other tests) and the loop rightly scales out and back
    # in: how often depends on the machine, so it is not counted here.
    assert marks["load_end"] < marks["scale_in"]
    assert figures["scaling_turnarounds_under_load"] == 1
    assert figures["actions"]["loop_by_actuator"]["planner.run"] >= 1
    assert figures["failed_requests"] < 0.01 * figures["requests"]
    assert figures["labels"]["matched"] > 0.9 * figures["labels"]["sent"]
    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert written["seconds"] == seconds
    for name in ("report.html", "accuracy.png", "latency.png", "replicas.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    view = (tmp_path / "view.txt").read_text()
    assert "checker finds finding.drift.serve" in view
    assert "improver decides retrain" in view
    await assert_the_loop_replays_its_run(tmp_path)
    # The shadow's drift alarms came a window after the live ones: on other causes.
    shadow = figures["shadows"]["checker"]
    counts, disagreed = shadow["counts"], shadow["disagreements"]
    assert counts["changed"] == 0, disagreed
    assert counts["only_live"] >= 1, counts
    assert counts["only_shadow"] >= 1, counts
    assert {r["rule"] for r in disagreed if r["status"] == "only_shadow"} <= {
        r["rule"] for r in disagreed if r["status"] == "only_live"
    }
    assert 'checker-shadow {"consecutive": 3}' in summary.table(figures)


# The drift part only, with the retraining made worse on purpose (20 clean
# digits, no recent rows): the improver must reject the candidate and keep the
# version in production. About 70 s.
@pytest.mark.e2e(seconds=80)
@pytest.mark.timeout(480)
async def test_a_worse_candidate_is_rejected_and_production_stays(
    tmp_path: Path, demo_options: Callable[..., DemoOptions]
) -> None:
    worse = {"samples": 20, "recent-weight": 0, "holdout": 0.2}
    options = demo_options("digits", ("drift",), train_parameters=worse)
    with (tmp_path / "view.txt").open("w") as out:
        figures = await run_demo(options, out=out)

    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert figures["marks"]["detection"] is not None
    assert figures["actions"]["loop_by_actuator"]["planner.run"] == 1
    assert "planner.promote" not in figures["actions"]["loop_by_actuator"]
    assert "planner.redeploy" not in figures["actions"]["loop_by_actuator"]
    assert figures["new_version"] is None
    assert written["seconds"]["onset_to_new_version_serving"] is None
    view = (tmp_path / "view.txt").read_text()
    assert "improver decides reject-candidate" in view
