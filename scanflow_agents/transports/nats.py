"""The NATS transport: core request/reply and pub/sub, JetStream for durable events and KV."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import api

from scanflow_agents.redaction import redact
from scanflow_agents.settings import NatsSettings
from scanflow_agents.transports.base import (
    Durable,
    KeyValue,
    Message,
    MessageHandler,
    NoResponders,
    Refused,
    RequestTimeout,
    Sent,
    StoredHandler,
    Subscription,
    Transport,
    TransportError,
)
from scanflow_agents.transports.connecting import (
    ConnectFailed,
    ConnectSetupError,
    describe_error,
    open_connection,
)
from scanflow_agents.transports.jetstream import (
    ConsumerSubscription,
    JetStreamKeyValue,
    find_bucket,
    open_bucket,
)
from scanflow_agents.transports.provisioning import INTEREST_GRACE, answered, ensure_stream
from scanflow_agents.transports.streams import StreamSpec, reads, stream_for

logger = logging.getLogger(__name__)


def _ack_error(data: bytes) -> BaseException | None:
    """The error a JetStream acknowledgement reports, or ``None`` if the event is stored."""
    if data == b"no-stream":
        return TransportError("no stream stores the subject (is JetStream up?)")
    if b'"error"' not in data:
        return None
    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return TransportError(f"JetStream sent an unreadable acknowledgement: {data[:200]!r}")
    text = f"JetStream refused the event: {error.get('description')} ({error.get('err_code')})"
    # 4xx: the stream's answer about this message (too large, wrong sequence): final.
    return Refused(text) if 400 <= int(error.get("code", 500)) < 500 else TransportError(text)


def _id_header(msg_id: str | None) -> dict[str, str] | None:
    # JetStream keeps one copy per Nats-Msg-Id within its duplicate window,
    # which makes re-sending after a lost acknowledgement safe.
    return {"Nats-Msg-Id": msg_id} if msg_id else None


class _NatsSubscription(Subscription):
    def __init__(self, sub: NatsSubscription) -> None:
        self._sub = sub
        self._done = False

    async def unsubscribe(self) -> None:
        if not self._done:
            self._done = True
            # drain() lets messages already received be handled before the
            # subscription goes, so a stopping agent answers what it accepted.
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await self._sub.drain()  # type: ignore[no-untyped-call]


class NatsTransport(Transport):
    """A transport over one NATS connection, with JetStream for the event streams.

    Build it with :meth:`connect`; ``streams`` are the JetStream streams that
    store events (created or updated on connect), each a purpose of its own
    (:mod:`.streams`): a subject is stored by, and read from, the one that covers it.
    """

    def __init__(self, nc: Client, *, streams: Sequence[StreamSpec], replicas: int = 1) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.streams = tuple(streams)
        self.replicas = replicas  # of every bucket, and of every stream that sets none
        self._ack_prefix: str | None = None
        self._ack_counter = itertools.count()
        self._pending_acks: dict[str, asyncio.Future[bytes]] = {}
        self._buckets: dict[str, JetStreamKeyValue] = {}
        self._consumers: list[ConsumerSubscription] = []
        self._closed = False
        self._closing: list[bool] = []

    @classmethod
    async def connect(
        cls,
        settings: NatsSettings,
        *,
        streams: Sequence[StreamSpec],
        name: str = "scanflow",
    ) -> NatsTransport:
        """Connect, and make sure each of ``streams`` exists as it says."""

        closing: list[bool] = []  # set by close(): a drain's disconnect is no news
        established: list[bool] = []

        async def on_error(exc: Exception) -> None:
            logger.warning("NATS connection %s: %s", name, redact(describe_error(exc)))

        async def on_disconnect() -> None:
            # A failed first attempt is reported by the error, not as a lost connection.
            if established and not closing:
                logger.warning("NATS connection %s lost; reconnecting", name)

        restored: list[NatsTransport] = []  # the transport, once built

        async def on_reconnect() -> None:
            logger.info("NATS connection %s restored", name)
            for transport in restored:
                transport.last_reconnect = time.monotonic()

        try:
            nc = await open_connection(
                settings,
                name=name,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except (ConnectSetupError, ConnectFailed) as exc:
            raise TransportError(
                f"cannot connect to NATS at {redact(settings.url)}: {exc}"
            ) from exc
        established.append(True)
        transport = cls(nc, streams=streams, replicas=settings.replicas)
        transport._closing = closing
        restored.append(transport)
        try:
            for spec in transport.streams:
                await transport._ensure_stream(spec)
        except BaseException:
            # A start-up error (a replica count the servers cannot hold) leaves
            # no connection behind.
            await transport.abort()
            raise
        return transport

    async def _ensure_stream(self, spec: StreamSpec) -> None:
        config = api.StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            max_age=spec.max_age,
            max_bytes=spec.max_bytes,
            # Limits drop the oldest messages, never refuse a new one: the audit
            # stream sets no size (only age), so nothing new is discarded there.
            discard=api.DiscardPolicy.OLD,
            storage=api.StorageType.FILE,
            num_replicas=spec.replicas or self.replicas,
        )
        await ensure_stream(self.js, config)

    def stream_for(self, subject: str) -> str:
        """The name of the stream that stores ``subject`` (a subject or a filter)."""
        return stream_for(self.streams, subject).name

    @property
    def grace(self) -> float:
        """Seconds a write or request waits for interest to spread (a cluster; not one server)."""
        return INTEREST_GRACE if len(self.nc.servers) > 1 else 0.0

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def publish(self, subject: str, data: bytes) -> None:
        await self.nc.publish(subject, data)

    async def publish_durable(
        self, subject: str, data: bytes, *, msg_id: str | None = None
    ) -> None:
        stream = self.stream_for(subject)
        try:
            await answered(
                lambda: self.js.publish(subject, data, stream=stream, headers=_id_header(msg_id)),
                self.grace,
            )
        except nats.errors.TimeoutError as exc:
            raise TransportError(f"JetStream did not acknowledge {subject!r} in time") from exc
        except (nats.errors.MaxPayloadError, nats.js.errors.APIError) as exc:
            raise Refused(f"stream {stream!r} refused {subject!r}: {exc!r}") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            # No stream for the subject, or the connection is down or closed.
            raise TransportError(
                f"stream {stream!r} did not store {subject!r}: {exc or type(exc).__name__}"
            ) from exc

    async def publish_durable_batch(
        self, items: Sequence[Durable], *, sent: Sent | None = None, timeout: float = 5.0
    ) -> list[BaseException | None]:
        # Pipelined: every event is written before any acknowledgement is
        # awaited, so a batch costs about one round trip and, since nothing in
        # the loop below yields, one socket write. (nats-py's publish_async
        # yields once per message, which turns a batch into a write each.)
        acks = await self._acks()
        futures: list[asyncio.Future[bytes] | None] = []
        errors: list[BaseException | None] = []
        tokens: list[str] = []
        loop = asyncio.get_running_loop()
        try:
            for subject, data, msg_id, confirm in items:
                future: asyncio.Future[bytes] | None = None
                reply = ""
                if confirm:
                    token = f"{next(self._ack_counter):x}"
                    future = loop.create_future()
                    reply = f"{acks}.{token}"
                try:
                    await self.nc.publish(subject, data, reply=reply, headers=_id_header(msg_id))
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    futures.append(None)
                    # Too large for the server: no resend can help.
                    kind = (
                        Refused if isinstance(exc, nats.errors.MaxPayloadError) else TransportError
                    )
                    errors.append(kind(f"the event stream did not take {subject!r}: {exc!r}"))
                    continue
                if future is not None:
                    self._pending_acks[token] = future
                    tokens.append(token)
                futures.append(future)
                errors.append(None)
            if sent is not None:
                # Everything is in the connection's buffer, in order: whatever is
                # published from now on reaches the server after these messages.
                sent(list(errors))
            pending = [f for f in futures if f is not None]
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        finally:
            # Acknowledgements that did not come (in time, or at all) are not waited for.
            for token in tokens:
                self._pending_acks.pop(token, None)
        for index, maybe in enumerate(futures):
            if maybe is None:
                continue
            if not maybe.done():
                maybe.cancel()
                errors[index] = TransportError("JetStream did not acknowledge in time")
            else:
                errors[index] = _ack_error(maybe.result())
        return errors

    async def _acks(self) -> str:
        """The inbox prefix JetStream acknowledgements of this connection come back on."""
        if self._ack_prefix is None:
            prefix = self.nc.new_inbox()

            async def on_ack(msg: Msg) -> None:
                future = self._pending_acks.pop(msg.subject.rsplit(".", 1)[-1], None)
                if future is not None and not future.done():
                    status = (msg.headers or {}).get(api.Header.STATUS.value)
                    # A status without data: nobody stores that subject (503).
                    future.set_result(msg.data if msg.data or not status else b"no-stream")

            await self.nc.subscribe(f"{prefix}.*", cb=on_ack)
            self._ack_prefix = prefix
        return self._ack_prefix

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # In a cluster a subscription reaches the other servers a few milliseconds
        # after its own: "no responders" is final only after that grace (one
        # server knows at once). Asking again is safe: nobody got the request.
        grace = loop.time() + min(self.grace, timeout)
        while True:
            try:
                reply = await self.nc.request(
                    subject, data, timeout=max(deadline - loop.time(), 0.001)
                )
            except nats.errors.NoRespondersError:
                if loop.time() >= grace:
                    raise NoResponders(f"no responders on {subject!r}") from None
                await asyncio.sleep(0.02)
                continue
            except nats.errors.TimeoutError:
                raise RequestTimeout(f"no reply on {subject!r} within {timeout:g}s") from None
            except nats.errors.MaxPayloadError as exc:
                raise Refused(f"request on {subject!r} is over the max payload: {exc}") from None
            except nats.errors.Error as exc:  # closed, reconnecting, ...
                raise TransportError(f"request on {subject!r} failed: {exc!r}") from exc
            return reply.data

    async def gather(
        self, subject: str, data: bytes, timeout: float, *, expect: int | None = None
    ) -> list[bytes]:
        inbox = self.nc.new_inbox()
        replies: list[bytes] = []
        answered = asyncio.Event()

        async def on_reply(msg: Msg) -> None:
            replies.append(msg.data)
            if expect is not None and len(replies) >= expect:
                answered.set()

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(subject, data, reply=inbox)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await answered.wait()
        finally:
            await sub.unsubscribe()
        return replies

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        async def on_message(msg: Msg) -> None:
            message = Message(subject=msg.subject, data=msg.data, reply=msg.reply or None)
            if msg.reply:
                message._respond = msg.respond
            try:
                await handler(message)
            except Exception:
                logger.exception("handler of subscription %r failed", subject)

        sub = await self.nc.subscribe(subject, queue=queue or "", cb=on_message)
        return _NatsSubscription(sub)

    async def history(
        self,
        subject: str,
        *,
        limit: int = 10_000,
        newest: bool = False,
        since: datetime | None = None,
    ) -> list[tuple[str, bytes]]:
        try:
            found: list[tuple[str, bytes]] = []
            # A filter wider than one stream reads each stream under it, in turn.
            for spec, within in reads(self.streams, subject):
                found += await self._history(
                    spec.name, within, limit=limit, newest=newest, since=since
                )
            return found[-limit:] if newest else found[:limit]
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            # E.g. a timeout while a cluster elects a new leader: a clear error, not nats-py's.
            reason = f"cannot read {subject!r} from JetStream: {exc!r}; try again"
            raise TransportError(reason) from exc

    async def _history(
        self, stream: str, subject: str, *, limit: int, newest: bool, since: datetime | None
    ) -> list[tuple[str, bytes]]:
        info = await self.js.stream_info(stream, subjects_filter=subject)
        if not info.state.subjects or limit <= 0:
            return []
        config: dict[str, Any] = {"deliver_policy": api.DeliverPolicy.ALL}
        if since is not None:
            config = {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": since}
        if newest and await self._pending(stream, subject, config) > limit:
            # Only the last `limit` matching events: start at the latest sequence
            # from which at least that many remain (the server counts them).
            start = await self._start_of_last(stream, subject, limit, info.state)
            config = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
        sub = await self.js.subscribe(
            subject,
            stream=stream,
            ordered_consumer=True,
            config=api.ConsumerConfig(**config),
        )
        events: list[tuple[str, bytes]] = []
        try:
            while len(events) < limit:
                try:
                    msg = await sub.next_msg(timeout=5)
                except nats.errors.TimeoutError:
                    break  # nothing (more) stored since that time
                events.append((msg.subject, msg.data))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return events

    async def _pending(self, stream: str, subject: str, config: dict[str, Any]) -> int:
        """How many stored events match ``subject`` from where ``config`` starts."""
        consumer = await self.js.add_consumer(
            stream,
            api.ConsumerConfig(
                filter_subject=subject,
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=10.0,
                mem_storage=True,
                **config,
            ),
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_consumer(stream, consumer.name)
        return consumer.num_pending or 0

    async def _start_of_last(
        self, stream: str, subject: str, count: int, state: api.StreamState
    ) -> int:
        # Binary search over sequences: pending(seq) only shrinks as seq grows,
        # so about log2(stream size) probes find where the last `count` begin.
        low, high = state.first_seq, state.last_seq
        while low < high:
            middle = (low + high + 1) // 2
            config = {
                "deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": middle,
            }
            if await self._pending(stream, subject, config) >= count:
                low = middle
            else:
                high = middle - 1
        return low

    async def consume(
        self,
        subject: str,
        durable: str,
        handler: StoredHandler,
        *,
        max_age: float | None = None,
        ack_wait: float = 30.0,
        inactive: float | None = None,
    ) -> Subscription:
        config = {"max_age": max_age, "ack_wait": ack_wait, "inactive": inactive}
        stream = self.stream_for(subject)
        sub = ConsumerSubscription(self.js, stream, subject, durable, handler, config)
        try:
            await sub.bind()
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            # Not fatal: the consumer keeps trying to bind until it can.
            logger.warning("durable consumer %r cannot bind yet: %s", durable, exc)
        sub.start()
        self._consumers.append(sub)
        return sub

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        cached = self._buckets.get(bucket)
        if cached is None or (ttl is not None and (cached.ttl is None or cached.ttl < ttl)):
            cached = self._buckets[bucket] = await open_bucket(
                self.js, bucket, ttl, replicas=self.replicas, grace=self.grace
            )
        return cached

    async def existing_key_value(self, bucket: str) -> KeyValue | None:
        cached = self._buckets.get(bucket)
        if cached is not None:
            return cached
        return await find_bucket(self.js, bucket, grace=self.grace)

    async def flush(self, timeout: float = 10.0) -> None:
        # nats-py writes its PING straight to the socket, ahead of commands still
        # buffered, so a PONG does not prove that earlier SUBs reached the server.
        # A message to ourselves travels through the same buffer: once it comes
        # back, the server has processed everything sent before it.
        arrived = asyncio.get_running_loop().create_future()

        async def on_echo(msg: Msg) -> None:
            if not arrived.done():
                arrived.set_result(None)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_echo)
        try:
            await self.nc.publish(inbox, b"")
            async with asyncio.timeout(timeout):
                await arrived
        except TimeoutError:
            raise TransportError(f"NATS did not confirm a flush within {timeout:g} s") from None
        finally:
            await sub.unsubscribe()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.append(True)
        for sub in self._consumers:
            await sub.unsubscribe()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.Error, TimeoutError) as exc:
                # Not connected (server gone, reconnecting): nothing to drain.
                logger.debug("NATS drain skipped: %r", exc)
                await self.nc.close()

    async def abort(self) -> None:
        self._closed = True
        self._closing.append(True)
        for sub in self._consumers:
            await sub.abort()
        if not self.nc.is_closed:
            await self.nc.close()
