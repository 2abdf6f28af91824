"""The streams of a namespace, by purpose: what each keeps, for how long, and how much.

Two purposes, kept apart so one cannot crowd out the other:

- the **audit** stream keeps what agents observed, decided and did, with each
  chain's index: long retention, no size limit by default, and nothing new is
  ever discarded to make room;
- the **telemetry** stream keeps what model servers report (topics under
  ``telemetry.``): short retention and a size limit, the oldest reports dropped
  first. A fleet of replicas reporting every few seconds fills it, and that is
  expected: the audit trail, on its own stream and storage, goes on recording.

Every transport routes a subject (to store it) and a filter (to read it) to the
stream whose subjects cover it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scanflow_agents.transports.base import TransportError, subject_matches


@dataclass(frozen=True)
class StreamSpec:
    """One stream: its name, the subjects it stores and its limits.

    Args:
        name: the JetStream stream name.
        subjects: subject patterns it stores (``*`` and ``>`` allowed).
        max_age: seconds a message is kept.
        max_bytes: bytes kept at most (the oldest messages dropped beyond it); ``None``: no limit.
        replicas: servers keeping a copy; ``None``: the transport's ``nats.replicas``.
    """

    name: str
    subjects: tuple[str, ...]
    max_age: float | None = None
    max_bytes: int | None = None
    replicas: int | None = None

    def covers(self, subject: str) -> bool:
        """Whether this stream stores ``subject``, or every subject of the filter ``subject``."""
        return any(subject_matches(pattern, subject) for pattern in self.subjects)


def reads(streams: Sequence[StreamSpec], subject: str) -> list[tuple[StreamSpec, str]]:
    """Where to read the filter ``subject``: each stream it reaches, with the filter to use there.

    One stream when it covers the filter; for a filter wider than any one
    stream (``scanflow.<ns>.>``), every stream with subjects under it, each
    read with its own subject pattern.

    Raises:
        TransportError: no stream stores any subject of it.
    """
    for spec in streams:
        if spec.covers(subject):
            return [(spec, subject)]
    found = [
        (spec, pattern)
        for spec in streams
        for pattern in spec.subjects
        if subject_matches(subject, pattern)  # the filter covers this pattern whole
    ]
    if not found:
        stream_for(streams, subject)  # raises, naming the streams
    return found


def stream_for(streams: Sequence[StreamSpec], subject: str) -> StreamSpec:
    """The stream that stores ``subject`` (a subject or a filter).

    Raises:
        TransportError: no stream stores it.
    """
    for spec in streams:
        if spec.covers(subject):
            return spec
    names = ", ".join(repr(spec.name) for spec in streams) or "none"
    raise TransportError(f"no event stream stores subject {subject!r} (streams: {names})")
