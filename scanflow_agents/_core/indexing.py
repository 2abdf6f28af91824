"""The chain index: a copy of every event under a subject that names its chain.

The correlation id of an event lives in its payload, and JetStream filters
only on subjects, so finding one chain in the stream would mean reading all
of it. The recorder therefore stores each event twice in the same stream:
once on ``scanflow.<ns>.events.<topic>`` (what subscribers and ``history``
read) and once on ``scanflow.<ns>.chains.<token>.<topic>``, where ``token``
is the correlation id. Reading a chain is then one server-side filtered read
of a handful of messages, whatever the size of the stream
(``bench/chains.py`` measures both the lookup and the cost per record).
"""

from __future__ import annotations

import hashlib
import re

from scanflow_agents.subjects import Subjects

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def chain_token(correlation_id: str) -> str:
    """The subject token of a correlation id.

    Ids minted here are hex and used as they are; an id a caller chose that
    cannot be a subject token (dots, spaces, wildcards) is hashed instead.
    """
    if _TOKEN.fullmatch(correlation_id):
        return correlation_id
    # 40 hex digits: well within a subject token's length, and too many for two
    # chains to share one by chance.
    return "h" + hashlib.sha256(correlation_id.encode()).hexdigest()[:40]


def chain_entry(
    subjects: Subjects, subject: str, data: bytes, correlation_id: str, event_id: str
) -> tuple[str, bytes, str]:
    """The ``(subject, data, msg_id)`` of the chain copy of one event."""
    topic = subjects.topic_of(subject)
    # An id of its own: with the event's id, the stream's duplicate window would
    # take the copy for a resend of the event and drop it.
    return subjects.chain(chain_token(correlation_id), topic), data, f"{event_id}.chain"
