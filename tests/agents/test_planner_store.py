"""Planners share what was applied through the application store in MLflow.

Replicas of the planner share calls through a queue group, not memory, and a
planner pod restarts with an empty catalog: a workflow applied through one
planner must be found by another that reads the same MLflow, with the folder
of its scripts; an application from the settings' files is never replaced by
a stored one of the same name.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from scanflow_agents.builtin.planner import Planner

from scanflow_agents import NotFound, Settings
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import AgentHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _settings(server: MlflowServer, tmp_path: Path, team: str, **planner: Any) -> Settings:
    section = {"team": team, "local": {"base_dir": str(tmp_path / "local")}, **planner}
    return Settings.defaults().model_copy(
        update={
            "mlflow": MlflowSettings(tracking_uri=server.url),
            "agents": {"planner": section},
        }
    )


def _application(name: str) -> dict[str, Any]:
    application: dict[str, Any] = yaml.safe_load((EXAMPLE / "application.yaml").read_text())
    application.pop("team")  # the planner's own team
    application["name"] = name
    return application


async def test_another_planner_finds_what_one_applied(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # A team of our own: the MLflow server is shared by the whole session.
    settings = _settings(mlflow_server, tmp_path, f"team-{uuid.uuid4().hex[:8]}")
    async with AgentHarness(Planner(), settings=settings) as first:
        await first.call(
            "planner", "apply", application=_application("digits"), base_dir=str(EXAMPLE)
        )

    second = Planner()
    async with AgentHarness(second, settings=settings) as h:
        status = await h.call("planner", "status", workflow="serve")
        assert status["services"] == []  # known, not deployed
        # The scripts' folder came back with the definition.
        assert second.catalog.workflow("train").base_dir == EXAMPLE
        with pytest.raises(NotFound, match="no workflow 'nope'"):
            await h.call("planner", "status", workflow="nope")


async def test_an_application_from_the_settings_files_wins_over_a_stored_one(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    stored = _application("digits")
    stored["workflows"] = [w for w in stored["workflows"] if w["name"] == "serve"]
    stored["workflows"].append({**stored["workflows"][0], "name": "serve-canary"})
    async with AgentHarness(Planner(), settings=_settings(mlflow_server, tmp_path, team)) as h:
        await h.call("planner", "apply", application=stored, base_dir=str(EXAMPLE))

    from_file = _settings(
        mlflow_server, tmp_path, team, applications=[str(EXAMPLE / "application.yaml")]
    )
    planner = Planner()
    async with AgentHarness(planner, settings=from_file) as h:
        # A miss reads the store, which holds another 'digits': the file's stays.
        with pytest.raises(NotFound, match="serve-canary"):
            await h.call("planner", "status", workflow="serve-canary")
        assert sorted(planner.catalog.owners) == ["serve", "train"]
