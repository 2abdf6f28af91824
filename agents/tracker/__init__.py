"""The tracker agent: windows serving reports, keeps recent labelled rows, reads trainings.

Run it alone with ``scanflow run scanflow_agents.builtin.tracker:Tracker``.
"""

from scanflow_agents.builtin.tracker.settings import TrackerSettings
from scanflow_agents.builtin.tracker.tracker import Tracker

__all__ = ["Tracker", "TrackerSettings"]
