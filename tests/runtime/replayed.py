"""After an end-to-end demo run: the loop's agents replay it, decision for decision."""

from __future__ import annotations

import json
from pathlib import Path

from scanflow_agents.builtin.checker import Checker, CheckerSettings
from scanflow_agents.builtin.improver import Improver

from scanflow_agents import Settings
from scanflow_agents.diffs import Difference
from scanflow_agents.knowledge import KnowledgeClient, MlflowServer
from scanflow_agents.replaying import replay
from scanflow_agents.testing import assert_replays


async def assert_the_loop_replays_its_run(tmp_path: Path) -> None:
    """The checker and the improver, replayed on the run's history and settings (written
    with the report) and its MLflow (read only), decide as they did, cause by cause."""
    report_dir, folder = tmp_path / "report", tmp_path / "work" / "mlflow"
    history = [json.loads(line) for line in (report_dir / "history.jsonl").read_text().splitlines()]
    ran_with = json.loads((report_dir / "settings.json").read_text())
    async with MlflowServer(
        f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")
    ) as mlflow:
        ran_with["mlflow"]["tracking_uri"] = mlflow.url  # the same store, served again
        settings = Settings.model_validate(ran_with)
        async with KnowledgeClient(settings.mlflow, read_only=True) as knowledge:
            for agent in (Checker(settings=settings), Improver(settings=settings)):
                replayed = await assert_replays(agent, history, knowledge=knowledge)
                assert replayed.failures == {}, agent.name
                assert replayed.counts()["same"] >= 1, agent.name  # each decided something
            # A checker that wants one more drifted window in a row: each of its alarms
            # moves one window later, and nothing else changes.
            later = ran_with["agents"].setdefault("checker", {})
            later["consecutive"] = CheckerSettings.model_validate(later).consecutive + 1
            changed = Settings.model_validate(ran_with)
            moved = await replay(Checker(settings=changed), history, knowledge=knowledge)
    counts = moved.counts()
    assert counts["removed"] == counts["added"] >= 1, counts
    assert counts["changed"] == 0, counts
    removed = sorted((r.difference for r in moved.rows if r.status == "removed"), key=_key)
    added = sorted((r.difference for r in moved.rows if r.status == "added"), key=_key)
    for then, now in zip(removed, added, strict=True):
        assert then.rule == now.rule
        assert then.time < now.time


def _key(difference: Difference) -> tuple[str, str]:
    return difference.rule, difference.time
