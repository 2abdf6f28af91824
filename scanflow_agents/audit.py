"""Reading the audit trail back: one agent's history, or one correlated chain.

Two copies exist. The JetStream stream is always there (see
:meth:`scanflow_agents.clients.Client.history`); MLflow holds a second copy
when ``settings.mlflow.record`` is on, read here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from scanflow_agents.settings import MlflowSettings

PREFIX = "scanflow-agents"


async def mlflow_history(
    settings: MlflowSettings,
    *,
    agents: Iterable[str] | None = None,
    correlation_id: str | None = None,
    kinds: Iterable[str] | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Recorded events from MLflow, oldest first, across agents.

    Args:
        settings: the MLflow the agents record to.
        agents: whose records; default every agent that recorded anything.
        correlation_id: only one chain (sensor → rule → actuator → result).
        kinds: only these kinds (observation, decision, action).
        limit: at most so many records per agent (the most recent).
    """
    from scanflow_agents.knowledge import KnowledgeClient, MlflowRecorder

    async with KnowledgeClient(settings) as client:
        recorder = MlflowRecorder(client, prefix=PREFIX)
        names = list(agents) if agents is not None else await _recording_agents(client)
        records: list[dict[str, Any]] = []
        for agent in names:
            records += await recorder.history(
                agent, correlation_id=correlation_id, kinds=kinds, limit=limit
            )
    return sorted(records, key=lambda r: datetime.fromisoformat(str(r["time"])))


async def _recording_agents(client: Any) -> list[str]:
    def search(store: Any) -> list[str]:
        found = store.search_experiments(filter_string=f"name LIKE '{PREFIX}/%'", max_results=1000)
        return [e.name.removeprefix(f"{PREFIX}/") for e in found]

    names: list[str] = await client.tracking("listing the agents that record", search)
    return names
