"""Reading runs and metric points from MLflow, incrementally.

The original Scanflow's sensors searched every run of an experiment on each
poll and summed what they found, so rules re-fired on the same data and a poll
got slower as the history grew. :class:`IncrementalRunReader` returns only
what is new since its last poll, each run and each metric point once, at a
cost that follows what is new (see :mod:`.cursors` for how).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.knowledge.clients import KnowledgeClient
from scanflow_agents.knowledge.cursors import OpenRun, RunCursor
from scanflow_agents.knowledge.records import (
    NODE_TAG,
    TERMINAL_STATUSES,
    WORKFLOW_TAG,
    MetricPoint,
    RunRecord,
)

# MLflow caps the values of an IN clause; open runs are refreshed in chunks.
_IN_CHUNK = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _and(*clauses: str) -> str:
    return " AND ".join(f"{c}" for c in clauses if c.strip())


@dataclass(frozen=True)
class Poll:
    """What one :meth:`IncrementalRunReader.poll` found.

    Attributes:
        runs: Runs never returned before, in start-time order.
        points: New points of the wanted metrics, in ``(timestamp, step)`` order.
        finished: Ids of runs seen in a terminal status for the first time
            (new runs that were already finished included).
        expired: Ids of open runs given up on (see ``open_ttl``).
    """

    runs: list[RunRecord] = field(default_factory=list)
    points: list[MetricPoint] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


class IncrementalRunReader:
    """Returns each new run, and each new point of chosen metrics, exactly once.

    Args:
        client: The MLflow client.
        experiments: Experiment names; one that does not exist yet reads as empty.
        filter_string: MLflow search filter the runs must match, e.g.
            ``"tags.`scanflow.node` = 'train'"``.
        metrics: Metric keys whose points are returned; empty for runs only.
        experiment_ids: Experiment ids, in addition to (or instead of) names.
        lookback: Seconds of start-time history re-read on each poll to catch
            runs that became visible late (see :mod:`.cursors`).
        since: Start time (ms) to begin at; default the beginning of history.
            Use the current time to watch only runs started from now on.
        open_ttl: Seconds after its start that a never-finishing run is dropped.
        page_size: Runs per search request.
    """

    def __init__(
        self,
        client: KnowledgeClient,
        experiments: Sequence[str] = (),
        filter_string: str = "",
        metrics: Sequence[str] = (),
        *,
        experiment_ids: Sequence[str] = (),
        lookback: float = 60.0,
        since: int | None = None,
        open_ttl: float = 7 * 24 * 3600.0,
        page_size: int = 500,
    ) -> None:
        if not experiments and not experiment_ids:
            raise ValueError("an incremental run reader needs experiment names or ids")
        self.client = client
        self.experiments = tuple(experiments)
        self.filter_string = filter_string
        self.metrics = tuple(metrics)
        self._ids = list(experiment_ids)
        self._lookback_ms = int(lookback * 1000)
        self._open_ttl_ms = int(open_ttl * 1000)
        self._page_size = page_size
        self.cursor = RunCursor(since=None if since is None else since + self._lookback_ms)

    def state(self) -> dict[str, Any]:
        """The cursor as a JSON-able dict, to persist after each poll."""
        return self.cursor.to_dict()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by :meth:`state`."""
        self.cursor = RunCursor.from_dict(state)

    def _describe(self) -> str:
        names = ", ".join(repr(n) for n in (*self.experiments, *self._ids))
        return f"experiment {names}" if "," not in names else f"experiments {names}"

    async def _experiment_ids(self) -> list[str]:
        ids = list(self._ids)
        for name in self.experiments:
            found = await self.client.experiment_id(name)
            if found is not None and found not in ids:
                ids.append(found)
        return ids

    async def poll(self) -> Poll:
        """Read what is new since the last poll and advance the cursor.

        Raises:
            KnowledgeUnavailable: MLflow could not be reached; the cursor did
                not move, so the next poll returns the same news.
        """
        ids = await self._experiment_ids()
        if not ids:
            return Poll()
        # Work on a copy: a failure halfway leaves the reader where it was.
        cursor = RunCursor.from_dict(self.cursor.to_dict())
        new = await self._new_runs(ids, cursor)
        new_ids = {run.info.run_id for run in new}
        still_open = [rid for rid in cursor.open if rid not in new_ids]
        refreshed = await self._refresh(ids, still_open)
        result = Poll(runs=[RunRecord.from_run(run) for run in new])
        for run in new:
            done = run.info.status in TERMINAL_STATUSES
            if not done:
                cursor.open[run.info.run_id] = OpenRun(int(run.info.start_time or 0))
            result.points.extend(await self._points(run, cursor, final=done))
            if done:
                result.finished.append(run.info.run_id)
        for run in refreshed:
            done = run.info.status in TERMINAL_STATUSES
            result.points.extend(await self._points(run, cursor, final=done))
            if done:
                result.finished.append(run.info.run_id)
                del cursor.open[run.info.run_id]
        result.points.sort()
        result.expired.extend(
            cursor.prune(self._lookback_ms, now_ms=_now_ms(), open_ttl_ms=self._open_ttl_ms)
        )
        self.cursor = cursor
        return result

    async def _new_runs(self, ids: list[str], cursor: RunCursor) -> list[Any]:
        bound = cursor.lower_bound(self._lookback_ms)
        window = f"attributes.start_time >= {bound}" if bound is not None else ""
        filter_string = _and(self.filter_string, window)
        found: list[Any] = []
        token: str | None = None
        while True:
            runs, token = await self.client.search_runs(
                ids,
                filter_string,
                order_by=["attributes.start_time ASC"],
                max_results=self._page_size,
                page_token=token,
                operation=f"searching new runs of {self._describe()}",
            )
            for run in runs:
                if not cursor.is_seen(run.info.run_id):
                    cursor.see(run.info.run_id, int(run.info.start_time or 0))
                    found.append(run)
            if not token:
                return found

    async def _refresh(self, ids: list[str], run_ids: list[str]) -> list[Any]:
        found: list[Any] = []
        for at in range(0, len(run_ids), _IN_CHUNK):
            chunk = run_ids[at : at + _IN_CHUNK]
            in_clause = ", ".join(_quote(rid) for rid in chunk)
            runs, _ = await self.client.search_runs(
                ids,
                f"attributes.run_id IN ({in_clause})",
                max_results=len(chunk),
                operation=f"refreshing {len(chunk)} running runs of {self._describe()}",
            )
            found.extend(runs)
        return found

    async def _points(self, run: Any, cursor: RunCursor, *, final: bool) -> list[MetricPoint]:
        run_id = run.info.run_id
        latest = {m.key: m for m in getattr(run.data, "_metric_objs", None) or ()}
        points: list[MetricPoint] = []
        for key in self.metrics:
            if key not in latest:  # the search result lists every key logged
                continue
            mark = cursor.mark(run_id, key)
            # The latest value is a hint that something was logged since the
            # mark; on the final read of a run the full history is checked.
            head = latest[key]
            if mark is not None and not final and (int(head.timestamp), int(head.step)) <= mark:
                continue
            history = await self.client.metric_history(run_id, key)
            fresh = sorted(
                MetricPoint(int(m.timestamp), int(m.step), run_id, key, float(m.value))
                for m in history
                if mark is None or (int(m.timestamp), int(m.step)) > mark
            )
            if fresh:
                cursor.set_mark(run_id, key, fresh[-1].timestamp, fresh[-1].step)
            points.extend(fresh)
        return points


