"""One place that decides what must never be printed: passwords, tokens, URL credentials.

Every log line, CLI message and description that may carry a URL or a secret
goes through :func:`redact` (text) or :func:`mask` (data). Three things are
hidden:

- the credentials part of a URL (``nats://user:pass@host`` becomes
  ``nats://user:**********@host``; ``nats://token@host`` becomes
  ``nats://**********@host``, since a lone user part is often a token);
- values of query parameters that name a secret (``?token=...``,
  ``&password=...``, ``api_key``, ``secret``...);
- every value handed to :func:`remember`, wherever it appears: the edge of a
  process (the CLI) remembers the secrets of its settings, so a password that
  reaches a log line some other way (a library's error text) is still hidden.

:func:`install` applies the same to every log record of the process as it
is made, including those of third-party libraries (nats-py, MLflow) and of
handlers added later; :class:`RedactingFilter` does it for one handler. The
mask is pydantic's own (``SecretStr`` shows as ``**********``), so a secret
reads the same wherever it was hidden.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

#: What a hidden value is replaced with (the same as pydantic's ``SecretStr``).
MASK = "**********"

#: Shorter remembered values are not searched for: masking every "ab" in a log
#: would hide more than it protects. Secrets this short are not secrets.
MIN_SECRET_LENGTH = 4

#: A lone user part of a URL at least this long is taken for a token and remembered.
TOKEN_LENGTH = 12

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^\s/@:?#]*)(?::(?P<password>[^\s/@?#]*))?@"
)
_SECRET_QUERY = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|token|access_token|auth_token|api[_\-]?key|"
    r"secret|client_secret|sig|signature)=)(?P<value>[^&\s#'\"]+)"
)

_known: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def _url_credentials(match: re.Match[str]) -> str:
    user, password = match.group("user"), match.group("password")
    if password is None:
        # A lone user part: nats://TOKEN@host, https://TOKEN@github.com...
        return f"{match.group('scheme')}{MASK}@"
    return f"{match.group('scheme')}{user}:{MASK}@"


def redact(text: str) -> str:
    """``text`` with URL credentials, secret query values and remembered secrets masked."""
    if not text:
        return text
    if "@" in text:
        text = _URL_CREDENTIALS.sub(_url_credentials, text)
    if "=" in text:
        text = _SECRET_QUERY.sub(lambda m: m.group("key") + MASK, text)
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def mask(value: Any) -> Any:
    """A copy of ``value`` safe to show: secrets masked, strings redacted, containers walked.

    A pydantic model comes back as a model of its type, validated again.
    """
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseModel):
        # The same model comes back (readers use its attributes), its text masked.
        return type(value).model_validate(mask(value.model_dump(mode="json")))
    if isinstance(value, Mapping):
        return {key: mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    return value


def remember(*values: str | SecretStr | None) -> None:
    """Hide these values wherever they appear in text from now on (for this process)."""
    global _known_pattern
    added = False
    with _known_lock:
        for value in values:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text and len(text) >= MIN_SECRET_LENGTH and text not in _known:
                _known.add(text)
                added = True
        if added:
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(_known, key=len, reverse=True)
            _known_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def remember_model(model: BaseModel) -> None:
    """Remember every secret a settings tree holds: ``SecretStr`` fields and URL passwords."""
    remember(*_secrets_in(model))


def _secrets_in(value: Any) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_in(item)
    elif isinstance(value, str) and "@" in value:
        for match in _URL_CREDENTIALS.finditer(value):
            password, user = match.group("password"), match.group("user")
            if password:
                yield password
            elif len(user) >= TOKEN_LENGTH:
                # A lone user part is a token in NATS URLs (nats://TOKEN@host); a short
                # one is more likely a name ("admin"), which is not worth hiding everywhere.
                yield user


def redact_record(record: logging.LogRecord) -> None:
    """Redact one log record in place: its message with arguments, traceback and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: let the handler report it as usual
        return
    # What the record was made from stays readable (not printed): the rate limit
    # of :mod:`scanflow_agents.logs` tells kinds of warnings apart by it.
    if not hasattr(record, "scanflow_template"):
        record.scanflow_template = (record.msg, record.args)
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record it sees (for handlers configured by hand)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Redact every log record of this process from now on, whichever handler writes it.

    Records are redacted as they are made (a wrapper around the log record
    factory), so handlers added later, and every library's loggers, are
    covered. Call it at the edge of a process; calling it again changes nothing.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "scanflow_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_record(record)
        return record

    factory.scanflow_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def shown_params(params: BaseModel) -> dict[str, Any]:
    """Validated actuator parameters as they may be recorded and echoed.

    The parameters the caller gave (not the defaults), in JSON form, so a
    ``SecretStr`` parameter reads ``**********``; strings are redacted as well.
    """
    shown: dict[str, Any] = mask(params.model_dump(mode="json", exclude_unset=True))
    return shown
