"""The message envelope and the values that travel in it.

Every message on the wire is one JSON :class:`Envelope`. Its ``v`` field is the
schema version: a receiver rejects versions it does not know with a
``bad_message`` error instead of guessing. The ``id`` identifies one message
(redeliveries keep it: it is the idempotency key of actuator calls), the
``correlation_id`` ties together a chain (sensor observation → rule decision
→ actuator call → result), and ``causation_id`` names the message that caused
this one.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
