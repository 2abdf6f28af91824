"""Policy replay: what an agent, changed or not, would have decided on recorded history.

:func:`replay` runs an agent's rules on the observations and events its
recorded history holds, in the order they happened, and compares what they
decide with what was decided then:

- **Sensors do not run.** Each recorded observation of the agent is given to the
  rules that watch its sensor, with its recorded id, chain and time; events on
  the topics a rule watches are given to it the same way. A sensor whose
  observations are not recorded (``publish=False``) cannot be replayed: the
  result names it, with the rules that watch it.
- **Nothing is sent.** A decision's calls are answered from the actions
  recorded then: a call the agent made then has the same id now (ids come from
  the agent, the rule, the cause and the call's place), so it gets the recorded
  result, or the recorded error. A call not made then is *new*: it gets the
  answer ``answers`` gives for ``agent.actuator`` (default ``None``) and is listed.
- **The agent starts as in a runtime.** Its ``on_start`` runs first (agents
  read their settings and set up their state there) and its ``on_stop`` last.
- **Time is the recorded time.** While a message is handled,
  ``scanflow_agents._kit.clocks`` reads the moment it was recorded, so
  cooldowns measured with it hold as they did.
- **After the first different action, the future is unknown.** Once a replayed
  decision would have called an actuator differently (a scale, a retraining),
  the world would have moved otherwise: every later row is marked
  ``counterfactual``, since the observations that follow are those of the
  world that was, not of the one the changed policy would have made.

The result pairs decisions on (rule, cause) as :mod:`scanflow_agents.diffs`
does for shadows: ``recorded`` is what was decided then, ``replayed`` what the
agent decides now. An agent replayed unchanged on its own history decides the
same everywhere; :func:`check_determinism` says where it does not, and what in
the rule's code may be why (the wall clock, randomness).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from scanflow_agents import chains
from scanflow_agents._core.reacting import Reactor
from scanflow_agents._core.recording import event_record
from scanflow_agents._kit import clocks
from scanflow_agents.agents import Agent
from scanflow_agents.diffs import DecisionDiff, Difference, diff_decisions
from scanflow_agents.errors import CallError, ErrorCode
from scanflow_agents.messages import Envelope, Event, Observation
from scanflow_agents.transports import MemoryBroker, MemoryTransport
from scanflow_agents.transports.base import KeyValue, subject_matches

if TYPE_CHECKING:
    from scanflow_agents._core.ports import Call
    from scanflow_agents._core.running import AgentRuntime
    from scanflow_agents.knowledge import KnowledgeClient

#: What a row says, in replay's words: ``removed`` was decided then and not now.
REPLAY_STATUS = {
    "same": "same",
    "changed": "changed",
    "only_live": "removed",
    "only_shadow": "added",
}


@dataclass(frozen=True)
class NewCall:
    """A call the replayed agent made that was not made then: answered with a stub."""

    agent: str
    actuator: str
    params: Mapping[str, Any]
    call_id: str | None
    time: str


@dataclass(frozen=True)
class Row:
    """One cause's decisions, recorded and replayed, and whether the past still holds."""

    difference: Difference
    counterfactual: bool

    @property
    def status(self) -> str:
        return REPLAY_STATUS[self.difference.status]

    def as_json(self) -> dict[str, Any]:
        found = self.difference.as_json()
        return {
            "status": self.status,
            "counterfactual": self.counterfactual,
            "rule": found["rule"],
            "cause": found["cause"],
            "trigger": found["trigger"],
            "time": found["time"],
            "recorded": found["live"],
            "replayed": found["shadow"],
        }


