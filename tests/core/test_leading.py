"""Leader election by a lease in key-value: one leader, handover on release, on death, on loss.

Every case runs on the in-memory bus and on a real NATS server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from scanflow_agents._core.leading import Leadership, lease_bucket
from scanflow_agents.settings import NatsSettings
from scanflow_agents.testing import eventually
from scanflow_agents.transports import KeyValue, MemoryBroker, MemoryTransport, Transport
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.streams import StreamSpec

Elect = Callable[..., Awaitable[Leadership]]
# The lease loop of each replica, so that a test can kill one without a release.
LOOPS: dict[int, asyncio.Task[None]] = {}


@pytest.fixture
async def elect(bus: str | None) -> AsyncIterator[Elect]:
    """Start replicas of one agent, each on its own connection, with a short lease."""
    namespace = f"lead-{uuid.uuid4().hex[:8]}"
    broker = MemoryBroker()
    started: list[tuple[Transport, Leadership, asyncio.Task[None]]] = []

    async def replica(
        ttl: float = 1.5, changes: list[bool] | None = None, agent: str = "watcher"
    ) -> Leadership:
        if bus is None:
            transport: Transport = MemoryTransport(broker)
        else:
            settings = NatsSettings(url=bus)
            stream, subjects = f"L{namespace[5:]}", [f"{namespace}.x"]
            transport = await NatsTransport.connect(
                settings, streams=[StreamSpec(stream, tuple(subjects))]
            )

        async def on_change(leading: bool) -> None:
            if changes is not None:
                changes.append(leading)

        leadership = Leadership(
            transport,
            namespace=namespace,
            agent=agent,
            instance=uuid.uuid4().hex[:12],
            ttl=ttl,
            on_change=on_change,
        )
        await leadership.start()
        task = asyncio.create_task(leadership.run())
        started.append((transport, leadership, task))
        LOOPS[id(leadership)] = task
        return leadership

    yield replica
    for transport, leadership, task in started:
        LOOPS.pop(id(leadership), None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await transport.close()


def _kill(leadership: Leadership) -> None:
    """Stop a replica's lease loop without releasing: what a killed process leaves behind."""
    LOOPS[id(leadership)].cancel()


async def test_one_replica_leads_and_the_other_follows(elect: Elect) -> None:
    first, second = await elect(), await elect()
    assert first.is_leader
    assert not second.is_leader
    assert first.token is not None
    assert second.token is None
    await eventually(lambda: second.holder == first.instance, timeout=5)
    assert second.summary() == {
        "leader": False,
        "leader_instance": first.instance,
        "lease_token": None,
    }
    assert await first.confirm()
    assert not await second.confirm()
    # Renewals keep the lease well past its TTL.
    await asyncio.sleep(2.5)
    assert first.is_leader
    assert not second.is_leader


async def test_a_stopping_leader_hands_over_at_once(elect: Elect) -> None:
    changes: list[bool] = []
    first, second = await elect(changes=changes), await elect(ttl=30)
    token = first.token
    assert token is not None
    await first.stop()
    assert changes == [True, False]
    assert not first.is_leader
    await eventually(lambda: second.is_leader, timeout=3)  # long before a 30 s TTL
    assert second.token is not None
    assert second.token > token


async def test_a_dead_leader_is_replaced_after_its_lease_expires(elect: Elect) -> None:
    first, second = await elect(ttl=1.5), await elect(ttl=1.5)
    _kill(first)
    loop = asyncio.get_running_loop()
    died = loop.time()
    await eventually(lambda: second.is_leader, timeout=10)
    assert loop.time() - died < 1.5 + 2.5  # the TTL, a poll, and the server's expiry timer
    # The dead one's own clock has told it to step down by now as well.
    assert not first.is_leader


async def test_a_leader_that_lost_its_lease_steps_down(elect: Elect) -> None:
    changes: list[bool] = []
    first = await elect(ttl=1.5, changes=changes)
    kv = await first.transport.key_value(lease_bucket_of(first))
    usurper = json.dumps({"holder": "someone-else", "token": 1}).encode()
    await kv.put("watcher", usurper)  # an unconditional write: the lease moved on
    await eventually(lambda: changes == [True, False], timeout=5)
    assert not first.is_leader
    assert first.token is None


async def test_a_renewal_written_but_not_answered_keeps_the_lease(elect: Elect) -> None:
    """A renewal that timed out may still have been stored (a slow server, an
    election): the next renewal then meets our own later revision, not a rival."""
    changes: list[bool] = []
    # A 3 s lease (renewed every second): a loaded machine's worker once stalled
    # longer than a 1.5 s lease's renewal interval allows.
    first = await elect(ttl=3.0, changes=changes)
    kv = await first.transport.key_value(lease_bucket_of(first))
    entry = await kv.get("watcher")
    assert entry is not None
    await kv.update("watcher", entry.value, entry.revision)  # the unanswered renewal
    await asyncio.sleep(4.5)  # renewals go on past the TTL
    assert changes == [True]
    assert first.is_leader


async def test_a_lease_loop_cancelled_as_a_renewal_is_answered_ends(
    elect: Elect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancellation arrives in the same loop turn as the renewal's answer.

    Python 3.11's ``asyncio.wait_for`` dropped such a cancellation: the loop
    slept on as a task "cancelling" forever, and the agent's shutdown (here the
    fixture's teardown) waited for it without end.
    """
    leader = await elect(ttl=1.5)
    assert leader.is_leader
    bucket = type(await leader.transport.key_value(lease_bucket_of(leader)))
    renew, loop = bucket.update, LOOPS[id(leader)]

    async def answered_then_cancelled(self: KeyValue, key: str, value: bytes, last: int) -> int:
        revision = await renew(self, key, value, last)
        asyncio.get_running_loop().call_soon(loop.cancel)
        return revision

    monkeypatch.setattr(bucket, "update", answered_then_cancelled)
    done, _ = await asyncio.wait({loop}, timeout=5.0)  # renewed every 0.5 s
    assert loop in done, "the lease loop went on after it was cancelled"
    assert loop.cancelled()


async def test_an_agent_with_a_shorter_lease_does_not_cut_anothers(elect: Elect) -> None:
    """Agents of one namespace share the lease bucket, each with its own lease time:
    one that renews every second must keep its lease after another agent declared
    a lease of 0.6 s (the bucket's age limit is raised, never cut)."""
    changes: list[bool] = []
    slow = await elect(ttl=3.0, changes=changes)
    quick = await elect(ttl=0.6, agent="quick")
    assert quick.is_leader
    await asyncio.sleep(3.5)  # three renewals of the slow lease, each after 0.6 s
    assert changes == [True]
    assert slow.is_leader
    assert quick.is_leader


def lease_bucket_of(leadership: Leadership) -> str:
    assert leadership.bucket.startswith(lease_bucket(""))
    return leadership.bucket
