"""Talk to running agents without being one: for the CLI, the console, scripts and tests."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from scanflow_agents._core.calling import call_envelope, remote_call, result_of
from scanflow_agents._core.indexing import chain_token
from scanflow_agents._core.recording import event_record
from scanflow_agents.errors import BadMessage, CallTimeout, Unavailable
from scanflow_agents.messages import Description, Envelope, Heartbeat, Reply
from scanflow_agents.settings import Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import NoResponders, RequestTimeout, Transport, TransportError
from scanflow_agents.transports.streams import StreamSpec

logger = logging.getLogger("scanflow_agents.clients")

Unreadable = Callable[[BadMessage], None]
"""Told of each answer that is skipped because it cannot be read (it names the agent)."""

RECORD_KINDS = ("observation", "decision", "action", "failed", "control")
"""The record kinds ``history`` returns by default; ask for ``started`` to see the start
records that precede the action of a call with a ``call_id``. ``failed`` is a
decision's call that failed, as its caller saw it (no answer, no agent, ...)."""


def streams_of(settings: Settings) -> list[StreamSpec]:
    """The namespace's streams by purpose: the audit trail, and telemetry apart from it."""
    subjects = Subjects(settings.namespace)
    nats, telemetry = settings.nats, settings.nats.telemetry
    return [
        StreamSpec(
            settings.stream_name,
            (subjects.all_events, subjects.all_chains),
            max_age=nats.stream_max_age,
            max_bytes=nats.stream_max_bytes,
        ),
        StreamSpec(
            settings.telemetry_stream_name,
            (subjects.all_telemetry,),
            max_age=telemetry.max_age,
            max_bytes=telemetry.max_bytes,
            replicas=telemetry.replicas,
        ),
    ]


async def connect_transport(settings: Settings, *, name: str = "scanflow") -> Transport:
    """Connect to the NATS server of ``settings`` with the namespace's streams."""
    from scanflow_agents.transports.nats import NatsTransport

    return await NatsTransport.connect(settings.nats, streams=streams_of(settings), name=name)