@dataclass
class Replay:
    """What a replay found: the rows, the new calls, and what could not be replayed."""

    agent: str
    rows: list[Row]
    new_calls: list[NewCall]
    unreplayable: dict[str, list[str]]  # sensor id -> the rules that watch it
    observations: int  # recorded observations and events given to rules
    counterfactual_from: str | None  # time of the first decision that acted otherwise
    failures: dict[str, int] = field(default_factory=dict)  # rule id -> runs that raised
    emitted: list[tuple[str, Any]] = field(default_factory=list)  # (topic, payload), kept

    @property
    def differences(self) -> list[Row]:
        return [row for row in self.rows if row.status != "same"]

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(("same", "changed", "removed", "added"), 0)
        for row in self.rows:
            found[row.status] += 1
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "counts": self.counts(),
            "observations": self.observations,
            "counterfactual_from": self.counterfactual_from,
            "unreplayable": self.unreplayable,
            "failures": self.failures,
            "emitted": len(self.emitted),
            "new_calls": [
                {
                    "agent": call.agent,
                    "actuator": call.actuator,
                    "params": dict(call.params),
                    "call_id": call.call_id,
                    "time": call.time,
                }
                for call in self.new_calls
            ],
            "rows": [row.as_json() for row in self.rows],
        }


class _Stage:
    """What an agent's own code reaches through its runtime, while it is replayed.

    Emits are kept (``Replay.emitted``), not published; a call made from a
    rule's own code (not a decision's) goes through the replay's call port;
    key-value buckets are in memory, empty at the start. MLflow is the
    read-only client the replay was given, if any; approvals are not given. A
    rule that needs what is not given fails in the replay, and the result
    counts it (``Replay.failures``).
    """

    def __init__(
        self,
        agent: Agent,
        call: Call,
        emitted: list[tuple[str, Any]],
        knowledge: KnowledgeClient | None,
    ) -> None:
        self._agent, self._call, self._emitted = agent, call, emitted
        self._knowledge = knowledge
        self._buckets = MemoryTransport(MemoryBroker())

    async def call(
        self,
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        dry_run: bool = False,
    ) -> Any:
        return await self._call(agent, actuator, params, timeout=timeout)

    async def emit(self, topic: str, payload: Any) -> None:
        self._emitted.append((topic, payload))

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        return await self._buckets.key_value(bucket, ttl=ttl)

    def knowledge_client(self) -> KnowledgeClient:
        if self._knowledge is None:
            raise RuntimeError(
                f"agent {self._agent.name!r} is replayed without MLflow: give the replay "
                "a read-only client (scanflow replay --read-mlflow) to let its rules read it"
            )
        return self._knowledge

    @property
    def approvals(self) -> Any:
        raise RuntimeError(f"agent {self._agent.name!r} is replayed: it holds no approvals")


@dataclass
class _Moment:
    """The recorded time being replayed (ISO text), shared by the replay's ports."""

    time: str = ""


