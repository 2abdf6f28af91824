"""The event loop a process runs on: uvloop where it is installed, asyncio otherwise.

An agent's hot path is mostly the loop's own work: reading NATS frames from
the socket, waking the task a message is for, writing the reply. uvloop does
that work in C (libuv), which makes each call cheaper for the agent (about a
fifth less CPU per call in ``bench/core.py``, so more calls per second on
one core) without any change to the code that runs on it. It stays optional
(the ``fast`` extra; not on Windows): ``auto`` uses it when it can be
imported, ``asyncio`` never does, and ``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoop = Literal["auto", "asyncio", "uvloop"]


class LoopUnavailable(RuntimeError):
    """``uvloop`` was asked for and cannot be imported."""


def chosen(loop: EventLoop) -> Literal["asyncio", "uvloop"]:
    """The loop that ``loop`` means on this machine."""
    if loop == "asyncio":
        return "asyncio"
    available = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not available:
        raise LoopUnavailable(
            "the uvloop event loop was asked for but is not installed: "
            "pip install 'scanflow-agents[fast]' (or choose the event loop 'auto' or 'asyncio')"
        )
    return "uvloop" if available else "asyncio"


def run(main: Callable[[], Coroutine[Any, Any, T]], loop: EventLoop = "auto") -> T:
    """Run the coroutine ``main()`` makes to completion on the chosen loop, as ``asyncio.run``."""
    if chosen(loop) == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())
