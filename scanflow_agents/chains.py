"""The chain a handler runs in: which story (correlation id) and which message caused it.

Every sensor run, rule run and actuator call runs inside a chain. The core
opens one around each handler; anything the handler does (calls to other
agents, events it emits) is sent in that chain, so the audit trail reads back
as one story: observation → decision → action → result.

Agents rarely need this module: ``self.call`` and ``self.emit`` use the
current chain already, and ``self.message_id`` is its causation id. It is for
work that leaves the handler and comes back later in another task, such as a
batch run whose end is reported by a platform callback::

    chain = chains.current()          # in the actuator that starts the run
    ...
    with chains.within(*chain):       # in the callback, later
        await self.emit("run.done", status)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import NamedTuple

from scanflow_agents.messages import new_id

__all__ = ["Chain", "active", "current", "within"]


class Chain(NamedTuple):
    """One link of a chain: the story it belongs to and the message that caused it.

    Attributes:
        correlation_id: shared by every message of one story.
        causation_id: the id of the message being handled (``None`` at a story's start).
    """

    correlation_id: str
    causation_id: str | None


_current: ContextVar[Chain | None] = ContextVar("scanflow_chain", default=None)


def current() -> Chain:
    """The chain of the handler running now; outside any handler, a new story.

    Outside a handler each call returns a fresh correlation id: two unrelated
    calls from a script are two stories, not one.
    """
    return _current.get() or Chain(new_id(), None)


def active() -> Chain | None:
    """The chain of the handler running now, or ``None`` outside any handler."""
    return _current.get()


@contextlib.contextmanager
def within(correlation_id: str, causation_id: str | None = None) -> Iterator[Chain]:
    """Run the enclosed code in the chain ``(correlation_id, causation_id)``.

    The chain is a context variable: tasks started inside inherit it, and it
    is restored on exit even when the enclosed code raises.
    """
    chain = Chain(correlation_id, causation_id)
    token = _current.set(chain)
    try:
        yield chain
    finally:
        _current.reset(token)
