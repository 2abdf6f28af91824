"""Transports: how agents exchange bytes. NATS for real, memory for embedding and tests."""

from scanflow_agents.transports.base import (
    Durable,
    KeyValue,
    KvConflict,
    KvEntry,
    Message,
    NoResponders,
    Refused,
    RequestTimeout,
    StoredMessage,
    Subscription,
    Transport,
    TransportError,
    subject_matches,
)
from scanflow_agents.transports.memory import MemoryBroker, MemoryTransport

__all__ = [
    "Durable",
    "KeyValue",
    "KvConflict",
    "KvEntry",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "NoResponders",
    "Refused",
    "RequestTimeout",
    "StoredMessage",
    "Subscription",
    "Transport",
    "TransportError",
    "subject_matches",
]
