"""The decision audit trail: every observation, decision and action, in MLflow.

Recording never slows an agent: :meth:`MlflowRecorder.record` only appends to
an in-memory queue, and a guarded background task writes the queue in batches.
When MLflow is unreachable the events stay queued (up to ``max_queue``; the
oldest are dropped beyond that, with an error log) and the task retries until
MLflow answers again, so an outage loses nothing that fits in the queue.

Layout. Events of agent ``a`` go to the experiment ``scanflow-agents/a``. One
flush writes a *segment*: a run holding up to ``batch_size`` events, started
at the first event's time and ended at the last one's. Each event is JSON in
the run's tags ``scanflow.event.<seq>.<part>`` (parts because a tag holds at
most 8,000 characters). Two index tags, ``scanflow.correlations`` and
``scanflow.kinds`` (``|id1|id2|``), let :meth:`MlflowRecorder.history` ask
MLflow for the segments of one correlation id. A segment is marked FINISHED
only once all its tags are written; readers skip the others, and events are
de-duplicated by id, so a flush retried after a partial write shows each
event once. One run per batch instead of one per event keeps an agent's
experiment small (a sensor every 30 s is 2,880 events a day).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from scanflow_agents._kit.tasks import guarded
from scanflow_agents.knowledge.clients import KnowledgeClient
from scanflow_agents.knowledge.errors import KnowledgeUnavailable
from scanflow_agents.knowledge.segments import decode_segment, encode_segments

logger = logging.getLogger(__name__)

KINDS = frozenset({"observation", "decision", "action", "failed"})
_REQUIRED = ("id", "kind", "agent", "name", "time")


def _validate(event: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if not event.get(key)]
    if missing:
        raise ValueError(f"event {event.get('id')!r} lacks {', '.join(missing)}")
    if event["kind"] not in KINDS:
        raise ValueError(f"event {event['id']!r} has kind {event['kind']!r}, not one of {KINDS}")
    datetime.fromisoformat(str(event["time"]))  # fail here, not in the flush
    return dict(event)


class MlflowRecorder:
    """Writes agents' events to MLflow in the background and reads them back.

    Args:
        client: The MLflow client.
        prefix: Experiment name prefix; agent ``a`` writes to ``<prefix>/a``.
        batch_size: Most events in one segment run.
        flush_interval: Seconds between flushes when events trickle in.
        retry_interval: Seconds between attempts while MLflow is unreachable.
        max_queue: Events kept while MLflow is unreachable; the oldest go first.
    """

    def __init__(
        self,
        client: KnowledgeClient,
        *,
        prefix: str = "scanflow-agents",
        batch_size: int = 50,
        flush_interval: float = 1.0,
        retry_interval: float = 5.0,
        max_queue: int = 100_000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one flush at a time: keeps segments in order
        self._outage_since: float | None = None

    @property
    def pending(self) -> int:
        """Events recorded but not yet written."""
        return len(self._queue)

    def experiment_name(self, agent: str) -> str:
        """The experiment holding ``agent``'s events."""
        return f"{self.prefix}/{agent}"

    def record(self, event: Mapping[str, Any]) -> None:
        """Queue one event for writing; returns at once. Call it from the event loop's thread.

        Args:
            event: Keys ``id``, ``kind`` (observation, decision, action, failed),
                ``agent``, ``name``, ``correlation_id``, ``time`` (ISO 8601),
                ``payload`` and, where they apply, ``outcome``, ``error``,
                ``duration``. Values must be JSON-able.

        Raises:
            ValueError: A required key is missing or ``kind``/``time`` is invalid.
        """
        self._queue.append(_validate(event))
        if len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "recorder for MLflow at %s dropped %d events so far: queue full (%d) "
                    "while MLflow cannot be written",
                    self.client.shown_uri,
                    self.dropped,
                    self.max_queue,
                )
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    async def start(self) -> None:
        """Start the background flush task; calling it twice is harmless."""
        if self._task is None or self._task.done():
            self._task = guarded(self._flushing(), name="mlflow-recorder-flush", logger=logger)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the task and write what is queued, for at most ``timeout`` seconds."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except (KnowledgeUnavailable, TimeoutError) as exc:
            logger.error("MLflow recorder closed with %d events unwritten: %s", self.pending, exc)

    async def _flushing(self) -> None:
        # Guarded loop: only cancellation ends it; every failure is logged and retried.
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except KnowledgeUnavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    logger.warning(
                        "%s; %d events queued, retrying every %s s",
                        exc,
                        self.pending,
                        self.retry_interval,
                    )
                await asyncio.sleep(self.retry_interval)
            except Exception:
                logger.exception(
                    "MLflow recorder could not write %d events; retrying in %s s",
                    self.pending,
                    self.retry_interval,
                )
                await asyncio.sleep(self.retry_interval)
            else:
                if self._outage_since is not None:
                    logger.warning(
                        "MLflow at %s is back after %.0f s; queue written",
                        self.client.shown_uri,
                        time.monotonic() - self._outage_since,
                    )
                    self._outage_since = None

    async def flush(self) -> None:
        """Write every queued event now.

        Raises:
            KnowledgeUnavailable: MLflow could not be reached; unwritten events
                stay queued, in order.
        """
        async with self._lock:
            while self._queue:
                agent = self._queue[0]["agent"]
                batch: list[dict[str, Any]] = []
                for event in self._queue:
                    if len(batch) >= self.batch_size:
                        break
                    if event["agent"] == agent:
                        batch.append(event)
                await self._write(agent, batch)
                # Written: now, and only now, take them out of the queue.
                ids = {id(event) for event in batch}
                self._queue = collections.deque(e for e in self._queue if id(e) not in ids)

    async def _write(self, agent: str, events: Sequence[dict[str, Any]]) -> None:
        experiment_id = await self.client.experiment_id(self.experiment_name(agent), create=True)
        assert experiment_id is not None  # created if missing
        for segment in encode_segments(events):
            run_id = await self.client.create_run(
                experiment_id,
                run_name=segment.name,
                start_time=segment.start_ms,
                tags=segment.index_tags,
            )
            for tags in segment.tag_batches:
                await self.client.log_batch(run_id, tags=tags)
            await self.client.end_run(run_id, end_time=segment.end_ms)

    async def history(
        self,
        agent: str,
        *,
        correlation_id: str | None = None,
        kinds: Iterable[str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` written events of an agent, oldest first.

        Args:
            agent: Whose events.
            correlation_id: Only events of this correlation id.
            kinds: Only events of these kinds.
            limit: At most this many events (the most recent ones).
        """
        experiment_id = await self.client.experiment_id(self.experiment_name(agent))
        if experiment_id is None:
            return []
        wanted = set(kinds) if kinds is not None else None
        clauses = ["attributes.status = 'FINISHED'", "tags.`scanflow.kind` = 'events'"]
        if correlation_id is not None:
            clauses.append(f"tags.`scanflow.correlations` LIKE {_like(correlation_id)}")
        if wanted is not None and len(wanted) == 1:
            clauses.append(f"tags.`scanflow.kinds` LIKE {_like(next(iter(wanted)))}")
        found: dict[str, tuple[tuple[float, int, int], dict[str, Any]]] = {}
        token: str | None = None
        while True:
            runs, token = await self.client.search_runs(
                [experiment_id],
                " AND ".join(clauses),
                order_by=["attributes.start_time DESC"],
                max_results=100,
                page_token=token,
                operation=f"reading the history of agent '{agent}'",
            )
            for run in runs:
                for seq, event in decode_segment(run.data.tags):
                    if correlation_id is not None and event.get("correlation_id") != correlation_id:
                        continue
                    if wanted is not None and event["kind"] not in wanted:
                        continue
                    order = (_timestamp(event), int(run.info.start_time or 0), seq)
                    found.setdefault(str(event["id"]), (order, event))
            # Pages come newest segment first: once enough events are in hand,
            # older pages cannot add any of the newest ``limit``.
            if not token or len(found) >= limit:
                break
        ordered = sorted(found.values(), key=lambda item: item[0])
        return [event for _, event in ordered[-limit:]] if limit > 0 else []


def _timestamp(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(event["time"])).timestamp()


def _like(value: str) -> str:
    # LIKE wildcards in ids only widen the pre-filter; events are checked again.
    return "'%|" + value.replace("\\", "\\\\").replace("'", "\\'") + "|%'"


__all__ = ["KINDS", "MlflowRecorder"]
