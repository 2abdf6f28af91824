"""Errors: what handlers raise to steer retries, and what callers receive.

Two families live here. Handlers raise :class:`TemporaryError` or
:class:`PermanentError` to say how the runtime should treat a failure (any
other exception is treated by the handler's error mode). Callers of remote
actuators receive a :class:`CallError` subclass that carries the structured
error of the reply: a code, a message and, for bad input, the field path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class DefinitionError(TypeError):
    """An agent, sensor, rule or actuator is defined wrongly (raised at class creation)."""


class TemporaryError(Exception):
    """A failure worth retrying after ``delay`` seconds (if the handler has retries left)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """A failure that no retry will fix; the handler fails at once."""


class ErrorCode(StrEnum):
    """The codes of a structured error reply. Stable: they are part of the wire protocol."""

    BAD_INPUT = "bad_input"
    """The arguments do not match the actuator's schema; ``field`` names the first offender."""
    BAD_MESSAGE = "bad_message"
    """The request is not a valid envelope (not JSON, wrong schema version, ...)."""
    NOT_FOUND = "not_found"
    """The agent runs, but has no actuator of that name."""
    TIMEOUT = "timeout"
    """The handler did not finish in time, or no reply came back in time."""
    HANDLER_FAILED = "handler_failed"
    """The handler raised."""
    REJECTED = "rejected"
    """A guard refused the call (cooldown, rate limit, approval, paused agent)."""
    UNAVAILABLE = "unavailable"
    """No running agent answers on that subject."""
    BUSY = "busy"
    """The agent is at its limit of calls in flight (or its record backlog is full); nothing
    ran. Retrying after a short delay is safe: ``Client.call`` and ``Agent.call`` do."""
    TOO_LARGE = "too_large"
    """The request or reply is over the server's max payload; ``details`` gives ``size`` and
    ``limit`` in bytes."""
    IN_DOUBT = "in_doubt"
    """A redelivered call was started before by an executor that died (or never said how it
    ended): it may or may not have acted. ``details`` holds the start record."""


class CallError(Exception):
    """A remote or local actuator call failed; the base of all call errors.

    Attributes:
        code: the wire error code.
        message: a human-readable account naming the agent, actuator and cause.
        field: for bad input, the dotted path of the first offending parameter.
        details: any structured extra the server sent (validation errors, ...).
        agent: the agent called, when the error came back from a call (else ``None``).
        actuator: the actuator called, likewise.
    """

    code: ErrorCode = ErrorCode.HANDLER_FAILED
    agent: str | None = None
    actuator: str | None = None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    @classmethod
    def from_code(
        cls, code: str, message: str, *, field: str | None = None, details: Any = None
    ) -> CallError:
        """Build the subclass that matches a wire error code."""
        klass = _BY_CODE.get(code, CallError)
        error = klass(message, field=field, details=details)
        if klass is CallError:
            error.code = ErrorCode.HANDLER_FAILED
        return error


class BadInput(CallError):
    code = ErrorCode.BAD_INPUT


class BadMessage(CallError):
    code = ErrorCode.BAD_MESSAGE


class IncompatibleVersion(BadMessage):
    """A status message of a major version this process does not read.

    The message names the agent, both versions and which side to upgrade;
    ``details`` holds ``theirs`` and ``ours``.
    """


class NotFound(CallError):
    code = ErrorCode.NOT_FOUND


class CallTimeout(CallError):
    code = ErrorCode.TIMEOUT


class HandlerFailed(CallError):
    code = ErrorCode.HANDLER_FAILED


class Rejected(CallError):
    code = ErrorCode.REJECTED


class Unavailable(CallError):
    code = ErrorCode.UNAVAILABLE


class Busy(CallError):
    """The agent pushed back: too many calls in flight. Nothing ran; retry later."""

    code = ErrorCode.BUSY


class TooLarge(CallError):
    """A request or reply over the server's max payload (``details``: ``size``, ``limit``)."""

    code = ErrorCode.TOO_LARGE


class InDoubt(CallError):
    """A call with this id was started before and its outcome is unknown.

    It was not run again. ``details`` is the start record: ``instance`` (the
    replica that started it) and ``started`` (ISO time). Check the audit trail
    (``started`` and ``action`` records of this call id) before calling again
    with a new id.
    """

    code = ErrorCode.IN_DOUBT


_BY_CODE: dict[str, type[CallError]] = {
    klass.code.value: klass
    for klass in (
        BadInput,
        BadMessage,
        NotFound,
        CallTimeout,
        HandlerFailed,
        Rejected,
        Unavailable,
        Busy,
        TooLarge,
        InDoubt,
    )
}
