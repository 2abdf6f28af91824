"""The checker agent: input drift, performance drift and SLO findings from the tracker's windows.

Run it alone with ``scanflow run scanflow_agents.builtin.checker:Checker``.
"""

from scanflow_agents.builtin.checker.checker import Checker
from scanflow_agents.builtin.checker.settings import CheckerSettings, Objectives

__all__ = ["Checker", "CheckerSettings", "Objectives"]
