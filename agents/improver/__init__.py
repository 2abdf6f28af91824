"""The improver agent: turns findings into plans (retrain, promote, roll back, scale).

Run it alone with ``scanflow run scanflow_agents.builtin.improver:Improver``.
"""

from scanflow_agents.builtin.improver.improver import Improver
from scanflow_agents.builtin.improver.scaling import Autoscaler, Plan
from scanflow_agents.builtin.improver.settings import ImproverSettings, Scaling, Supervised

__all__ = ["Autoscaler", "Improver", "ImproverSettings", "Plan", "Scaling", "Supervised"]
