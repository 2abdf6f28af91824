"""How a process logs: every line redacted, and repeated warnings rate-limited with a count.

An agent under attack (a flood of malformed calls) or in a long outage (a
reconnect warning per attempt) would otherwise write one line per event and
bury everything else. :class:`RateLimitFilter` lets the first warning of a
kind through, holds back the same kind for ``interval`` seconds, and then
lets the next one through with how many were held back:
``agent 'x' got a malformed call on ...: ... (1,234 more since 12:00:03)``.

A *kind* is one logger, level and message template, plus the template's
first argument when it is a short string (by the project's habit, the agent's
name): "malformed call" warnings of two agents are counted apart, while the
varying rest (subject, the error's text) does not make each line a new kind.

:func:`configure` is what the command line calls: basic logging, the rate
limit on the root logger's handlers, and redaction of every record (also of
third-party libraries such as nats-py and MLflow, and of handlers added later).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

from scanflow_agents import redaction

#: Seconds during which further warnings of one kind are only counted.
DEFAULT_INTERVAL = 10.0

#: Most kinds remembered at once (the oldest are forgotten beyond that), so a
#: flood of distinct templates cannot grow the filter without bound.
MAX_KINDS = 4096


class RateLimitFilter(logging.Filter):
    """Lets through at most one record per kind and ``interval`` at ``level`` and above.

    Attach it to handlers (as :func:`configure` does). One record is decided
    once, however many handlers share the filter. Records below ``level``
    (DEBUG, INFO) always pass.

    Args:
        interval: Seconds during which further records of a kind are counted, not shown.
        level: The lowest level that is limited.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if interval < 0:
            raise ValueError(f"interval must not be negative, got {interval!r}")
        self.interval = interval
        self.level = level
        self.clock = clock
        # kind -> (when the last shown record passed, how many were held back since, wall time)
        self._kinds: dict[Hashable, tuple[float, int, float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_scanflow_rate_limited", None)
        if decided is not None:
            return not decided
        passes = record.levelno < self.level or self._admit(record)
        record._scanflow_rate_limited = not passes
        return passes

    def _admit(self, record: logging.LogRecord) -> bool:
        kind = _kind(record)
        now = self.clock()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._kinds[kind] = (last[0], last[1] + 1, last[2])
                return False
            held = last[1] if last is not None else 0
            since = last[2] if last is not None else 0.0
            self._kinds.pop(kind, None)  # re-insert: the dict's order is the age
            self._kinds[kind] = (now, 0, record.created)
            while len(self._kinds) > MAX_KINDS:
                self._kinds.pop(next(iter(self._kinds)))
        if held:
            stamp = time.strftime("%H:%M:%S", time.localtime(since))
            record.msg, record.args = f"{record.getMessage()} ({held:,} more since {stamp})", None
        return True


def _kind(record: logging.LogRecord) -> Hashable:
    # The template and arguments the record was made from (redaction formats records early).
    template, args = getattr(record, "scanflow_template", (record.msg, record.args))
    first = args[0] if isinstance(args, tuple) and args else None
    who = first if isinstance(first, str) and len(first) <= 64 else None
    return (record.name, record.levelno, str(template), who)


def configure(level: str | int = "INFO", *, interval: float = DEFAULT_INTERVAL) -> None:
    """Set up this process's logging: a stderr handler, redaction, rate limiting.

    Redaction covers every record, whatever handler writes it; the rate limit
    is on the root logger's handlers at the time of the call (a handler added
    later, such as a file for a full log, gets every line).

    Args:
        level: The root logger's level.
        interval: Seconds between two warnings of the same kind (0: no limit).
    """
    logging.basicConfig(
        level=level.upper() if isinstance(level, str) else level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    root = logging.getLogger()
    if interval > 0:
        limiter = next(
            (f for h in root.handlers for f in h.filters if isinstance(f, RateLimitFilter)),
            None,
        ) or RateLimitFilter(interval)
        for handler in root.handlers:
            if limiter not in handler.filters:
                handler.addFilter(limiter)
    redaction.install()