@dataclass
class _Recorded:
    """The history, sorted out: what to give the rules, what was decided, what was answered."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by call id
    # The agent's own calls by (chain, agent, actuator, params), in the order made.
    own_calls: dict[tuple[str, str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # call ids whose action was given

    def answer(self, call_id: str | None, owner: str, actuator: str, params: Any) -> Any:
        """The action that answered a call then, or ``None`` for a call not made then.

        A decision's call has the same id now as then (it is derived from the
        rule and its cause). A call from a rule's own code had a random id:
        it is found by its chain, target and parameters, the first not yet given.
        """
        if call_id is not None:
            action = self.actions.get(call_id)
        else:
            key = (chains.current().correlation_id, owner, actuator, _canonical(params))
            waiting = self.own_calls.get(key, [])
            action = next((a for a in waiting if _call_id(a) not in self.answered), None)
        if action is not None:
            self.answered.add(_call_id(action))
        return action


def _sort(agent: Agent, records: Iterable[Mapping[str, Any]]) -> _Recorded:
    patterns = {topic for spec in agent.rules.values() for topic in spec.topics}
    found = _Recorded()
    for record in records:
        kind, source = record.get("kind"), record.get("agent")
        if kind == "observation" and source == agent.name:
            found.inputs.append(dict(record))
        elif kind == "decision" and source == agent.name:
            if not (record.get("payload") or {}).get("shadow"):
                found.decisions.append(dict(record))
        elif kind == "action":
            payload = record.get("payload") or {}
            if call_id := payload.get("call_id"):
                found.actions.setdefault(str(call_id), dict(record))
            if payload.get("caller") == agent.name:
                params = _canonical(payload.get("params") or {})
                key = (
                    str(record.get("correlation_id")),
                    str(source),
                    str(record.get("name")),
                    params,
                )
                found.own_calls.setdefault(key, []).append(dict(record))
        elif any(subject_matches(p, str(record.get("topic", ""))) for p in patterns):
            found.inputs.append(dict(record))
    found.inputs.sort(key=_moment)
    return found


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _call_id(action: Mapping[str, Any]) -> str:
    return str((action.get("payload") or {}).get("call_id"))


def _moment(record: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(record["time"])).timestamp()


async def replay(
    agent: Agent,
    records: Iterable[Mapping[str, Any]],
    *,
    answers: Mapping[str, Any] | Callable[[str, str, dict[str, Any]], Any] | None = None,
    knowledge: KnowledgeClient | None = None,
) -> Replay:
    """Run ``agent``'s rules on recorded history and compare their decisions with the record.

    Args:
        agent: the agent to replay (its name selects its records: a changed
            version keeps the name of the one that ran).
        records: recorded events as ``Client.history(kinds=None)`` or
            ``scanflow history --export`` give them: the agent's observations and
            decisions, the actions that answered its calls, and the events on
            the topics its rules watch.
        answers: what a new call returns: by ``"agent.actuator"``, or a function
            of (agent, actuator, params). Default ``None``.
        knowledge: the MLflow the agent reads (``agent.knowledge``), made with
            ``read_only=True`` so that nothing the replay does is written. It is
            MLflow as it is now, not as it was then: a rule that reads runs
            logged since decides on them. Without it, a rule that reads MLflow
            fails in the replay, and the result counts it.
    """
    if knowledge is not None and not knowledge.read_only:
        raise ValueError(
            "a replay writes nothing: give it KnowledgeClient(settings, read_only=True)"
        )
    recorded, own = _sort(agent, records), agent.name
    replayed: list[dict[str, Any]] = []
    new_calls: list[NewCall] = []
    moment = _Moment()

    async def record(
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        envelope = Envelope(
            kind="event",
            source=own,
            correlation_id=correlation_id,
            causation_id=causation_id,
            time=datetime.fromisoformat(moment.time),
            payload=payload,
            **({"id": event_id} if event_id else {}),
        )
        if kind == "decision":
            replayed.append(event_record(envelope, kind, name))
        return envelope

    async def call(
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any:
        owner = agent or own
        action = recorded.answer(call_id, owner, actuator, params)
        if action is None:
            new_calls.append(NewCall(owner, actuator, params, call_id, moment.time))
            if callable(answers):
                return answers(owner, actuator, params)
            return (answers or {}).get(f"{owner}.{actuator}")
        clocks.advance(_moment(action))  # it took as long as it took then
        payload = action.get("payload") or {}
        if payload.get("ok", True):
            return payload.get("result")
        error = payload.get("error") or {}
        raise CallError.from_code(
            str(error.get("code", ErrorCode.HANDLER_FAILED.value)),
            str(error.get("message", "failed when recorded")),
        )

    reactor = Reactor(agent, handlers=agent.settings.agent.handlers, record=record, call=call)
    emitted: list[tuple[str, Any]] = []
    stage = _Stage(agent, call, emitted, knowledge)
    # The agent's own calls, emits and buckets go to the stage (see its docstring).
    agent.attach_runtime(cast("AgentRuntime", stage))
    try:
        # Started as it starts in a runtime: agents read their settings and set up
        # their state in on_start (what it opens, it opens for real).
        await agent.on_start()
        try:
            fed = await _feed(agent, reactor, recorded, moment)
        finally:
            await agent.on_stop()
    finally:
        agent.detach_runtime(cast("AgentRuntime", stage))
    diff = diff_decisions(recorded.decisions, replayed)
    result = _result(agent, diff, new_calls, fed)
    result.failures = {rid: s.failures for rid, s in reactor.rule_states.items() if s.failures}
    result.emitted = emitted
    return result


async def _feed(agent: Agent, reactor: Reactor, recorded: _Recorded, moment: _Moment) -> int:
    """Give the recorded observations and events to the rules; how many were given."""
    watched = {sensor for spec in agent.rules.values() for sensor in agent.sensors
               if spec.watches_sensor(sensor)}  # fmt: skip
    for message in recorded.inputs:
        moment.time = str(message["time"])
        with clocks.at(_moment(message)):
            # The agent's own observations go to the rules on their sensor; any other
            # record here (another agent's observation included) is an event.
            if message.get("kind") == "observation" and message.get("agent") == agent.name:
                sensor = agent.sensors.get(str(message.get("name")))
                if sensor is None or sensor.id not in watched:
                    continue  # a sensor the changed agent has no more, or no rule reads
                observation = Observation(
                    id=str(message["id"]),
                    agent=agent.name,
                    sensor=sensor.id,
                    value=(message.get("payload") or {}).get("value"),
                    time=datetime.fromisoformat(moment.time),
                    correlation_id=str(message["correlation_id"]),
                )
                await reactor.react(observation, sensor)
            else:
                event = Event(
                    id=str(message["id"]),
                    topic=str(message.get("topic")),
                    source=str(message.get("agent")),
                    payload=message.get("payload"),
                    time=datetime.fromisoformat(moment.time),
                    correlation_id=str(message["correlation_id"]),
                )
                for spec in agent.rules.values():
                    if any(subject_matches(p, event.topic) for p in spec.topics):
                        await reactor.run_rule(spec, event, event.correlation_id, event.id)
    return len(recorded.inputs)


def _result(agent: Agent, diff: DecisionDiff, new_calls: list[NewCall], fed: int) -> Replay:
    rows, since = [], None
    for difference in diff.rows:
        if since is None and _acts_otherwise(difference):
            since = difference.time
            rows.append(Row(difference, counterfactual=False))
            continue
        rows.append(Row(difference, counterfactual=since is not None))
    unreplayable = {
        sensor.id: [rule.id for rule in agent.rules.values() if rule.watches_sensor(sensor.id)]
        for sensor in agent.sensors.values()
        if not sensor.publish
        and any(rule.watches_sensor(sensor.id) for rule in agent.rules.values())
    }
    return Replay(agent.name, rows, new_calls, unreplayable, fed, since)


def _acts_otherwise(difference: Difference) -> bool:
    """Whether the replayed decision changes what was done (its calls), not only its words."""
    before = difference.live.calls if difference.live else ()
    after = difference.shadow.calls if difference.shadow else ()
    return before != after


# What in a rule's source makes its decisions depend on more than its input.
_NONDETERMINISM = (
    (
        re.compile(r"\btime\.time\(|\btime\.monotonic\(|\bdatetime\.now\(|\butcnow\("),
        "the wall clock",
    ),
    (re.compile(r"\brandom\.|\.random\(|default_rng\(|uuid4\("), "randomness"),
)


@dataclass(frozen=True)
class Nondeterministic:
    """A rule that decided otherwise than its own record on the same input."""

    rule: str
    cause: str
    time: str
    suspects: tuple[str, ...]  # what its source reads: the wall clock, randomness

    def __str__(self) -> str:
        why = (
            " and ".join(self.suspects)
            or "state outside its input (nothing in its code says which)"
        )
        return (
            f"rule '{self.rule}' decided otherwise on {self.cause} at {self.time}: it reads {why}"
        )


def check_determinism(agent: Agent, result: Replay) -> list[Nondeterministic]:
    """Where an agent replayed unchanged on its own history decided otherwise, and why.

    ``result`` must be the replay of the very agent that recorded the history:
    any difference then comes from something besides the rule's input and the
    agent's state. The first difference of each rule is named, with what its
    source reads that would explain it.
    """
    found: dict[str, Nondeterministic] = {}
    for row in result.differences:
        rule = row.difference.rule
        if rule in found:
            continue
        spec = agent.rules.get(rule)
        found[rule] = Nondeterministic(
            rule, row.difference.cause, row.difference.time, _suspects(spec.fn) if spec else ()
        )
    return list(found.values())


def _suspects(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return ()
    return tuple(name for pattern, name in _NONDETERMINISM if pattern.search(source))


__all__ = [
    "REPLAY_STATUS",
    "NewCall",
    "Nondeterministic",
    "Replay",
    "Row",
    "check_determinism",
    "replay",
]
