"""Run one handler with its timeout, retries and error mode; never let it kill the agent.

The outcomes are few: success (with a result), or failure (temporary errors
that ran out of retries, permanent errors, timeouts). Only cancellation
propagates, so a stopping agent stops its handlers cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scanflow_agents._core.calling import TEMPORARY_CODES
from scanflow_agents.errors import CallError, PermanentError, TemporaryError
from scanflow_agents.handlers import HandlerSpec
from scanflow_agents.redaction import redact
from scanflow_agents.settings import HandlerSettings

logger = logging.getLogger("scanflow_agents.handlers")


@dataclass
class Outcome:
    """What running a handler came to."""

    ok: bool
    result: Any = None
    error: BaseException | None = None
    attempts: int = 1
    duration: float = 0.0
    timed_out: bool = False

    @property
    def error_text(self) -> str | None:
        if self.error is None:
            return None
        # Error texts reach replies, records and descriptions: never with a secret.
        return redact(str(self.error)) or type(self.error).__name__


async def execute(
    spec: HandlerSpec,
    agent: str,
    call: Callable[[], Awaitable[Any]],
    defaults: HandlerSettings,
) -> Outcome:
    """Run ``call`` as the handler ``spec`` of ``agent`` and return its outcome."""
    timeout = spec.options.timeout or defaults.timeout
    retries = spec.options.retries if spec.options.retries is not None else defaults.retries
    backoff = spec.options.backoff if spec.options.backoff is not None else defaults.backoff
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        # None: do not retry; negative: retry after the exponential backoff.
        retry_in: float | None = None
        timed_out = False
        try:
            # The timeout cancels the attempt inside the handler and surfaces as
            # TimeoutError; a cancellation from outside (the agent stopping) stays
            # CancelledError, a BaseException that none of the clauses below catch.
            async with asyncio.timeout(timeout):
                result = await call()
            return Outcome(True, result, attempts=attempt, duration=time.monotonic() - started)
        except TimeoutError as exc:
            timed_out = True
            error: BaseException = TimeoutError(f"timed out after {timeout:g}s")
            error.__cause__ = exc
            retry_in = -1.0
        except TemporaryError as exc:
            # An explicit delay is used as it is; otherwise the exponential backoff.
            error, retry_in = exc, exc.delay if exc.delay is not None else -1.0
        except CallError as exc:
            error = exc
            # A refusal by the handler itself is final: retrying changes nothing.
            # A call it made that found its peer absent, slow or busy may
            # succeed later: temporary, like a TemporaryError.
            if exc.agent is not None and exc.code in TEMPORARY_CODES:
                retry_in = -1.0
        except PermanentError as exc:
            error = exc
        except Exception as exc:
            error = exc
            if spec.options.errors == "ignore":
                logger.debug("%s of agent %r failed (ignored): %s", spec, agent, exc)
                return Outcome(True, None, attempts=attempt, duration=time.monotonic() - started)
            if spec.options.errors == "temporary":
                retry_in = -1.0
        # `attempt > retries`: the first attempt is not a retry, so `retries=2`
        # means three attempts in all.
        if retry_in is None or attempt > retries:
            # Errors raised on purpose need no traceback; unexpected ones do.
            expected = isinstance(error, (TemporaryError, PermanentError, CallError))
            logger.log(
                _level(spec, error),
                "%s of agent %r failed: %s%s",
                spec,
                agent,
                _describe(error),
                f" (after {attempt} attempts)" if attempt > 1 else "",
                exc_info=None if timed_out or expected else error,
            )
            return Outcome(
                False,
                error=error,
                attempts=attempt,
                duration=time.monotonic() - started,
                timed_out=timed_out,
            )
        delay = (
            retry_in if retry_in >= 0 else min(backoff * 2 ** (attempt - 1), defaults.max_backoff)
        )
        logger.warning(
            "%s of agent %r failed: %s; retrying in %.3g s (attempt %d of %d)",
            spec,
            agent,
            _describe(error),
            delay,
            attempt + 1,
            retries + 1,
        )
        # Cancellable: a stopping agent does not wait out a retry's backoff.
        await asyncio.sleep(delay)


def _level(spec: HandlerSpec, error: BaseException) -> int:
    """How loud a final failure is logged."""
    if isinstance(error, CallError) and spec.kind == "actuator" and error.agent is None:
        return logging.INFO  # the actuator refusing a call answers it: not an alarm
    if spec.kind == "sensor" or isinstance(error, CallError):
        # A sensor runs again at its next trigger, and a failed call is the
        # called agent's failure: worth a warning, not an error of this handler.
        return logging.WARNING
    return logging.ERROR


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
