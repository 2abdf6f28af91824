"""The message envelope and the values that travel in it.

Every message on the wire is one JSON :class:`Envelope`. Its ``v`` field is the
schema version: a receiver rejects versions it does not know with a
``bad_message`` error instead of guessing. The ``id`` identifies one message
(redeliveries keep it: it is the idempotency key of actuator calls), the
``correlation_id`` ties together a chain (sensor observation → rule decision
→ actuator call → result), and ``causation_id`` names the message that caused
this one.

What an agent says about itself travels as the *status messages* at the end of
this module: :class:`Heartbeat` (also the answer to discovery),
:class:`Description` and :class:`ApprovalListing`. Each carries its own major
version ``v`` (:data:`STATUS_VERSION`); a reader validates one with
:meth:`StatusMessage.read` at the edge and uses attributes from there on.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scanflow_agents.errors import BadMessage, IncompatibleVersion

SCHEMA_VERSION = 1

Kind = Literal["call", "reply", "event", "describe", "heartbeat"]


_ID_PREFIX = os.urandom(10).hex()  # 80 random bits per process...
_ID_COUNTER = itertools.count()  # ...and a counter: unique without a syscall per id


def _new_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = os.urandom(10).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_prefix)  # a forked child must not repeat our ids


def new_id() -> str:
    """A fresh message id: 32 hex digits, unique across processes.

    Ids are minted on every call, event and reply; a random process prefix
    plus a counter costs a fraction of ``uuid4()``, which reads the OS random
    source each time.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One message on the wire."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    kind: Kind
    source: str = Field(description="The sending agent, or 'client' for people and scripts.")
    target: str | None = Field(None, description="The agent (and handler) addressed, if any.")
    correlation_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    causation_id: str | None = None
    time: datetime = Field(default_factory=utcnow)
    payload: Any = None

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse bytes into an envelope; raises :class:`pydantic.ValidationError` if malformed."""
        return cls.model_validate_json(data)


class Call(BaseModel):
    """An actuator call that a decision asks for.

    ``agent=None`` means the deciding agent itself.
    """

    model_config = ConfigDict(frozen=True)

    actuator: str
    params: dict[str, Any] = Field(default_factory=dict)
    agent: str | None = None
    timeout: float | None = None


class Decision(BaseModel):
    """What a rule concluded, with its evidence. Always recorded, even when it calls nothing."""

    action: str = Field(description="A short name of what was decided, e.g. 'retrain'.")
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    calls: list[Call] = Field(default_factory=list)


class Observation(BaseModel):
    """What one sensor run returned, as rules receive it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    agent: str
    sensor: str
    value: Any
    time: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(default_factory=new_id)


class Event(BaseModel):
    """A message received on an event topic, as event sensors and rules receive it."""

    model_config = ConfigDict(frozen=True)

    id: str
    topic: str
    source: str
    payload: Any
    time: datetime
    correlation_id: str


class ErrorInfo(BaseModel):
    """The structured error of a failed call."""

    code: str
    message: str
    field: str | None = None
    details: Any = None


class Reply(BaseModel):
    """The payload of a ``reply`` envelope: a result, or an error."""

    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    unrecorded: str | None = None
    """Set when the action ran but its record is not stored yet (why); it stays queued."""


# -- what an agent says about itself ------------------------------------------------------

STATUS_VERSION = 1
"""The major version of the status messages: heartbeats, descriptions, approval listings.

Within a version fields are only ever added, and a reader ignores the ones it
does not know, so a console keeps reading agents newer than itself. Removing,
renaming or retyping a field makes a new version: readers of another version
refuse it with :class:`~scanflow_agents.errors.IncompatibleVersion`, naming
both versions and the side to upgrade, rather than show it wrongly. A message
without ``v`` is of version 1 (agents sent none before it was added).
"""


class _Part(BaseModel):
    # Extras are forbidden where a model is built, so a misspelt field fails in the
    # agent that sends it; StatusMessage.read ignores them where one is received.
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True
    )


