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
from scanflow_agents.platforms.runs import (
    MemoryRunStore,
    RunCallback,
    RunRecord,
    RunRegistry,
    RunStore,
)

__all__ = [
    "ActionResult",
    "BuildResult",
    "DeployResult",
    "MemoryRunStore",
    "NodeEnvironment",
    "NodeRun",
    "Platform",
    "PlatformError",
    "ReplicaStatus",
    "RunCallback",
    "RunRecord",
    "RunRegistry",
    "RunStatus",
    "RunStore",
    "ServiceStatus",
    "WorkflowStatus",
]
