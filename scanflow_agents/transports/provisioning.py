"""Streams and key-value buckets made as the settings say, replica count included.

Every stream and bucket the project creates goes through here, so one setting
(``settings.nats.replicas``) decides how many servers keep a copy: 1 on a single
server, 3 on a three-server cluster (what cannot be lost: the audit trail,
leases, the call store, approvals, the planner's runs). At start an existing
stream or bucket is brought to the wanted configuration (NATS changes a
stream's replica count in place, copying its data to the new peers); what the
servers cannot hold is a start-up error that says what to change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from scanflow_agents.transports.base import TransportError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# JetStream's error codes for a replica count the servers cannot hold.
_NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
_TOO_FEW_PEERS = (10005, 10023)  # "no suitable peers for placement", "insufficient resources"
# Seconds a new replicated stream may take to elect its leader before it is used anyway
# (its first writes then fail as they would without the wait, and are retried).
LEADER_WAIT = 10.0
# Seconds a write may wait for its stream's subjects to be known at this
# connection's server (a cluster spreads them in milliseconds).
INTEREST_GRACE = 0.5
_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError)
# Seconds JetStream's API may stay silent while a stream is made at start (a meta
# leader being elected, a server starved of CPU on a busy machine: seen in CI with a
# cluster just started) before it is a start-up error.
API_WAIT = 20.0
# Only silence: a server without JetStream answers at once (503 through nats-py),
# and stays an error at once.
_SILENT = (nats.errors.TimeoutError,)


def replica_error(what: str, replicas: int, exc: BaseException) -> TransportError:
    """The error for a stream or bucket that cannot be made with ``replicas`` copies."""
    code = getattr(exc, "err_code", None)
    if code == _NOT_CLUSTERED:
        return TransportError(
            f"cannot keep {what} on {replicas} servers: this NATS server is not part of a "
            "JetStream cluster; set nats.replicas to 1 (SCANFLOW_NATS__REPLICAS=1) or point "
            "nats.url at a cluster"
        )
    if code in _TOO_FEW_PEERS:
        return TransportError(
            f"cannot keep {what} on {replicas} servers: the NATS cluster has fewer JetStream "
            "servers (or less storage) than that; lower nats.replicas or add servers"
        )
    return TransportError(f"cannot create or update {what}: {exc or type(exc).__name__}")


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> api.StreamInfo:
    """The stream as ``config`` says: created, or its configuration brought up to date.

    Raises:
        TransportError: the servers cannot hold it (replica count, storage), named clearly.
    """
    what = f"stream {config.name!r}"
    replicas = config.num_replicas or 1
    deadline = time.monotonic() + API_WAIT
    while True:
        try:
            return await _ensure_stream(js, config, what, replicas)
        except _SILENT as exc:
            # Asking again is safe: the same configuration makes the stream once.
            if time.monotonic() > deadline:
                raise replica_error(what, replicas, exc) from exc
            logger.warning("%s: JetStream did not answer (%r); asking again", what, exc)
            await asyncio.sleep(0.5)


async def _ensure_stream(
    js: JetStreamContext, config: api.StreamConfig, what: str, replicas: int
) -> api.StreamInfo:
    try:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _NOT_CLUSTERED or exc.err_code in _TOO_FEW_PEERS:
                raise
            # The stream exists with another configuration (subjects, age, replicas).
            current = (await js.stream_info(str(config.name))).config
            if (current.num_replicas or 1) != replicas:
                logger.warning(
                    "%s has %d replica(s); changing it to %d (nats.replicas)",
                    what,
                    current.num_replicas or 1,
                    replicas,
                )
            await js.update_stream(config)
        return await led(js, str(config.name))
    except _SILENT:
        raise
    except _ERRORS as exc:
        raise replica_error(what, replicas, exc) from exc


async def led(js: JetStreamContext, stream: str, timeout: float = LEADER_WAIT) -> api.StreamInfo:
    """The stream's info once it has a leader.

    A replicated stream just made (or changed) answers no write until its peers
    have elected a leader: a first event or key written before that would fail
    with "no responders". One server leads its streams at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            # Made by another client a moment ago: the server asked may not know it yet.
            if time.monotonic() > deadline:
                raise
        else:
            if info.cluster is None or info.cluster.leader or time.monotonic() > deadline:
                return info
        await asyncio.sleep(0.05)


async def answered(write: Callable[[], Awaitable[T]], grace: float = INTEREST_GRACE) -> T:
    """``write()``, asked again while its stream's subjects are not yet known here.

    A stream takes its subjects at the server that leads it; the other servers
    of a cluster learn that interest a moment later (and again after a leader
    change), and a write sent through them meanwhile finds "no responders".
    Asking again is safe: no stream received it.
    """
    deadline = time.monotonic() + grace
    while True:
        try:
            return await write()
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def ensure_bucket_replicas(js: JetStreamContext, bucket: str, replicas: int) -> None:
    """Bring an existing bucket's replica count to ``replicas`` (its stream is ``KV_<bucket>``)."""
    info = await led(js, f"KV_{bucket}")  # another client may have just made it
    if (info.config.num_replicas or 1) == replicas:
        return
    logger.warning(
        "key-value bucket %r has %d replica(s); changing it to %d (nats.replicas)",
        bucket,
        info.config.num_replicas or 1,
        replicas,
    )
    info.config.num_replicas = replicas
    await js.update_stream(info.config)
    await led(js, f"KV_{bucket}")
