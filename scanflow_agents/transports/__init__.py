"""Transports: how agents exchange bytes. NATS for real, memory for embedding and tests."""

from scanflow_agents.transports.base import (
    Message,
    NoResponders,
    Refused,
    RequestTimeout,
    Subscription,
    Transport,
    TransportError,
    subject_matches,
)
from scanflow_agents.transports.memory import MemoryBroker, MemoryTransport

__all__ = [
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "NoResponders",
    "Refused",
    "RequestTimeout",
    "Subscription",
    "Transport",
    "TransportError",
    "subject_matches",
]
