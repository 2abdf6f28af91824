"""What a sensor reads from MLflow: only what is new since its last poll.

A sensor declared with ``reads=Runs(...)`` is given a
:class:`~scanflow_agents.knowledge.Poll` of the runs (and metric points) that
appeared since its previous run, and is not called at all when nothing is
new: a rule downstream then fires once per new condition, never once per
poll. The reader's cursor is a small JSON value kept in the NATS key-value
store (bucket ``scanflow-cursors-<namespace>``, key ``<agent>.<sensor>``),
saved after the rules have seen the observation, so a restarted agent goes on
where it stopped (at-least-once: a crash between the rules and the save
shows the last poll again).
"""

from __future__ import annotations

from dataclasses import dataclass

from scanflow_agents.errors import DefinitionError

WORKFLOW_TAG = "scanflow.workflow"
NODE_TAG = "scanflow.node"


@dataclass(frozen=True)
class Runs:
    """New MLflow runs of some experiments, optionally of one workflow node.

    Attributes:
        experiments: experiment names (one that does not exist yet reads as empty).
        filter: an MLflow search filter the runs must match.
        metrics: metric keys whose new points are returned too (also of running runs).
        workflow: only runs tagged with this workflow (``scanflow.workflow``).
        node: only runs tagged with this node (``scanflow.node``).
        tracking_uri: another MLflow server than ``settings.mlflow``.
        from_now: on the first poll ever, skip the history and watch only new runs.
        lookback: seconds of start-time history re-read per poll to catch late runs.
    """

    experiments: tuple[str, ...] = ()
    filter: str = ""
    metrics: tuple[str, ...] = ()
    workflow: str | None = None
    node: str | None = None
    tracking_uri: str | None = None
    from_now: bool = False
    lookback: float = 60.0

    def __post_init__(self) -> None:
        for name in ("experiments", "metrics"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))  # a lone name, not its letters
        if not self.experiments:
            raise DefinitionError("Runs(...) needs at least one experiment name")
        if self.lookback < 0:
            raise DefinitionError(f"lookback must not be negative, got {self.lookback!r}")

    def filter_string(self) -> str:
        """The MLflow filter: the tags of workflow and node, and the user's filter."""
        clauses = [
            f"tags.`{tag}` = '{value}'"
            for tag, value in ((WORKFLOW_TAG, self.workflow), (NODE_TAG, self.node))
            if value
        ]
        if self.filter:
            clauses.append(self.filter)  # MLflow filters only know AND: plain concatenation
        return " AND ".join(clauses)

    def __str__(self) -> str:
        where = f" where {self.filter_string()}" if self.filter_string() else ""
        return f"runs of {', '.join(self.experiments)}{where}"
