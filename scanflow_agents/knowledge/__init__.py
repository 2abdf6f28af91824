"""The MLflow knowledge adapter: what agents read from and write to MLflow.

Importing this package does not import MLflow (it takes about a second and a
lot of memory); the first call of a :class:`KnowledgeClient` does, in a worker
thread.
"""

from scanflow_agents.knowledge.applications import ApplicationStore
from scanflow_agents.knowledge.clients import KnowledgeClient
from scanflow_agents.knowledge.cursors import RunCursor
from scanflow_agents.knowledge.errors import KnowledgeError, KnowledgeUnavailable
from scanflow_agents.knowledge.readers import (
    IncrementalRunReader,
    Poll,
    latest_run,
    metric_window,
)
from scanflow_agents.knowledge.readonly import KnowledgeReadOnly
from scanflow_agents.knowledge.recorders import MlflowRecorder
from scanflow_agents.knowledge.records import (
    NODE_TAG,
    TEAM_TAG,
    WORKFLOW_TAG,
    MetricPoint,
    ModelVersionRecord,
    RunRecord,
)
from scanflow_agents.knowledge.registries import ModelRef, ModelRegistry
from scanflow_agents.knowledge.servers import MlflowServer

__all__ = [
    "NODE_TAG",
    "TEAM_TAG",
    "WORKFLOW_TAG",
    "ApplicationStore",
    "IncrementalRunReader",
    "KnowledgeClient",
    "KnowledgeError",
    "KnowledgeReadOnly",
    "KnowledgeUnavailable",
    "MetricPoint",
    "MlflowRecorder",
    "MlflowServer",
    "ModelRef",
    "ModelRegistry",
    "ModelVersionRecord",
    "Poll",
    "RunCursor",
    "RunRecord",
    "latest_run",
    "metric_window",
]
