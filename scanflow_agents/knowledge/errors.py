"""The errors the knowledge adapter raises.

MLflow raises a handful of exception types whose meaning depends on where they
come from (a refused connection, a timeout, a 503 after retries all surface as a
bare ``MlflowException``). The adapter folds everything that means "the
knowledge store cannot answer right now" into :class:`KnowledgeUnavailable`,
so a sensor can treat it as a temporary error and retry later, while a real
bad request (an invalid filter, a missing run) still raises MLflow's own error.
"""

from __future__ import annotations

from scanflow_agents.redaction import redact


class KnowledgeError(Exception):
    """Base class of the knowledge adapter's own errors."""


class KnowledgeUnavailable(KnowledgeError):
    """MLflow could not be reached, timed out, or answered with a 5xx status.

    Args:
        uri: The tracking or registry URI that was called.
        operation: What the adapter was doing, in words ("searching runs of
            experiment 'x'"); it completes the sentence "while ...".
        reason: The underlying cause, short.
    """

    def __init__(self, uri: str, operation: str, reason: str) -> None:
        self.uri = uri
        self.operation = operation
        self.reason = reason
        # The URI may carry credentials (https://user:pass@...): the text never does.
        super().__init__(redact(f"MLflow unreachable at {uri} while {operation}: {reason}"))


class StoreUnreachable(Exception):
    """Raised by the REST stores below the client; the client adds the operation."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(redact(f"{uri}: {reason}"))