class StatusMessage(_Part):
    """A top-level status message: what it is, of which major version."""

    what: ClassVar[str] = "status message"

    v: int = Field(STATUS_VERSION, description="The major version of the message (absent: 1).")

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        # read() refuses other versions with a clearer message; this catches the rest.
        if v != STATUS_VERSION:
            raise ValueError(f"version {v} is not {STATUS_VERSION}")
        return v

    @classmethod
    def read(cls, value: Any, *, agent: str) -> Self:
        """Validate what ``agent`` sent; fields this version does not know are ignored.

        Args:
            value: the decoded JSON (a reply's ``result``, an envelope's ``payload``).
            agent: who sent it, for the error.

        Raises:
            IncompatibleVersion: it is of another major version.
            BadMessage: it is not such a message; the first problem is named.
        """
        if not isinstance(value, Mapping):
            error: BadMessage = BadMessage(
                f"agent '{agent}' sent an unreadable {cls.what}: "
                f"{type(value).__name__}, not an object"
            )
        elif (theirs := value.get("v", STATUS_VERSION)) != STATUS_VERSION and _whole(theirs):
            error = IncompatibleVersion(
                _incompatible(agent, cls.what, theirs),
                details={"theirs": theirs, "ours": STATUS_VERSION},
            )
        else:
            try:
                return cls.model_validate(value, extra="ignore")
            except ValidationError as exc:
                error = BadMessage(f"agent '{agent}' sent an unreadable {cls.what}: {_first(exc)}")
        error.agent = agent
        raise error


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _incompatible(agent: str, kind: str, theirs: int) -> str:
    said = f"agent '{agent}' sends {kind} version {theirs}, this side reads {STATUS_VERSION}"
    if theirs > STATUS_VERSION:
        where = "scanflow-agents here (the console, CLI or calling agent)"
        return f"{said}: upgrade {where} to a release that reads {kind} version {theirs}"
    return (
        f"{said}: upgrade agent '{agent}' to a release that sends {kind} version {STATUS_VERSION}"
    )


def _first(exc: ValidationError) -> str:
    # One line: the first problem and where; never the input (it may be large, or secret).
    errors = exc.errors(include_input=False, include_url=False)
    where = ".".join(str(part) for part in errors[0]["loc"]) or "message"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {errors[0]['msg']}{more}"


class Heartbeat(StatusMessage):
    """The short liveness record of one agent replica.

    Sent every ``settings.agent.heartbeat_interval`` seconds on
    ``scanflow.<ns>.heartbeat.<agent>``, once more with ``state`` ``stopped``
    when the replica stops, and as the answer to discovery.
    """

    what: ClassVar[str] = "heartbeat"

    agent: str = Field(description="The agent's name.")
    agent_class: str = Field(alias="class", description="The agent's Python class.")
    namespace: str = Field(description="The namespace it runs in.")
    instance: str = Field(description="This replica: random per start of the agent.")
    state: str = Field(
        description="`created`, `starting`, `running`, `paused`, `stopping` or `stopped` "
        "(the last heartbeat of a replica that stops cleanly)."
    )
    ready: bool = Field(description="False once one of its background loops died.")
    time: datetime = Field(description="When it was sent.")
    uptime: float = Field(description="Seconds since the replica started.")
    events: dict[str, int] = Field(description="Records sent since the start, by kind.")
    backlog: int = Field(description="Records waiting to be stored in the stream.")
    unstored: str | None = Field(
        None,
        description="Why records cannot be stored now (the stream unreachable or electing a "
        "leader): its actuators refuse meanwhile, or act unrecorded (settings.agent.unrecorded).",
    )
    leader: bool = Field(description="Whether this replica holds the lease (runs sensors, rules).")
    leader_instance: str | None = Field(None, description="The replica that leads, if known.")
    lease_token: int | None = Field(None, description="The fencing token, while leading.")
    dry_run: bool = Field(description="Whether its actuators validate and record, but do not act.")
    frozen: bool = Field(False, description="Whether the namespace's actuators are frozen.")
    shadow_of: str | None = Field(
        None,
        description="The live agent this replica shadows (settings.agent.shadow): it decides "
        "on that agent's inputs and acts on nothing. Absent for a live agent.",
    )
    paused_sensors: tuple[str, ...] = Field((), description="Sensors an operator paused.")
    approvals: int = Field(description="Decisions this replica holds for a person.")


