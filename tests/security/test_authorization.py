"""Who may call whom: the receiving agent's allow-list, and NATS permissions that make it hold.

The NATS half runs a real nats-server with ``examples/security/nats-authorization.conf``
itself (the documented example), one NATS user per agent, and tries what a
compromised agent would: call an actuator it is not allowed, take another
agent's calls, read or forge another agent's reply, forge another's record,
take or release another agent's lease, write another's key-value records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.builtin.planner.planner import CHAINS, RUNS

from scanflow_agents import Agent, CallTimeout, Rejected, Settings, actuator
from scanflow_agents._core.leading import lease_bucket
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.reporting import Reporter, subject
from scanflow_agents.serving.stats import ServingStats
from scanflow_agents.testing import AgentHarness
from scanflow_agents.transports import Message, Transport, TransportError
from scanflow_agents.transports.nats import NatsTransport

pytestmark = pytest.mark.timeout(180)

EXAMPLE = Path(__file__).parents[2] / "examples" / "security" / "nats-authorization.conf"
USERS = ("tracker", "checker", "improver", "planner", "serving", "console")


class Planner(Agent, name="planner"):
    @actuator()
    async def scale(self, replicas: int) -> dict[str, int]:
        return {"replicas": replicas}


class Tracker(Agent, name="tracker"):
    @actuator()
    async def dataset(self) -> str:
        return "rows"


class Improver(Agent, name="improver"):
    @actuator()
    async def improve(self) -> str:
        return "planned"


async def test_the_receiving_agent_refuses_callers_not_listed_and_records_it(
    bus: str | None,
) -> None:
    settings = Settings.load(agent={"allow": {"scale": ["improver"], "tracker.*": ["*"]}})
    agents = [Planner(), Improver(), Tracker()]
    async with AgentHarness(*agents, nats_url=bus, settings=settings) as h:
        improver, tracker = agents[1], agents[2]
        assert await improver.call("planner", "scale", replicas=2) == {"replicas": 2}
        with pytest.raises(Rejected) as refused:
            await tracker.call("planner", "scale", replicas=9)
        assert "caller 'tracker' is not allowed (agent.allow['scale']: improver)" in str(
            refused.value
        )
        assert await improver.call("tracker", "dataset") == "rows"  # "tracker.*": anyone
        await h.settle()
        h.assert_called("planner", "scale", replicas=2)
        records = h.records("action", "planner", "scale")
        assert [(r["payload"]["caller"], r["payload"]["ok"]) for r in records] == [
            ("improver", True),
            ("tracker", False),
        ]
        assert records[1]["payload"]["error"]["code"] == "rejected"


PASSWORDS = {user: f"{user}-pw-{index}" for index, user in enumerate(USERS)}


@pytest.fixture
def authorized_nats(serve_nats: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A nats-server running the documented example configuration, passwords from the env."""
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", password)
    server = serve_nats(EXAMPLE.read_text())
    url: str = server.url
    return url


def settings_of(url: str, user: str) -> Settings:
    return Settings.load(
        namespace="default",
        nats={
            "url": url,
            "user": user,
            "password": PASSWORDS[user],
            "inbox_prefix": f"_INBOX.{user}",
            "connect_timeout": 3,
        },
        agent={"allow": {"planner.*": ["improver", "client"]}},
    )


@contextlib.asynccontextmanager
async def running(agent: Agent, url: str) -> AsyncIterator[Transport]:
    settings = settings_of(url, agent.name)
    agent.settings = settings
    transport = await connect_transport(settings, name=agent.name)
    try:
        async with agent.running(transport, schedule=False):
            yield transport
    finally:
        await transport.close()


