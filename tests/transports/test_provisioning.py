"""Streams made at start: a JetStream that is silent for a moment is asked again.

A cluster electing its meta leader, or a server starved of CPU on a busy
machine, leaves JetStream's API unanswered for a few seconds (seen in CI: a
benchmark's stream on a cluster just started, "nats: timeout"). That is no
reason for an agent to fail its start; a server without JetStream is.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import nats
import pytest
from nats.js import api

from scanflow_agents.transports.base import TransportError
from scanflow_agents.transports.provisioning import ensure_stream
from scanflow_agents.transports.servers import NatsServer


async def test_a_stream_is_made_once_jetstream_answers_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with NatsServer() as server:
        assert server.process is not None
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream(timeout=0.3)
            config = api.StreamConfig(name="SILENT", subjects=["silent.>"])
            server.process.send_signal(signal.SIGSTOP)  # the server answers nothing
            try:
                making = asyncio.create_task(ensure_stream(js, config))
                await asyncio.sleep(1.0)  # past two of the API's 0.3 s timeouts
                assert not making.done()
            finally:
                server.process.send_signal(signal.SIGCONT)
            with caplog.at_level(logging.WARNING):
                async with asyncio.timeout(10):
                    info = await making
            assert info.config.name == "SILENT"
            assert (await js.stream_info("SILENT")).config.subjects == ["silent.>"]
        finally:
            await nc.close()
    assert "stream 'SILENT': JetStream did not answer" in caplog.text


async def test_a_server_without_jetstream_is_an_error_at_once() -> None:
    async with NatsServer(args=("--jetstream=false",)) as server:
        nc = await nats.connect(server.url)
        try:
            config = api.StreamConfig(name="NOWHERE", subjects=["nowhere.>"])
            async with asyncio.timeout(3):  # not the 20 s a silent JetStream gets
                with pytest.raises(TransportError, match="cannot create or update stream"):
                    await ensure_stream(nc.jetstream(timeout=2), config)
        finally:
            await nc.close()