class LastRun(_Part):
    """A sensor's last run: when, and what it returned or why it failed."""

    time: datetime = Field(description="When it ended.")
    ok: bool = Field(description="Whether it returned rather than raised.")
    value: Any = Field(None, description="What it returned (masked).")
    error: str | None = Field(None, description="Why it failed (masked).")


class SensorStatus(_Part):
    """One sensor: its trigger, its next scheduled run and its last one."""

    id: str = Field(description="The sensor's id.")
    description: str = Field(description="Its docstring's first line.")
    trigger: str = Field(description="What runs it: `every 30s`, a cron, a date, an event topic.")
    next_run: datetime | None = Field(None, description="When the schedule runs it next.")
    runs: int = Field(description="Runs since the start.")
    failures: int = Field(description="Runs that failed.")
    skipped: int = Field(description="Runs skipped (paused).")
    last: LastRun | None = Field(None, description="Its last run (below).")


class RuleStatus(_Part):
    """One rule: what it watches and what it decided last."""

    id: str = Field(description="The rule's id.")
    description: str = Field(description="Its docstring's first line.")
    sensors: tuple[str, ...] = Field(description="The sensors it watches (none: all).")
    topics: tuple[str, ...] = Field(description="The event topics it watches.")
    runs: int = Field(description="Runs since the start.")
    decisions: int = Field(description="Runs that decided something.")
    failures: int = Field(description="Runs that failed.")
    last_decision: Decision | None = Field(
        None, description="Its last decision: `action`, `reason`, `evidence`, `calls`."
    )


class Parameter(NamedTuple):
    """One parameter of an actuator, as its JSON schema gives it."""

    name: str
    type: str
    required: bool
    description: str
    default: Any


class ActuatorStatus(_Part):
    """One actuator: its parameters' JSON schema, its guards, how often it ran."""

    id: str = Field(description="The actuator's id.")
    description: str = Field(description="Its docstring's first line.")
    params: dict[str, Any] = Field(
        description="The JSON schema of its parameters, from its signature and docstring."
    )
    cooldown: float = Field(description="Seconds after a success during which calls are refused.")
    timeout: float | None = Field(None, description="Seconds one attempt may take.")
    rate: str | None = Field(None, description="Its rate limit, `calls/seconds`.")
    idempotent: bool = Field(description="Whether a call cut short is run again, not in doubt.")
    read_only: bool = Field(description="Whether it only reads (runs even paused or dry-run).")
    executions: int = Field(description="Calls it ran on this replica since the start.")

    def parameters(self) -> list[Parameter]:
        """The parameters of :attr:`params`: name, type, required, description, default."""
        required = set(self.params.get("required", []))
        properties: dict[str, Any] = self.params.get("properties", {})
        return [
            Parameter(
                name,
                _type_name(prop),
                name in required,
                str(prop.get("description", "")),
                prop.get("default"),
            )
            for name, prop in properties.items()
        ]


def _type_name(prop: dict[str, Any]) -> str:
    """A short type of a JSON schema property: ``integer``, ``string|null``, ``array``..."""
    if "type" in prop:
        return str(prop["type"])
    options = prop.get("anyOf") or prop.get("oneOf") or []
    names = [str(o.get("type", o.get("$ref", "?").rsplit("/", 1)[-1])) for o in options]
    return "|".join(names) or "any"


class ConsumerStatus(_Part):
    """The durable consumer of one topic pattern and what it handled or skipped."""

    durable: str = Field(description="The durable consumer's name.")
    handled: int = Field(description="Events its sensors and rules handled.")
    duplicates: int = Field(description="Events skipped as already handled.")
    expired: int = Field(description="Events skipped as older than `agent.events_max_age`.")
    malformed: int = Field(description="Events skipped as unreadable.")


