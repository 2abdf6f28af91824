"""Platforms: where workflows are built, deployed and run.

:class:`Platform` is the contract; ``scanflow_agents.platforms.local`` keeps it
with processes on this machine. Importing this package is light.
"""

from scanflow_agents.platforms.base import Platform
from scanflow_agents.platforms.results import (
    ActionResult,
    BuildResult,
    DeployResult,
    NodeEnvironment,
    NodeRun,
    PlatformError,
    ReplicaStatus,
    RunStatus,
    ServiceStatus,
    WorkflowStatus,
)

__all__ = [
    "ActionResult",
    "BuildResult",
    "DeployResult",
    "NodeEnvironment",
    "NodeRun",
    "Platform",
    "PlatformError",
    "ReplicaStatus",
    "RunStatus",
    "ServiceStatus",
    "WorkflowStatus",
]
