"""When a sensor runs: every N seconds, on a cron expression, once at a date, or on an event.

Triggers are validated when they are built, that is at class creation for a
decorated sensor: a bad cron string or a date without a time zone fails there,
not hours later when the scheduler first looks at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from scanflow_agents.errors import DefinitionError

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Interval:
    """Run every ``seconds`` seconds; the first run comes one interval after start."""

    seconds: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise DefinitionError(f"interval must be positive seconds, got {self.seconds!r}")
        if self.jitter < 0:
            raise DefinitionError(f"jitter must not be negative, got {self.jitter!r}")

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True)
class Cron:
    """Run on a cron expression: five fields (minute first) or six (second first)."""

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        # Building the APScheduler trigger is the validation: it parses every field.
        try:
            self.to_apscheduler()
        except (ValueError, KeyError) as exc:
            raise DefinitionError(f"bad cron expression {self.expression!r}: {exc}") from None

    def to_apscheduler(self) -> object:
        from apscheduler.triggers.cron import CronTrigger

        fields = self.expression.split()
        if len(fields) == 5:
            return CronTrigger.from_crontab(self.expression, timezone=self.timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=self.timezone,
            )
        raise ValueError(f"expected 5 or 6 fields, got {len(fields)}")

    def __str__(self) -> str:
        return f"cron '{self.expression}' ({self.timezone})"


@dataclass(frozen=True)
class At:
    """Run once at a moment (time-zone aware)."""

    when: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.when, datetime):
            raise DefinitionError(f"at= needs a datetime, got {type(self.when).__name__}")
        if self.when.tzinfo is None or self.when.tzinfo.utcoffset(self.when) is None:
            raise DefinitionError(f"at={self.when.isoformat()} needs a time zone")

    def __str__(self) -> str:
        return f"at {self.when.isoformat()}"


@dataclass(frozen=True)
class OnEvent:
    """Run when a message arrives on an event topic (NATS wildcards ``*`` and ``>`` allowed)."""

    topic: str

    def __post_init__(self) -> None:
        validate_topic(self.topic)

    def __str__(self) -> str:
        return f"on '{self.topic}'"


Trigger = Interval | Cron | At | OnEvent


def validate_topic(topic: str) -> str:
    """Check an event topic or topic pattern, e.g. ``serving.digits.*`` or ``finding.>``."""
    tokens = topic.split(".") if isinstance(topic, str) else [""]
    if not all(
        _TOKEN.match(token) or token == "*" or (token == ">" and i == len(tokens) - 1)
        for i, token in enumerate(tokens)
    ):
        raise DefinitionError(
            f"bad event topic {topic!r}: use dot-separated tokens of letters, digits, '-' "
            "or '_', with '*' for one token and a final '>' for the rest"
        )
    return topic


def make_trigger(
    *,
    every: float | timedelta | None = None,
    cron: str | None = None,
    at: datetime | None = None,
    on: str | None = None,
) -> Trigger:
    """Build the one trigger a sensor declares; exactly one keyword must be given."""
    given = {
        k: v for k, v in {"every": every, "cron": cron, "at": at, "on": on}.items() if v is not None
    }
    if len(given) != 1:
        names = ", ".join(sorted(given)) or "none"
        raise DefinitionError(
            f"a sensor needs exactly one trigger of every=, cron=, at=, on= (got {names})"
        )
    if every is not None:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        return Interval(float(seconds))
    if cron is not None:
        return Cron(cron)
    if at is not None:
        return At(at)
    assert on is not None
    return OnEvent(on)
