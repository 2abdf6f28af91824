"""What sensors, rules and actuators share: their options and the spec base class.

A spec is a frozen value: the handler function plus everything the runtime
needs to run it. Decorators build specs and attach them to functions; agents
collect them. The same specs can be built by hand and given to an agent, which
is how tests, generated and YAML-configured agents do without decorators.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from scanflow_agents.errors import DefinitionError

ErrorMode = Literal["temporary", "permanent", "ignore"]
"""How a handler's unexpected exception is treated.

- ``temporary``: retried like :class:`~scanflow_agents.TemporaryError` while retries last;
- ``permanent``: the run fails at once, like :class:`~scanflow_agents.PermanentError`;
- ``ignore``: logged at debug level and counted as a success with no result.
"""

ERROR_MODES: tuple[str, ...] = ("temporary", "permanent", "ignore")

SPEC_ATTRIBUTE = "__scanflow_spec__"

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

HandlerFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class HandlerOptions:
    """The knobs every handler has, with one meaning everywhere.

    ``None`` means "the agent's default" from :class:`~scanflow_agents.settings.HandlerSettings`.

    Attributes:
        timeout: seconds one attempt may take before it is cancelled.
        retries: extra attempts after a temporary failure.
        backoff: seconds before the first retry; doubled at each further retry.
        errors: how an unexpected exception is treated (see :data:`ErrorMode`).
    """

    timeout: float | None = None
    retries: int | None = None
    backoff: float | None = None
    errors: ErrorMode = "temporary"

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise DefinitionError(f"timeout must be positive seconds, got {self.timeout!r}")
        if self.retries is not None and (not isinstance(self.retries, int) or self.retries < 0):
            raise DefinitionError(f"retries must be a non-negative integer, got {self.retries!r}")
        if self.backoff is not None and self.backoff < 0:
            raise DefinitionError(f"backoff must not be negative, got {self.backoff!r}")
        if self.errors not in ERROR_MODES:
            raise DefinitionError(f"errors must be one of {ERROR_MODES}, got {self.errors!r}")


@dataclass(frozen=True, kw_only=True)
class HandlerSpec:
    """The base of sensor, rule and actuator specs.

    Attributes:
        id: the handler's name within its agent; subclasses override a parent's handler by id.
        fn: the async function; called with the agent instance first, like a method.
        options: timeout, retries, backoff and error mode.
    """

    kind: ClassVar[str] = "handler"

    id: str
    fn: HandlerFn
    options: HandlerOptions = field(default_factory=HandlerOptions)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise DefinitionError(
                f"{self.kind} id {self.id!r} must start with a letter or '_' and contain "
                "only letters, digits, '_' and '-'"
            )
        if not inspect.iscoroutinefunction(self.fn):
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            raise DefinitionError(
                f"{self.kind} '{self.id}' ({name}) must be an 'async def' function; "
                "run blocking work inside it with asyncio.to_thread()"
            )
        if not self.description:
            object.__setattr__(self, "description", first_line(self.fn.__doc__))

    def __str__(self) -> str:
        return f"{self.kind} '{self.id}'"


_ARGS = ("Args", "Arguments", "Parameters")
_SECTIONS = (*_ARGS, "Returns", "Return", "Raises", "Yields", "Examples?", "Notes?", "Attributes")
_SECTION = re.compile(rf"^\s*({'|'.join(_SECTIONS)})\s*:\s*$")
_ARG_LINE = re.compile(r"^(\s*)(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$")


def first_line(doc: str | None) -> str:
    """The summary line of a docstring; empty if it starts with a section such as ``Args:``."""
    if not doc:
        return ""
    line = inspect.cleandoc(doc).split("\n", 1)[0]
    return "" if _SECTION.match(line) else line


def arg_docs(doc: str | None) -> dict[str, str]:
    """The parameter descriptions of a Google-style ``Args:`` section, by name.

    The section may be the docstring's first line; a description may go on over
    more-indented lines, which are joined with spaces.
    """
    if not doc:
        return {}
    # Indentation is read from the raw lines: cleandoc() treats the first line
    # apart, which would flatten an "Args:" section that starts the docstring.
    lines = doc.expandtabs().splitlines()
    docs: dict[str, str] = {}
    section_indent: int | None = None  # set while inside the Args section
    entry_indent: int | None = None
    current: str | None = None
    for raw in lines:
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        header = _SECTION.match(raw)
        if header:
            section_indent = indent if header.group(1) in _ARGS else None
            entry_indent = current = None
            continue
        if section_indent is None or not text:
            continue
        if indent <= section_indent and current is not None:
            section_indent = None  # text back at the header's level: the section ended
            continue
        match = _ARG_LINE.match(raw)
        if match and (entry_indent is None or indent == entry_indent):
            entry_indent = indent
            current = match.group(2).lstrip("*")
            docs[current] = match.group(3).strip()
        elif current is not None and entry_indent is not None and indent > entry_indent:
            docs[current] = f"{docs[current]} {text}".strip()
    return docs


def attach(fn: HandlerFn, spec: HandlerSpec) -> HandlerFn:
    """Record a spec on a function and return the function unchanged."""
    existing = getattr(fn, SPEC_ATTRIBUTE, None)
    if existing is not None:
        raise DefinitionError(
            f"{fn.__qualname__} is already declared as {existing}; one handler kind per function"
        )
    setattr(fn, SPEC_ATTRIBUTE, spec)
    return fn


def spec_of(obj: object) -> HandlerSpec | None:
    """The spec a decorator recorded on ``obj``, if any."""
    spec = getattr(obj, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, HandlerSpec) else None
