"""JetStream behind the transport contract: durable pull consumers and key-value buckets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from nats.js.kv import KeyValue as NatsBucket

from scanflow_agents._kit.tasks import guarded
from scanflow_agents.transports.base import (
    KeyValue,
    KvConflict,
    KvEntry,
    StoredHandler,
    StoredMessage,
    Subscription,
    TransportError,
    check_kv_names,
)
from scanflow_agents.transports.provisioning import (
    answered,
    ensure_bucket_replicas,
    led,
    replica_error,
)

logger = logging.getLogger(__name__)

# A pull request waits at most this long for an event. Short, so that a
# stopping consumer leaves no pull request behind at the server, which would
# hand an event to a listener that is gone and hold it for ``ack_wait``.
FETCH_WAIT = 1.0
RETRY_DELAY = 1.0  # before a failed event is handed out again
# JetStream's error codes for "the subject's last sequence is not the expected one".
_WRONG_LAST_SEQUENCE = (10071, 10164)
_IN_USE = 10058  # "stream name already in use with a different configuration"
_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError)


def consumer_config(
    subject: str, durable: str, max_age: float | None, ack_wait: float, inactive: float | None
) -> api.ConsumerConfig:
    """A durable pull consumer with one unacknowledged event at a time, so order holds."""
    start = None
    if max_age is not None:
        start = datetime.now(UTC) - timedelta(seconds=max_age)
    return api.ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=subject,
        deliver_policy=api.DeliverPolicy.BY_START_TIME if start else api.DeliverPolicy.ALL,
        opt_start_time=start,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=1,
        max_deliver=-1,
        inactive_threshold=inactive,
    )


class ConsumerSubscription(Subscription):
    """One binding to a durable pull consumer: fetch, handle, acknowledge, again."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subject: str,
        durable: str,
        handler: StoredHandler,
        config: dict[str, Any],
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.handler = handler
        self.config = config  # consumer_config()'s arguments, built afresh on each creation
        self.ack_wait = float(config["ack_wait"])
        self.active = True
        self._psub: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start fetching (binding first if :meth:`bind` has not succeeded yet)."""
        self._task = guarded(self._run(), name=f"consumer:{self.durable}", logger=logger)

    async def bind(self) -> None:
        """Create the consumer if it is missing, and bind a pull subscription to it."""
        try:
            await self.js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            config = consumer_config(self.subject, self.durable, **self.config)
            try:
                await self.js.add_consumer(self.stream, config)
            except nats.js.errors.APIError:
                # Another replica created it at the same moment, with another
                # start time, so the server refused ours: bind to theirs.
                await self.js.consumer_info(self.stream, self.durable)
        self._psub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def _run(self) -> None:
        failing = False
        while self.active:
            try:
                if self._psub is None:
                    await self.bind()
                msgs = await self._psub.fetch(1, timeout=FETCH_WAIT)
            except TimeoutError:
                continue  # nothing new (or the server is away and the request waits)
            except _ERRORS as exc:
                if not failing:
                    logger.warning(
                        "durable consumer %r cannot fetch (%s); retrying",
                        self.durable,
                        exc or type(exc).__name__,
                    )
                failing = True
                await self._drop_binding()
                await asyncio.sleep(RETRY_DELAY)
                continue
            if failing:
                logger.info("durable consumer %r fetches again", self.durable)
                failing = False
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        stored = StoredMessage(
            subject=msg.subject,
            data=msg.data,
            sequence=meta.sequence.stream,
            deliveries=meta.num_delivered,
            time=meta.timestamp,
        )
        alive = guarded(self._keep_alive(msg), name=f"consumer-alive:{self.durable}", logger=logger)
        try:
            await self.handler(stored)
        except Exception:
            logger.exception(
                "handler of durable consumer %r failed; the event is delivered again",
                self.durable,
            )
            with contextlib.suppress(*_ERRORS, TimeoutError):
                await msg.nak(delay=RETRY_DELAY)
            return
        finally:
            alive.cancel()
        try:
            # Wait for the server to confirm: a crash after this line cannot
            # bring the event back, one before it can (and the reader dedupes).
            await msg.ack_sync(timeout=5.0)
        except (*_ERRORS, TimeoutError) as exc:
            logger.info(
                "durable consumer %r: acknowledgement of event %d not confirmed (%s); "
                "it may be delivered again",
                self.durable,
                stored.sequence,
                exc or type(exc).__name__,
            )

    async def _keep_alive(self, msg: Msg) -> None:
        # A handler that runs longer than ack_wait is not a dead consumer.
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(*_ERRORS):
                await msg.in_progress()

    async def _drop_binding(self) -> None:
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(*_ERRORS):
                await psub.unsubscribe()

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        # The loop ends after the event in hand, or after its pull request
        # expires (at most FETCH_WAIT): no request is left at the server.
        self.active = False
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_binding()

    async def abort(self) -> None:
        self.active = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass(frozen=True)
class _Last:
    """A key's last entry in its bucket's stream."""

    revision: int
    value: bytes
    deleted: bool  # a delete or purge marker: the key has no value


class JetStreamKeyValue(KeyValue):
    """A JetStream key-value bucket (one value per key kept)."""

    def __init__(
        self,
        js: JetStreamContext,
        kv: NatsBucket,
        bucket: str,
        ttl: float | None,
        grace: float = 0.0,
    ) -> None:
        super().__init__(bucket, ttl)
        self._js = js
        self._kv = kv
        self.grace = grace  # seconds a write waits for the bucket to be known (a cluster)

    async def get(self, key: str) -> KvEntry | None:
        check_kv_names(self.bucket, key)
        try:
            last = await self._last(key)
        except _ERRORS as exc:
            raise self._failed("read", key, exc) from exc
        if last is None or last.deleted:
            return None
        return KvEntry(key, last.value, last.revision)

    async def _last(self, key: str) -> _Last | None:
        """The key's last entry in the stream (a value or a delete marker), or ``None``.

        Read on the stream's leader, not with nats-py's direct get: on a cluster
        any replica answers a direct get, and a follower that has not applied the
        latest write yet answers with the value before it. A claim that lost its
        create would then read the key as free and run the call a second time.
        """
        try:
            msg = await self._js.get_msg(
                f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{key}", direct=False
            )
        except nats.js.errors.NotFoundError:
            return None
        operation = (msg.headers or {}).get(KV_OP)
        return _Last(int(msg.seq or 0), msg.data or b"", operation in (KV_DEL, KV_PURGE))

    async def put(self, key: str, value: bytes) -> int:
        check_kv_names(self.bucket, key)
        try:
            return int(await answered(lambda: self._kv.put(key, value), self.grace))
        except _ERRORS as exc:
            raise self._failed("write", key, exc) from exc

    async def create(self, key: str, value: bytes) -> int:
        """Set ``key`` if it has no value: an update expecting no entry, or the delete marker.

        Not nats-py's create, which reads the marker with a direct get and, on a
        cluster, fails with "key not found" when a follower has not seen it yet.
        """
        check_kv_names(self.bucket, key)
        last = 0  # no entry for the key in the stream
        try:
            # Three tries: between the refused write and the read, the marker can
            # expire (the bucket's age limit) or a rival can delete the value again.
            for _try in range(3):
                write = functools.partial(self._kv.update, key, value, last=last)
                try:
                    return int(await answered(write, self.grace))
                except nats.js.errors.KeyWrongLastSequenceError:
                    entry = await self._last(key)
                    if entry is not None and not entry.deleted:
                        break
                    last = 0 if entry is None else entry.revision
        except _ERRORS as exc:
            raise self._failed("create", key, exc) from exc
        raise KvConflict(f"key {key!r} of bucket {self.bucket!r} exists")

    async def update(self, key: str, value: bytes, revision: int) -> int:
        check_kv_names(self.bucket, key)
        try:
            return int(
                await answered(lambda: self._kv.update(key, value, last=revision), self.grace)
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            raise self._moved(key, revision) from None
        except _ERRORS as exc:
            raise self._failed("update", key, exc) from exc

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        check_kv_names(self.bucket, key)
        try:
            await answered(lambda: self._kv.delete(key, last=revision), self.grace)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise self._moved(key, revision) from None
            raise self._failed("delete", key, exc) from exc
        except _ERRORS as exc:
            raise self._failed("delete", key, exc) from exc

    async def entries(self, under: str | None = None) -> list[KvEntry]:
        if under is not None:
            check_kv_names(self.bucket, under)
        prefix = f"$KV.{self.bucket}."
        try:
            # The stream's subjects are the keys (a deleted key keeps its marker,
            # which reads as absent); then the values, read together. nats-py's
            # key watcher was seen to report "caught up" before its first entry
            # on a cluster, and to list nothing.
            info = await self._js.stream_info(
                f"KV_{self.bucket}",
                subjects_filter=prefix + (">" if under is None else f"{under}.>"),
            )
            keys = sorted(subject.removeprefix(prefix) for subject in info.state.subjects or {})
            found = await asyncio.gather(*(self.get(key) for key in keys))
        except _ERRORS as exc:
            raise self._failed("list", under or ">", exc) from exc
        return [entry for entry in found if entry is not None]

    def _moved(self, key: str, revision: int | None) -> KvConflict:
        return KvConflict(f"key {key!r} of bucket {self.bucket!r} is no longer at {revision}")

    def _failed(self, what: str, key: str, exc: BaseException) -> TransportError:
        reason = str(exc) or type(exc).__name__
        return TransportError(f"cannot {what} key {key!r} of bucket {self.bucket!r}: {reason}")


async def find_bucket(
    js: JetStreamContext, bucket: str, *, grace: float = 0.0
) -> JetStreamKeyValue | None:
    """The bucket if it exists (as it is: replicas and ttl unchanged), else ``None``."""
    check_kv_names(bucket)
    try:
        kv = await js.key_value(bucket)
        ttl = (await kv.status()).ttl or None
    except nats.js.errors.BucketNotFoundError:
        return None
    except _ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise TransportError(f"cannot open key-value bucket {bucket!r}: {reason}") from exc
    return JetStreamKeyValue(js, kv, bucket, ttl, grace)


async def open_bucket(
    js: JetStreamContext, bucket: str, ttl: float | None, *, replicas: int = 1, grace: float = 0.0
) -> JetStreamKeyValue:
    """The bucket, created if missing (file storage, ``replicas`` copies).

    An existing bucket gets the wanted replica count, and ``ttl`` if its own age
    limit is shorter or unset (limits are raised, never cut: see ``Transport.key_value``).
    """
    check_kv_names(bucket)
    try:
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await js.create_key_value(
                    bucket=bucket, history=1, ttl=ttl, storage=api.StorageType.FILE,
                    replicas=replicas,
                )  # fmt: skip
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _IN_USE:
                    raise
                # Another client made it a moment ago, with its own ttl: use
                # that one, brought to ours below.
                kv = await js.key_value(bucket)
            else:
                await led(js, f"KV_{bucket}")
                return JetStreamKeyValue(js, kv, bucket, ttl, grace)
        await ensure_bucket_replicas(js, bucket, replicas)
        current = (await kv.status()).ttl or None
        if ttl is not None and (current is None or current < ttl):
            info = await js.stream_info(f"KV_{bucket}")
            config = info.config
            config.max_age = ttl
            # The server refuses a duplicate window longer than the age limit.
            config.duplicate_window = min(config.duplicate_window or ttl, ttl)
            await js.update_stream(config)
            current = ttl
    except _ERRORS as exc:
        raise replica_error(f"key-value bucket {bucket!r}", replicas, exc) from exc
    return JetStreamKeyValue(js, kv, bucket, current, grace)
