"""The planner agent: executes plans on a platform (build, deploy, run, scale, redeploy, promote).

Run it alone with ``scanflow run scanflow_agents.builtin.planner:Planner``.
"""

from scanflow_agents.builtin.planner.planner import MAX_REPLICAS, Planner
from scanflow_agents.builtin.planner.settings import LocalOptions, PlannerSettings

__all__ = ["MAX_REPLICAS", "LocalOptions", "Planner", "PlannerSettings"]