async def latest_run(
    client: KnowledgeClient, experiment_ids: Sequence[str], filter_string: str = ""
) -> RunRecord | None:
    """The most recently started run matching the filter, or None."""
    runs, _ = await client.search_runs(
        experiment_ids,
        filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=1,
        operation=f"reading the latest run of experiments {list(experiment_ids)}",
    )
    return RunRecord.from_run(runs[0]) if runs else None


async def metric_window(
    client: KnowledgeClient,
    experiment_ids: Sequence[str],
    metric: str,
    *,
    workflow: str,
    node: str | None = None,
    window: float,
    now_ms: int | None = None,
) -> list[MetricPoint]:
    """The latest value of ``metric`` of each run of a workflow node started in a window.

    Runs are found by their tags ``scanflow.workflow`` and ``scanflow.node``
    (:data:`~.records.WORKFLOW_TAG`, :data:`~.records.NODE_TAG`), which the
    workflow's nodes set when they start a run.

    Args:
        client: The MLflow client.
        experiment_ids: Where to search.
        metric: Metric key.
        workflow: Value of the ``scanflow.workflow`` tag.
        node: Value of the ``scanflow.node`` tag; any node if None.
        window: Seconds back from ``now_ms``.
        now_ms: End of the window; default now.

    Returns:
        One point per run that logged the metric, oldest run first.
    """
    end = now_ms if now_ms is not None else _now_ms()
    clauses = [
        f"tags.`{WORKFLOW_TAG}` = {_quote(workflow)}",
        f"attributes.start_time >= {end - int(window * 1000)}",
        f"attributes.start_time <= {end}",
    ]
    if node is not None:
        clauses.append(f"tags.`{NODE_TAG}` = {_quote(node)}")
    points: list[MetricPoint] = []
    token: str | None = None
    while True:
        runs, token = await client.search_runs(
            experiment_ids,
            _and(*clauses),
            order_by=["attributes.start_time ASC"],
            page_token=token,
            operation=f"reading '{metric}' of workflow '{workflow}'",
        )
        for run in runs:
            for m in getattr(run.data, "_metric_objs", None) or ():
                if m.key == metric:
                    points.append(
                        MetricPoint(
                            int(m.timestamp), int(m.step), run.info.run_id, m.key, float(m.value)
                        )
                    )
        if not token:
            return points


__all__ = ["IncrementalRunReader", "Poll", "latest_run", "metric_window"]
