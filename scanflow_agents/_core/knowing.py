"""An agent's access to MLflow: clients per server, incremental readers, the audit sink.

Everything here is created lazily, so an agent that never touches MLflow
never imports it. Each tracking URI gets its own client (its own threads and
credentials): sensors reading different servers cannot interfere.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scanflow_agents._core.recording import Sink, event_record
from scanflow_agents.errors import TemporaryError
from scanflow_agents.messages import Envelope
from scanflow_agents.settings import Settings
from scanflow_agents.sources import Runs
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Transport

if TYPE_CHECKING:
    from scanflow_agents.knowledge import (
        IncrementalRunReader,
        KnowledgeClient,
        MlflowRecorder,
        Poll,
    )
    from scanflow_agents.sensors import SensorSpec

logger = logging.getLogger("scanflow_agents.knowing")

RECORD_KINDS = ("observation", "decision", "action", "failed")


class Knowledge:
    """The MLflow side of one agent runtime.

    Args:
        agent: the agent's name (keys its cursors, selects its audit trail).
        settings: the namespace and the MLflow settings.
        transport: the key-value store of cursors, and the stream to catch up from.
        sinks: the recorder's sinks; the MLflow copy of the audit trail joins them
            at :meth:`start` and leaves at :meth:`close`.
    """

    def __init__(
        self, agent: str, settings: Settings, transport: Transport, sinks: list[Sink]
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.transport = transport
        self.subjects = Subjects(settings.namespace)
        self.sinks = sinks
        self._clients: dict[str, KnowledgeClient] = {}
        self._readers: dict[str, IncrementalRunReader] = {}
        self._committed: dict[str, dict[str, Any]] = {}
        self.recorder: MlflowRecorder | None = None

    @property
    def bucket(self) -> str:
        return f"scanflow-cursors-{self.settings.namespace}"

    def client(self, tracking_uri: str | None = None) -> KnowledgeClient:
        """The client of ``tracking_uri`` (default: the agent's MLflow)."""
        from scanflow_agents.knowledge import KnowledgeClient

        settings = self.settings.mlflow
        if tracking_uri and tracking_uri != settings.tracking_uri:
            settings = settings.model_copy(update={"tracking_uri": tracking_uri})
        uri = settings.tracking_uri
        if uri not in self._clients:
            self._clients[uri] = KnowledgeClient(settings)
        return self._clients[uri]

    async def start(self) -> None:
        """Start the MLflow copy of the audit trail if the settings ask for it."""
        if self.settings.mlflow.record:
            from scanflow_agents.knowledge import MlflowRecorder

            self.recorder = MlflowRecorder(self.client())
            await self.recorder.start()
            await self._catch_up(self.recorder)
            self.sinks.append(self.recorder)

    async def _catch_up(self, recorder: MlflowRecorder) -> None:
        """Copy to MLflow what the stream holds and MLflow missed (a crash, an outage).

        The stream is the source of truth: every event newer than the newest one
        MLflow has for this agent is queued again (readers drop duplicates by id).
        """
        from scanflow_agents.knowledge import KnowledgeUnavailable

        agent = self.agent
        try:
            newest = await recorder.history(agent, limit=1)
        except KnowledgeUnavailable as exc:
            # MLflow down at start must not keep the agent from starting: the stream
            # holds the audit trail, and the next start catches up.
            logger.warning("agent %r cannot catch up its MLflow audit trail now: %s", agent, exc)
            return
        since = datetime.fromisoformat(newest[-1]["time"]) if newest else None
        subjects = self.subjects
        copied = 0
        for subject, data in await self.transport.history(subjects.event(f"*.{agent}.>")):
            kind = subjects.topic_of(subject).split(".", 1)[0]
            if kind not in RECORD_KINDS:
                continue
            envelope = Envelope.decode(data)
            # At the newest time too, not only after it: two events may share a time,
            # and the one copied twice is dropped by its id.
            if since is None or envelope.time >= since:
                recorder.record(event_record(envelope, kind, envelope.target or ""))
                copied += 1
        if copied:
            logger.info("agent %r queued %d event(s) from the stream for MLflow", agent, copied)

    async def close(self) -> None:
        if self.recorder is not None:
            # Out of the sinks first: nothing more is handed to a recorder that closes.
            self.sinks.remove(self.recorder)
            await self.recorder.aclose()
            self.recorder = None
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def _key(self, sensor_id: str) -> str:
        return f"{self.agent}.{sensor_id}"

    async def poll(self, spec: SensorSpec) -> Poll:
        """What is new for a reading sensor since its last committed poll.

        The reader starts every attempt from the last committed cursor, so a
        failed attempt (here or in the sensor) loses nothing and shows nothing twice.
        """
        from scanflow_agents.knowledge import KnowledgeUnavailable

        reader = await self._reader(spec)
        reader.restore(self._committed[spec.id])
        try:
            return await reader.poll()
        except KnowledgeUnavailable as exc:
            raise TemporaryError(str(exc)) from exc

    async def commit(self, spec: SensorSpec) -> None:
        """Keep the reader's position: in memory, and durably in the key-value store."""
        state = self._readers[spec.id].state()
        # In memory first: this process's next poll starts here even if the write
        # below fails; a restart then reads one poll again, and never skips one.
        self._committed[spec.id] = state
        await self.transport.kv_put(self.bucket, self._key(spec.id), json.dumps(state).encode())

    async def _reader(self, spec: SensorSpec) -> IncrementalRunReader:
        if spec.id in self._readers:
            return self._readers[spec.id]
        from scanflow_agents.knowledge import IncrementalRunReader

        source = spec.reads
        assert isinstance(source, Runs)
        since = None
        if source.from_now:
            import time

            since = int(time.time() * 1000)
        reader = IncrementalRunReader(
            self.client(source.tracking_uri),
            experiments=source.experiments,
            filter_string=source.filter_string(),
            metrics=source.metrics,
            lookback=source.lookback,
            since=since,
        )
        # The saved cursor wins over `from_now`: a restarted agent resumes where it
        # was rather than skipping what came while it was down.
        saved = await self.transport.kv_get(self.bucket, self._key(spec.id))
        if saved is not None:
            reader.restore(json.loads(saved))
            logger.info("sensor %r of agent %r resumes from its saved cursor", spec.id, self.agent)
        self._committed[spec.id] = reader.state()
        self._readers[spec.id] = reader
        return reader


def is_empty(poll: Poll) -> bool:
    """Whether a poll found nothing at all (the sensor is then not called)."""
    return not (poll.runs or poll.points or poll.finished or poll.expired)