async def test_nats_permissions_make_the_caller_unforgeable(
    authorized_nats: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = authorized_nats
    planner, tracker, improver = Planner(), Tracker(), Improver()
    async with (
        running(planner, url),
        running(tracker, url) as tracker_bus,
        running(improver, url),
    ):
        # Allowed: the improver calls the planner and the tracker.
        assert await improver.call("planner", "scale", replicas=3) == {"replicas": 3}
        assert await improver.call("tracker", "dataset") == "rows"
        # The tracker may not publish on the planner's call subjects: the server drops the
        # call (the caller times out), and the planner never sees it, whatever the envelope says.
        with pytest.raises(CallTimeout):
            await tracker.call("planner", "scale", replicas=99, timeout=1.5)
        assert planner.runtime.dispatcher.executions == {"scale": 1}

        # Nor take the planner's calls, read the improver's replies, forge a reply to the
        # improver, or write a record in the planner's name.
        stolen: list[bytes] = []

        async def keep(message: Message) -> None:
            stolen.append(message.data)

        await tracker_bus.subscribe("scanflow.default.planner.act.*", keep)
        await tracker_bus.subscribe("_INBOX.improver.>", keep)
        await tracker_bus.publish("_INBOX.improver.forged", b'{"ok": true}')
        forged = {"kind": "event", "source": "planner", "payload": {"caller": "tracker"}}
        await tracker_bus.publish(
            "scanflow.default.events.action.planner.scale", json.dumps(forged).encode()
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tracker_bus.flush(), 2)
        assert await improver.call("planner", "scale", replicas=4) == {"replicas": 4}
        # A keyed call (the kind rules make) claims its key in the planner's own part of
        # the call store and records that it started; the repeat is answered, not re-run.
        for _ in range(2):
            reply = await improver.runtime.call("planner", "scale", {"replicas": 5}, call_id="k-1")
            assert reply == {"replicas": 5}
        assert planner.runtime.dispatcher.executions == {"scale": 3}
        await asyncio.sleep(0.3)
        assert stolen == []
        # Each attempt was refused by the server, not merely unanswered.
        refused = {
            r.getMessage().split("violation for ", 1)[1]
            for r in caplog.records
            if "NATS connection tracker" in r.getMessage() and "violation" in r.getMessage()
        }
        assert refused >= {
            'publish to "scanflow.default.planner.act.scale"',
            'subscription to "scanflow.default.planner.act.*"',
            'subscription to "_inbox.improver.>"',
            'publish to "_inbox.improver.forged"',
            'publish to "scanflow.default.events.action.planner.scale"',
        }, refused

    # People (user "console", source "client") read the audit trail: only the planner's
    # own records are in it, with the improver as the caller.
    async with Client.connect(settings_of(url, "console")) as client:
        records = await client.history(agent="planner")
        # The chain index (a copy of each record under its correlation id) is allowed too.
        chain = await client.history(correlation_id=records[0]["correlation_id"])
    assert [(r["payload"]["caller"], r["payload"]["params"]) for r in records] == [
        ("improver", {"replicas": 3}),
        ("improver", {"replicas": 4}),
        ("improver", {"replicas": 5}),
    ]
    assert [r["id"] for r in chain] == [records[0]["id"]]
    # Only the tracker's attempts above were refused: the planner's and the improver's
    # own work (records, call store, leases) is all within their permissions.
    others = [
        r.getMessage()
        for r in caplog.records
        if "violation" in r.getMessage() and "NATS connection tracker" not in r.getMessage()
    ]
    assert others == []


async def test_each_agent_writes_only_its_own_lease_and_buckets(
    authorized_nats: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = authorized_nats
    leases, runs, chains = lease_bucket("default"), f"{RUNS}-default", f"{CHAINS}-default"
    planner, tracker = Planner(), Tracker()
    async with running(planner, url) as planner_bus, running(tracker, url) as tracker_bus:
        # Each took its own lease at start, as its own NATS user.
        assert planner.runtime.leadership.is_leader
        assert tracker.runtime.leadership.is_leader
        # The planner keeps its runs and their chains; the tracker its sensor cursors.
        await planner_bus.kv_put(runs, "run.r1", b'{"run": 1}')
        await planner_bus.kv_put(chains, "run.r1", b'["c1"]')
        assert await planner_bus.kv_get(runs, "run.r1") == b'{"run": 1}'
        assert await planner_bus.kv_get(chains, "run.r1") == b'["c1"]'
        await tracker_bus.kv_put("scanflow-cursors-default", "tracker.watch", b"{}")

        # The tracker can read the planner's lease, but neither take it, release it,
        # nor write the planner's runs or cursors: the server refuses each.
        held = await tracker_bus.kv_get(leases, "planner")
        assert held is not None
        assert b"holder" in held
        attempts = (
            tracker_bus.kv_put(leases, "planner", b'{"holder": "tracker"}'),
            tracker_bus.kv_delete(leases, "planner"),
            tracker_bus.kv_put(runs, "run.r1", b"{}"),
            tracker_bus.kv_put("scanflow-cursors-default", "planner.watch", b"{}"),
        )
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(o, TransportError) for o in outcomes), outcomes

        # Each keeps its last state under its own keys, which people read;
        # another agent's keys are refused, as for the approvals kept.
        await planner.runtime.announcer.announce()
        await tracker.runtime.announcer.announce()
        async with Client.connect(settings_of(url, "console")) as people:
            kept = {(b.agent, b.state) for b in await people.last_states()}
        assert kept == {("planner", "running"), ("tracker", "running")}
        forged = await asyncio.gather(
            tracker_bus.kv_put("scanflow_default_agents", "planner.x", b"{}"),
            tracker_bus.kv_put("scanflow_default_approvals", "planner.x", b"{}"),
            return_exceptions=True,
        )
        assert all(isinstance(o, TransportError) for o in forged), forged

        # The planner still holds its lease, unchanged; its run record is intact.
        assert await planner.runtime.leadership.confirm()
        assert await tracker_bus.kv_get(leases, "planner") == held
        assert await planner_bus.kv_get(runs, "run.r1") == b'{"run": 1}'
        refused = {
            r.getMessage().split("violation for ", 1)[1].lower()
            for r in caplog.records
            if "NATS connection tracker" in r.getMessage() and "violation" in r.getMessage()
        }
        assert refused >= {
            'publish to "$kv.scanflow-leases-default.planner"',
            'publish to "$kv.scanflow-cursors-default.planner.watch"',
        }, refused


async def test_a_model_servers_reports_reach_the_telemetry_stream_as_the_serving_user(
    authorized_nats: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The pods the planner makes connect as the serving user (the chart's
    # natsAuthorization.servingUser): its reports must be stored where the tracker reads.
    tracker = await connect_transport(settings_of(authorized_nats, "tracker"), name="tracker")
    try:
        monkeypatch.setenv("SCANFLOW_NATS__USER", "serving")
        monkeypatch.setenv("SCANFLOW_NATS__PASSWORD", PASSWORDS["serving"])
        config = ServingConfig(
            model_uri="models:/digits/1", nats_url=authorized_nats, namespace="default",
            workflow="serve", node="model", report_interval=3600, probe=False,
        )  # fmt: skip
        async with Reporter(config, ServingStats()) as reporter:
            await reporter.report()
        stream = Settings.load(namespace="default").telemetry_stream_name
        assert isinstance(tracker, NatsTransport)
        # Read back as the tracker reads: a consumer on the telemetry stream (a fetch waits).
        reader = await tracker.js.pull_subscribe(subject(config), stream=stream)
        (stored,) = await reader.fetch(1, timeout=10)
        assert json.loads(stored.data)["payload"]["node"] == "model"
        assert "Permissions Violation" not in caplog.text
    finally:
        await tracker.close()
