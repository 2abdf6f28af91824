"""Applications, workflows and their nodes: what a platform builds, deploys and runs.

Load a definition with :func:`load_application` or :func:`load_workflow` (a
YAML file, YAML text or a dict). An application file looks like::

    name: digits
    team: vision
    workflows:
      - name: retrain
        kind: batch
        nodes:
          - name: prepare
            entry_point: prepare.py
          - name: fit
            entry_point: digits.training:fit
            parameters: {C: 0.5}
            resources: {cpu: 500m, memory: 1Gi}
        edges: [[prepare, fit]]
      - name: serve
        kind: online
        nodes:
          - name: model
            model_uri: models:/digits@production
            replicas: 2
            latency_p95_ms: 50
"""

from scanflow_agents.workflows.graphs import AgentSpec, Application, Workflow
from scanflow_agents.workflows.loading import WorkflowError, load_application, load_workflow
from scanflow_agents.workflows.nodes import ExecutorNode, Node, Resources, ServiceNode
from scanflow_agents.workflows.quantities import parse_quantity

__all__ = [
    "AgentSpec",
    "Application",
    "ExecutorNode",
    "Node",
    "Resources",
    "ServiceNode",
    "Workflow",
    "WorkflowError",
    "load_application",
    "load_workflow",
    "parse_quantity",
]
