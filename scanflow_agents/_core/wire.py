"""Envelopes this process builds itself, encoded in one pass.

Calls, replies and records are built here from values the runtime made, so
they need no validation on the way out: one ``json.dumps`` of a plain dict
gives the same bytes :meth:`Envelope.encode` would, at a fraction of the cost
of constructing and serializing a pydantic model (the hot path of every call).
Received envelopes are still validated in full (:meth:`Envelope.decode`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic_core import to_jsonable_python

from scanflow_agents.errors import ErrorCode
from scanflow_agents.messages import SCHEMA_VERSION, ErrorInfo, Reply, new_id

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: ...} is written {"1": ...}, as json and pydantic do
_fallback = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=lambda v: to_jsonable_python(v)
).encode


def now_text() -> str:
    """The current UTC time as the envelope's ``time`` field writes it."""
    # `Z` as pydantic writes UTC: an envelope built here and one encoded by the
    # model carry the same text, and readers parse one form.
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def envelope(
    kind: str,
    source: str,
    payload: Any,
    *,
    target: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """An envelope as a plain mapping, with the fields (and order) of :class:`Envelope`."""
    # Built in the model's field order, optional fields left out as the model's
    # `exclude_none` does: the bytes are those Envelope.encode would write.
    value: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": id or new_id(),
        "kind": kind,
        "source": source,
    }
    if target is not None:
        value["target"] = target
    value["correlation_id"] = correlation_id or new_id()
    if causation_id is not None:
        value["causation_id"] = causation_id
    value["time"] = now_text()
    if payload is not None:
        value["payload"] = payload
    return value


def failure(
    code: ErrorCode, message: str, *, field: str | None = None, details: Any = None
) -> Reply:
    """The reply of a call or control op that failed (or was refused) with ``code``."""
    return Reply(
        ok=False, error=ErrorInfo(code=code, message=message, field=field, details=details)
    )


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value``; objects JSON cannot write go through pydantic's converter."""
    try:
        return orjson.dumps(value, default=to_jsonable_python, option=_OPTIONS)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, ...
        return _fallback(value).encode()
