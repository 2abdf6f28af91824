"""A storm of malformed envelopes (generated with hypothesis) against a real agent process.

The agent runs as ``scanflow run`` would run it in production, on the session's
nats-server. Every message that asks for a reply gets the right error code,
the agent serves normally afterwards, and its log stays short: warnings of one
kind are rate-limited and the next one says how many were held back.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scanflow_agents import Settings
from scanflow_agents.clients import Client
from scanflow_agents.messages import Envelope
from scanflow_agents.testing import die_with_parent

pytestmark = pytest.mark.timeout(240)

AGENT = """
from scanflow_agents import Agent, actuator
from scanflow_agents.testing import die_with_parent


class Storm(Agent, name="storm"):
    @actuator()
    async def echo(self, text: str) -> str:
        return text
"""

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
PARAMS = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=30)}),  # the only valid form
    st.fixed_dictionaries({"text": JSON}),
    st.dictionaries(st.sampled_from(["text", "other", "timeout"]), JSON, max_size=3),
    JSON,
)
ENVELOPES = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, 0]),
        "kind": st.sampled_from(["call", "call", "call", "event", "reply", "nonsense"]),
        "source": st.text(min_size=1, max_size=20),
        "payload": st.one_of(st.fixed_dictionaries({"params": PARAMS}), JSON),
    }
).map(lambda envelope: json.dumps(envelope).encode())
MESSAGES = st.tuples(
    st.sampled_from(["echo", "echo", "echo", "missing"]),
    st.one_of(
        ENVELOPES, ENVELOPES, st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())
    ),
    st.booleans(),  # ask for a reply
)


def expected(actuator: str, data: bytes) -> str:
    """The code the agent must answer with, worked out independently of its dispatcher."""
    try:
        envelope = Envelope.decode(data)
    except ValidationError:
        return "bad_message"
    if envelope.v != 1 or envelope.kind != "call":
        return "bad_message"
    if actuator != "echo":
        return "not_found"
    payload = envelope.payload if isinstance(envelope.payload, dict) else {}
    params = payload.get("params", {})
    if isinstance(params, dict) and set(params) == {"text"} and isinstance(params["text"], str):
        return "ok"
    return "bad_input"


def generate(count: int) -> list[tuple[str, bytes, bool]]:
    found: list[tuple[str, bytes, bool]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(MESSAGES)
    def collect(message: tuple[str, bytes, bool]) -> None:
        found.append(message)

    collect()
    return found


def start_agent(nats_url: str, namespace: str, file: Path, log: IO[str]) -> subprocess.Popen[str]:
    """``scanflow run`` of the agent file, warnings of one kind at most every 2 s."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scanflow_agents.runtime",
            "--nats",
            nats_url,
            "-n",
            namespace,
            "--warn-every",
            "2",
            "run",
            str(file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )


async def test_a_storm_of_malformed_calls(nats_url: str, tmp_path: Path) -> None:
    namespace = f"storm-{uuid.uuid4().hex[:8]}"
    (tmp_path / "storm.py").write_text(AGENT)
    log = (tmp_path / "agent.log").open("w")
    process = start_agent(nats_url, namespace, tmp_path / "storm.py", log)
    try:
        client_settings = Settings.load(namespace=namespace, nats={"url": nats_url})
        async with Client.connect(client_settings) as client:
            await client.wait_for_agents(["storm"], timeout=30)
            messages = generate(1500) * 2  # each twice: redeliveries of malformed input too
            nc = await nats.connect(nats_url)
            try:
                answers = await storm(nc, namespace, messages)
            finally:
                await nc.close()
            wrong = [(code, want, data[:80]) for (code, want, data) in answers if code != want]
            assert wrong == [], wrong[:10]
            asked = sum(1 for _, _, reply in messages if reply)
            assert len(answers) == asked
            codes = Counter(code for code, _, _ in answers)
            assert codes["bad_message"] > 500, codes  # the storm is mostly malformed
            # Serving normally afterwards.
            assert await client.call("storm", "echo", text="still here") == "still here"
            # One more malformed call after the interval: its warning counts those held back.
            await asyncio.sleep(2.2)
            nc = await nats.connect(nats_url)
            try:
                await nc.request(f"scanflow.{namespace}.storm.act.echo", b"not json", timeout=10)
            finally:
                await nc.close()
            await asyncio.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        stopped = process.wait(30)
        log.close()
    lines = (tmp_path / "agent.log").read_text().splitlines()
    assert stopped == 0, "\n".join(lines[-30:])
    malformed = [line for line in lines if "got a malformed call" in line]
    held = sum(
        int(m.replace(",", "")) for m in re.findall(r"\(([\d,]+) more since", "\n".join(malformed))
    )
    sent = sum(1 for actuator, data, _ in messages if expected(actuator, data) == "bad_message")
    # Every malformed call is accounted for: shown, or counted in a later line.
    assert len(malformed) + held == sent + 1, (len(malformed), held, sent)
    assert held > 0
    assert len(lines) < 40, "\n".join(lines[:60])


async def storm(
    nc: Any, namespace: str, messages: list[tuple[str, bytes, bool]]
) -> list[tuple[str, str, bytes]]:
    """Send every message at once (200 in flight); the code of each reply, with the expected one."""
    gate = asyncio.Semaphore(200)
    answers: list[tuple[str, str, bytes]] = []

    async def one(actuator: str, data: bytes, reply: bool) -> None:
        subject = f"scanflow.{namespace}.storm.act.{actuator}"
        async with gate:
            if not reply:
                await nc.publish(subject, data)
                return
            response = await nc.request(subject, data, timeout=60)
        body = json.loads(response.data)["payload"]
        code = "ok" if body["ok"] else body["error"]["code"]
        answers.append((code, expected(actuator, data), data))

    started = time.monotonic()
    await asyncio.gather(*(one(*message) for message in messages))
    assert time.monotonic() - started < 120
    return answers