class Description(Heartbeat):
    """The full account of one agent replica: its heartbeat's fields, and its handlers.

    The answer on ``scanflow.<ns>.<agent>.describe``. What handlers returned
    or raised is masked by the agent before it is sent.
    """

    what: ClassVar[str] = "description"

    sensors: tuple[SensorStatus, ...] = Field(description="Its sensors (below).")
    rules: tuple[RuleStatus, ...] = Field(description="Its rules (below).")
    actuators: tuple[ActuatorStatus, ...] = Field(description="Its actuators (below).")
    consumers: dict[str, ConsumerStatus] = Field(
        default_factory=dict,
        description="Its durable consumers by topic pattern (below), while this replica leads.",
    )

    def actuator(self, actuator_id: str) -> ActuatorStatus | None:
        """The actuator of that id, if the agent has one."""
        return next((a for a in self.actuators if a.id == actuator_id), None)


class PendingApproval(_Part):
    """A decision held for a person to approve or reject."""

    id: str = Field(description="What people type to approve or reject it.")
    agent: str = Field(description="The agent that holds it.")
    kind: str = Field(description="What waits: `deploy`, `retrain`, `scale`...")
    summary: str = Field(description="One line: what approving does, and why.")
    details: dict[str, Any] = Field(default_factory=dict, description="The evidence.")
    correlation_id: str = Field(description="The chain of the decision that asked for it.")
    created: datetime = Field(description="When it was held.")
    waiting_s: float = Field(description="Seconds it has waited.")
    expires_in_s: float | None = Field(
        None, description="Seconds until the agent decides by itself (none: it waits)."
    )


class ApprovalListing(StatusMessage):
    """The approvals one replica holds: the answer to the ``approvals`` control op."""

    what: ClassVar[str] = "approval listing"

    instance: str = Field(description="The replica that answered.")
    approvals: tuple[PendingApproval, ...] = Field(description="What it holds (below).")


class KeptApproval(StatusMessage):
    """An approval as the namespace's approvals bucket keeps it, under ``<agent>.<id>``.

    Written by the replica that holds it, so that a restarted replica of the
    agent (or another one) lists and decides it once that holder is gone.
    ``approve`` and ``reject`` are the actuator calls that carry a decision
    out when it was held with calls; held with code (a function), it can be
    rejected after its holder is gone, not carried out.
    """

    what: ClassVar[str] = "kept approval"

    id: str = Field(description="What people type to approve or reject it.")
    agent: str = Field(description="The agent it belongs to.")
    kind: str = Field(description="What waits: `deploy`, `retrain`, `scale`...")
    summary: str = Field(description="One line: what approving does, and why.")
    details: dict[str, Any] = Field(default_factory=dict, description="The evidence.")
    correlation_id: str = Field(description="The chain of the decision that asked for it.")
    created: datetime = Field(description="When it was held.")
    timeout: float | None = Field(None, description="Seconds after which its policy applies.")
    on_timeout: str = Field("reject", description="`reject`, `approve` or `hold`.")
    overdue: bool = Field(False, description="Its timeout passed and its policy is to hold it.")
    holder: str | None = Field(
        None, description="The replica that holds it; none once that replica stopped cleanly."
    )
    approve: Call | None = Field(None, description="The call that carries an approval out.")
    reject: Call | None = Field(None, description="The call that undoes its reservation.")


class Freeze(StatusMessage):
    """The namespace's freeze: while on, every actuator of every agent refuses to act.

    An operator's ``scanflow freeze`` keeps it in the namespace's switches
    bucket (so that a replica starting later starts frozen) and sends it to
    every running agent on ``scanflow.<ns>.control.freeze``.
    """

    what: ClassVar[str] = "freeze"

    on: bool = Field(description="Whether actions are refused.")
    by: str = Field(description="Who set it (the operator's client name).")
    at: datetime = Field(description="When it was set.")
    reason: str | None = Field(None, description="Why, as the operator said.")
