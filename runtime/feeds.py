"""Live events as records, and the filters people put on them (console and ``events -f``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from scanflow_agents import redaction
from scanflow_agents.messages import Envelope
from scanflow_agents.subjects import Subjects


def record_of(subjects: Subjects, subject: str, data: bytes) -> dict[str, Any] | None:
    """The flat record of an event message (as ``Client.history`` returns), or ``None``."""
    try:
        envelope = Envelope.decode(data)
    except ValidationError:
        return None  # not ours: a live view skips what it cannot read
    topic = subjects.topic_of(subject)
    record = {
        "id": envelope.id,
        "kind": topic.split(".", 1)[0],
        "agent": envelope.source,
        "name": envelope.target or "",
        "topic": topic,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "time": envelope.time.isoformat(),
        "payload": envelope.payload,
    }
    shown: dict[str, Any] = redaction.mask(record)  # what agents send is shown masked
    return shown


@dataclass(frozen=True)
class EventFilter:
    """Which events to show: by agent, kinds, correlation id, or text in the topic."""

    agent: str | None = None
    kinds: tuple[str, ...] = ()
    correlation: str | None = None
    topic: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.agent and record["agent"] != self.agent:
            return False
        if self.kinds and record["kind"] not in self.kinds:
            return False
        if self.correlation and record["correlation_id"] != self.correlation:
            return False
        return not (self.topic and self.topic not in record.get("topic", ""))

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        """``agent=checker kind=decision chain=<id> drift``: words without ``=`` match topics."""
        fields: dict[str, Any] = {}
        for word in text.split():
            key, sep, value = word.partition("=")
            if not sep:
                fields["topic"] = word
            elif key == "agent":
                fields["agent"] = value
            elif key == "kind":
                fields["kinds"] = tuple(value.split(","))
            elif key in ("chain", "correlation"):
                fields["correlation"] = value
            else:
                raise ValueError(f"unknown filter {key!r} (agent=, kind=, chain=, or a topic word)")
        return cls(**fields)

    def __str__(self) -> str:
        parts = [f"agent={self.agent}"] if self.agent else []
        parts += [f"kind={','.join(self.kinds)}"] if self.kinds else []
        parts += [f"chain={self.correlation}"] if self.correlation else []
        parts += [self.topic] if self.topic else []
        return " ".join(parts)
