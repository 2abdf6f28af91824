"""The planner's settings: application files loaded at start, and clear refusals to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.builtin.planner import Planner, PlannerSettings

from scanflow_agents import NotFound, Settings
from scanflow_agents.testing import AgentHarness

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _settings(tmp_path: Path, **planner: Any) -> Settings:
    section = {"local": {"base_dir": str(tmp_path / "local")}, **planner}
    return Settings.defaults().model_copy(update={"agents": {"planner": section}})


async def test_application_files_are_loaded_at_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path, applications=[str(EXAMPLE / "application.yaml")])

    async with AgentHarness(Planner(), settings=settings) as h:
        serve = await h.call("planner", "status", workflow="serve")
        train = await h.call("planner", "status", workflow="train")
        # No MLflow runs here: the store cannot help, and the answer says so.
        with pytest.raises(NotFound, match=r"workflows: serve, train\).*store was not read"):
            # Given time: the planner's first MLflow use imports MLflow (seconds on a
            # loaded machine) before it meets the refused connection.
            await h.call("planner", "status", workflow="retrain", timeout=60)

    assert (serve["deployed"], serve["services"], serve["runs"]) == (False, [], [])
    assert train["workflow"] == "train"


def test_settings_read_lists_from_the_environment_as_text() -> None:
    options = PlannerSettings.model_validate({"applications": "a.yaml, b.yaml"})
    as_json = PlannerSettings.model_validate({"applications": '["c.yaml"]'})

    assert options.applications == [Path("a.yaml"), Path("b.yaml")]
    assert as_json.applications == [Path("c.yaml")]


async def test_bad_settings_stop_the_start_with_the_section_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"(?s)settings\.agents\.planner.*platform"):
        async with AgentHarness(Planner(), settings=_settings(tmp_path, platform="mesos")):
            pass


async def test_a_bad_application_file_stops_the_start_with_the_file_named(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nworkflows:\n  - name: w\n    nodes: []\n")

    with pytest.raises(ValueError, match=r"(?s)broken\.yaml.*workflow 'w', field 'nodes'"):
        async with AgentHarness(Planner(), settings=_settings(tmp_path, applications=[broken])):
            pass
