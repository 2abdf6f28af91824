"""The planner on the Kubernetes platform: objects land in the application's team namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scanflow_agents.builtin.planner import Planner

from scanflow_agents import Settings
from scanflow_agents.testing import AgentHarness

from .conftest import NAMESPACE, Cluster

APPLICATION = """
name: digits
team: vision
workflows:
  - name: serve
    kind: online
    nodes:
      - {name: model, model_uri: "models:/digits/1"}
"""


async def test_the_planner_deploys_into_the_applications_team_namespace(
    cluster: Cluster, tmp_path: Path
) -> None:
    (tmp_path / "app.yaml").write_text(APPLICATION)
    section: dict[str, Any] = {
        "platform": "kubernetes",
        "team": "default",  # the planner's own team: not where the application goes
        "applications": [str(tmp_path / "app.yaml")],
        "store": False,
        "kubernetes": {"host": str(cluster.emulator.url).rstrip("/"), "poll_interval": 0.02},
    }
    settings = Settings.defaults().model_copy(update={"agents": {"planner": section}})

    async with AgentHarness(Planner(), settings=settings) as h:
        result = await h.call("planner", "deploy", workflow="serve")
        status = await h.call("planner", "status", workflow="serve")

    assert result["outcome"] == "created"
    assert NAMESPACE == "scanflow-vision"
    assert "serve-model" in cluster.objects("deployments", NAMESPACE)
    assert cluster.objects("deployments", "scanflow-default") == {}
    assert status["deployed"] is True
