"""Every stream and bucket keeps ``settings.nats.replicas`` copies, or start-up says why not."""

from __future__ import annotations

import asyncio
import logging
import uuid

import nats
import pytest
from nats.js import api

from scanflow_agents.settings import NatsSettings, Settings
from scanflow_agents.testing import NatsCluster
from scanflow_agents.transports import TransportError
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.streams import StreamSpec


def names() -> tuple[str, list[StreamSpec]]:
    """A new stream's name, and the streams to connect with (that one)."""
    ns = uuid.uuid4().hex[:8]
    return f"R{ns}", [StreamSpec(f"R{ns}", (f"r{ns}.events.>",))]


async def replicas_of(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()
    return info.config.num_replicas or 1


def test_the_replica_count_is_one_setting_with_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCANFLOW_NATS__REPLICAS", "3")
    assert Settings.load().nats.replicas == 3
    assert Settings.load(nats={"replicas": 1}).nats.replicas == 1
    with pytest.raises(ValueError, match="replicas"):
        Settings.load(nats={"replicas": 0})


async def test_replicas_on_one_server_are_a_clear_start_up_error(nats_url: str) -> None:
    _stream, streams = names()
    with pytest.raises(TransportError) as caught:
        await NatsTransport.connect(NatsSettings(url=nats_url, replicas=3), streams=streams)
    message = str(caught.value)
    assert "not part of a JetStream cluster" in message
    assert "SCANFLOW_NATS__REPLICAS=1" in message


async def test_the_stream_and_every_bucket_keep_a_copy_on_each_server(
    nats_cluster: NatsCluster,
) -> None:
    stream, streams = names()
    transport = await NatsTransport.connect(
        NatsSettings(url=nats_cluster.url, replicas=3), streams=streams
    )
    try:
        bucket = f"leases{stream.lower()}"
        await transport.key_value(bucket, ttl=30)
        assert await replicas_of(nats_cluster.urls[0], stream) == 3
        assert await replicas_of(nats_cluster.urls[0], f"KV_{bucket}") == 3
    finally:
        await transport.close()


async def test_a_stream_and_bucket_made_with_one_copy_get_three_at_start(
    nats_cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    stream, streams = names()
    bucket = f"calls{stream.lower()}"
    nc = await nats.connect(nats_cluster.urls[0])
    js = nc.jetstream()
    subjects = list(streams[0].subjects)
    await js.add_stream(api.StreamConfig(name=stream, subjects=subjects, num_replicas=1))
    await js.create_key_value(bucket=bucket, replicas=1)
    await nc.close()

    caplog.set_level(logging.WARNING)
    transport = await NatsTransport.connect(
        NatsSettings(url=nats_cluster.url, replicas=3), streams=streams
    )
    try:
        await transport.key_value(bucket)
        assert await replicas_of(nats_cluster.urls[0], stream) == 3
        assert await replicas_of(nats_cluster.urls[0], f"KV_{bucket}") == 3
    finally:
        await transport.close()
    said = caplog.text
    assert f"stream '{stream}' has 1 replica(s); changing it to 3" in said
    assert f"bucket '{bucket}' has 1 replica(s); changing it to 3" in said


async def test_more_replicas_than_servers_is_a_clear_start_up_error(
    nats_cluster: NatsCluster,
) -> None:
    _stream, streams = names()
    with pytest.raises(TransportError, match="fewer JetStream servers"):
        await NatsTransport.connect(NatsSettings(url=nats_cluster.url, replicas=5), streams=streams)


async def test_a_read_on_any_server_sees_the_last_write_of_a_replicated_bucket(
    nats_cluster: NatsCluster,
) -> None:
    """A write acknowledged by a quorum is read back on every server, at once.

    A follower that has not applied the write yet must not answer the read (a
    claim that lost its create would read the key as free and run a call twice),
    nor a create after a delete (it once failed with "key not found").
    """
    stream, streams = names()
    bucket = f"claims{stream.lower()}"
    transports = [
        await NatsTransport.connect(NatsSettings(url=url, replicas=3), streams=streams)
        for url in nats_cluster.urls
    ]
    try:
        stale: list[tuple[int, bytes | None]] = []
        for i in range(150):
            # Three creates at once, one on each server: exactly one wins, and each
            # loser reads the winner's value back, whichever server it is on.
            value = str(i).encode()
            won = await asyncio.gather(*(t.kv_create(bucket, "k", value) for t in transports))
            assert sorted(won) == [False, False, True], i
            for reader in transports:
                if (seen := await reader.kv_get(bucket, "k")) != value:
                    stale.append((i, seen))
            await transports[i % 3].kv_delete(bucket, "k")
            if await transports[(i + 1) % 3].kv_get(bucket, "k") is not None:
                stale.append((i, b"<not deleted>"))
        assert stale == []
    finally:
        for transport in transports:
            await transport.close()