class Client:
    """Calls, describes and discovers agents of one namespace over a transport."""

    def __init__(
        self, transport: Transport, *, namespace: str = "default", name: str = "client"
    ) -> None:
        self.transport = transport
        self.subjects = Subjects(namespace)
        self.name = name

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[Client]:
        """Connect to NATS as in ``settings`` and close the connection on exit."""
        transport = await connect_transport(settings, name="scanflow-client")
        try:
            yield cls(transport, namespace=settings.namespace)
        finally:
            await transport.close()

    async def call(
        self,
        agent: str,
        actuator: str,
        arguments: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float = 10.0,
        dry_run: bool = False,
        call_id: str | None = None,
        correlation_id: str | None = None,
        **params: Any,
    ) -> Any:
        """Call an actuator and return its result (raises a :class:`~scanflow_agents.CallError`).

        The actuator's parameters are keyword arguments, or a mapping given after
        the actuator's name for parameters whose names this method uses itself:
        ``call("planner", "wait", {"timeout": 30}, timeout=40)`` waits up to 40 s
        for an actuator told to wait 30 s. Both may be given; keywords win.

        Args:
            arguments: The actuator's parameters as a mapping.
            timeout: Seconds to wait for the reply. Within it, a ``busy`` or
                ``unavailable`` answer (the agent could not take the call now) and
                "nobody answers" right after a reconnect are retried with backoff.
            dry_run: Ask the actuator to say what it would do, without doing it.
            call_id: the idempotency key (keyed on agent, actuator and id): a call
                sent again with it is answered from its first successful reply, on
                any replica and after a restart, instead of acting twice; one whose
                first run was cut short by a dying process gets ``InDoubt``.
                Refusals and failures are not kept: a retry with the same id runs.
            correlation_id: The chain this call belongs to (audit trail).
        """
        envelope = call_envelope(
            self.name,
            agent,
            actuator,
            {**(arguments or {}), **params},
            call_id=call_id,
            correlation_id=correlation_id,
            dry_run=dry_run,
        )
        return await remote_call(self.transport, self.subjects, envelope, timeout)

    async def describe(self, agent: str, *, timeout: float = 5.0) -> Description:
        """The description of a running agent (sensors, rules, actuators with schemas).

        Raises:
            Unavailable: no replica of the agent runs.
            CallTimeout: none answered within ``timeout`` seconds.
            CallError: the agent answered with an error (its code and message).
            BadMessage: the answer is not a description this version reads
                (:class:`~scanflow_agents.errors.IncompatibleVersion` if it is of
                another major version).
        """
        envelope = Envelope(kind="describe", source=self.name, target=agent)
        data = await self._request(self.subjects.describe(agent), envelope, agent, timeout)
        # An agent that cannot describe itself says why; that is its error, not
        # an unreadable description.
        return Description.read(reply_result(data), agent=agent)

    async def discover(
        self, *, wait: float = 0.3, expect: int | None = None, unreadable: Unreadable | None = None
    ) -> list[Heartbeat]:
        """Every running agent replica of the namespace, as its latest heartbeat.

        Args:
            wait: seconds to collect answers.
            expect: return as soon as this many replicas answered (``wait`` still bounds it).
            unreadable: told of each answer skipped because it is not a heartbeat
                this version reads (default: logged as a warning).
        """
        envelope = Envelope(kind="describe", source=self.name)
        replies = await self.transport.gather(
            self.subjects.discover, envelope.encode(), wait, expect=expect
        )
        found = []
        for data in replies:
            try:
                answer = Envelope.decode(data)
                result = Reply.model_validate(answer.payload).result
            except ValidationError:
                continue  # a foreign or broken responder must not hide the others
            try:
                found.append(Heartbeat.read(result, agent=answer.source))
            except BadMessage as exc:
                (unreadable or warn_unreadable)(exc)
        return sorted(found, key=lambda beat: (beat.agent, beat.instance))

    async def last_states(self, *, unreadable: Unreadable | None = None) -> list[Heartbeat]:
        """The last heartbeat each replica kept: of replicas running, stopped or gone silent.

        Replicas keep it in the namespace's agents bucket when what it shows
        changes and when they stop cleanly (state ``stopped``); an entry is
        dropped ``settings.agent.last_state_ttl`` seconds after its last write.

        Args:
            unreadable: told of each entry skipped because it is not a heartbeat
                this version reads (default: logged as a warning).
        """
        try:
            # Found, never made: a mistyped namespace leaves nothing behind.
            bucket = await self.transport.existing_key_value(self.subjects.agents_bucket)
            entries = [] if bucket is None else await bucket.entries()
        except TransportError as exc:
            # Not kept, or not ours to read (NATS permissions): running replicas
            # are still found by discovery, only gone ones go unlisted.
            logger.warning("cannot read the replicas' last states: %s", exc)
            return []
        found = []
        for entry in entries:
            agent = entry.key.split(".", 1)[0]
            try:
                value = json.loads(entry.value)
            except ValueError:
                value = None  # read() names it: not an object
            try:
                found.append(Heartbeat.read(value, agent=agent))
            except BadMessage as exc:
                (unreadable or warn_unreadable)(exc)
        return found

    async def roster(
        self, *, wait: float = 0.3, unreadable: Unreadable | None = None
    ) -> list[Heartbeat]:
        """Every replica people should see: running, stopped cleanly, or gone silent.

        A replica that answers discovery is listed by its answer. One that does
        not is listed by the last state it kept, if the agent has no replica
        running: ``stopped`` after a clean stop, else ``stale`` (it died without
        a word; the state is set here, no agent sends it). A silent replica of an
        agent that still runs is listed too; one that stopped cleanly is not.

        Args:
            wait: seconds to collect the answers of running replicas.
            unreadable: told of each answer or entry that cannot be read.
        """
        running = await self.discover(wait=wait, unreadable=unreadable)
        answered = {(beat.agent, beat.instance) for beat in running}
        alive = {beat.agent for beat in running}
        gone = []
        for beat in await self.last_states(unreadable=unreadable):
            if (beat.agent, beat.instance) in answered:
                continue
            if beat.state != "stopped":
                gone.append(beat.model_copy(update={"state": "stale"}))
            elif beat.agent not in alive:
                gone.append(beat)
        return sorted(running + gone, key=lambda beat: (beat.agent, beat.instance))

    async def history(
        self,
        *,
        agent: str | None = None,
        correlation_id: str | None = None,
        kinds: Iterable[str] | None = RECORD_KINDS,
        limit: int = 10_000,
        newest: bool = False,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded events from the stream, filtered on the server, in the order they happened.

        Args:
            agent: only this agent's records (topics ``<kind>.<agent>.*``).
            correlation_id: only one chain (sensor → rule → actuator → result),
                read from the chain index without scanning the stream.
            kinds: which record kinds (first topic token) to return; ``None``: every
                event, custom topics included.
            limit: at most this many records, counted after filtering.
            newest: the last ``limit`` records instead of the first.
            since: only records stored at or after this time.
        """
        kinds = None if kinds is None else tuple(kinds)
        if correlation_id:
            subjects = [self.subjects.chain(chain_token(correlation_id))]
        else:
            owner = agent or "*"
            patterns = [f"{kind}.{owner}.>" for kind in kinds] if kinds is not None else None
            subjects = [
                self.subjects.event(p) for p in patterns or [f"*.{owner}.>" if agent else ">"]
            ]
        wanted = None if kinds is None else set(kinds)
        records = []
        for subject in subjects:
            stored = await self.transport.history(subject, limit=limit, newest=newest, since=since)
            for subject_name, data in stored:
                topic = subject_name.split(".events.", 1)[-1]
                if correlation_id:
                    topic = subject_name.split(".", 4)[-1]  # scanflow.<ns>.chains.<id>.<topic>
                kind = topic.split(".", 1)[0]
                if wanted is not None and kind not in wanted:
                    continue
                envelope = Envelope.decode(data)
                if agent and envelope.source != agent:
                    continue
                record = event_record(envelope, kind, envelope.target or "")
                record["topic"] = topic
                records.append(record)
        # Agents store their events independently, so stream order can differ from
        # the order things happened in; each event's own time is the causal order.
        records.sort(key=lambda record: datetime.fromisoformat(record["time"]))
        return records[-limit:] if newest else records[:limit]

    async def _request(self, subject: str, envelope: Envelope, agent: str, timeout: float) -> bytes:
        try:
            return await self.transport.request(subject, envelope.encode(), timeout)
        except NoResponders:
            raise Unavailable(
                f"no agent '{agent}' is running in namespace '{self.subjects.namespace}'"
            ) from None
        except RequestTimeout:
            raise CallTimeout(f"agent '{agent}' did not answer within {timeout:g} s") from None

    async def wait_for_agents(self, names: Iterable[str], *, timeout: float = 10.0) -> None:
        """Wait until every named agent answers discovery."""
        wanted = set(names)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            alive = {beat.agent for beat in await self.discover(wait=0.1)}
            if wanted <= alive:
                return
            if asyncio.get_running_loop().time() > deadline:
                missing = ", ".join(sorted(wanted - alive))
                raise TimeoutError(f"agents not running after {timeout:g} s: {missing}")


def reply_result(data: bytes) -> Any:
    """The result of an agent's reply envelope, or its error raised as a :class:`CallError`."""
    return result_of(Reply.model_validate(Envelope.decode(data).payload))


def warn_unreadable(error: BadMessage) -> None:
    """The default :data:`Unreadable`: a warning in the log."""
    logger.warning("skipped an answer: %s", error)
