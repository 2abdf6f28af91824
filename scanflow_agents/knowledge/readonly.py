"""An MLflow store that answers reads and refuses every write.

What a replay gives an agent that reads MLflow (``scanflow replay
--read-mlflow``): the agent finds its model references and training runs as
they are now, and nothing it does in the replay reaches the server. Reads are
the store methods named ``get_...`` and ``search_...`` (MLflow's own naming
for every read of the tracking and registry stores); any other method is a
write (``create_``, ``log_``, ``set_``, ``delete_``, ``update_``,
``transition_``...) and raises :class:`KnowledgeReadOnly`, named.
"""

from __future__ import annotations

from typing import Any

from scanflow_agents.knowledge.errors import KnowledgeError
from scanflow_agents.redaction import redact

READS = ("get_", "search_")


class KnowledgeReadOnly(KnowledgeError):
    """A write to MLflow through a client that only reads (a replay's)."""

    def __init__(self, uri: str, method: str) -> None:
        self.uri = uri
        self.method = method
        super().__init__(
            redact(
                f"MLflow at {uri} is read-only here: {method} would write, and a replay "
                "writes nothing (what the agent writes is not replayed)"
            )
        )


class ReadOnlyStore:
    """``store``'s reads, and a :class:`KnowledgeReadOnly` for anything else it can do."""

    def __init__(self, store: Any, uri: str) -> None:
        self._store = store
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if callable(value) and not name.startswith(READS):
            raise KnowledgeReadOnly(self._uri, name)
        return value
