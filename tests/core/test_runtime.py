"""Running agents: the behaviour contract, on the in-memory bus and on a real NATS alike."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scanflow_agents import (
    Agent,
    BadInput,
    Call,
    CallTimeout,
    Decision,
    ErrorCode,
    Event,
    HandlerFailed,
    NotFound,
    Observation,
    Rejected,
    TemporaryError,
    Unavailable,
    actuator,
    rule,
    sensor,
)
from scanflow_agents.controls import Controls
from scanflow_agents.messages import Envelope, Heartbeat, Reply, new_id
from scanflow_agents.settings import Settings
from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports import KeyValue, Message
from scanflow_agents.transports.nats import NatsTransport


class Watcher(Agent):
    """Watches load and asks the planner to scale when it is high."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.load_value = 50
        self.ticks: list[str] = []

    @sensor(every=3600)
    async def load(self) -> dict[str, int]:
        return {"rps": self.load_value}

    @rule("load")
    async def too_busy(self, observation: Observation) -> Decision | None:
        if observation.value["rps"] <= 100:
            return None
        replicas = observation.value["rps"] // 50
        return Decision(
            action="scale-out",
            reason=f"{observation.value['rps']} rps is over 100",
            evidence={"rps": observation.value["rps"]},
            calls=[Call(agent="planner", actuator="scale", params={"replicas": replicas})],
        )


class Planner(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.executed: list[tuple[str, Any]] = []
        self.attempts = 0

    @actuator()
    async def scale(self, replicas: int, service: str = "digits") -> dict[str, Any]:
        self.executed.append(("scale", replicas))
        return {"service": service, "replicas": replicas}

    @actuator(cooldown=0.3)
    async def redeploy(self, version: int) -> int:
        self.executed.append(("redeploy", version))
        return version

    @actuator(rate=(2, 60))
    async def retrain(self) -> str:
        self.executed.append(("retrain", None))
        return "started"

    @actuator()
    async def slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        self.executed.append(("slow", seconds))
        return seconds

    @actuator()
    async def broken(self) -> None:
        raise RuntimeError("disk full")

    @actuator(timeout=0.1)
    async def hangs(self) -> None:
        await asyncio.sleep(10)

    @actuator(retries=2, backoff=0.01)
    async def flaky(self) -> int:
        self.attempts += 1
        if self.attempts < 3:
            raise TemporaryError("not yet")
        return self.attempts


async def test_rule_calls_remote_actuator_and_chain_is_recorded(bus: str | None) -> None:
    watcher, planner = Watcher(), Planner()
    async with AgentHarness(watcher, planner, nats_url=bus) as h:
        assert await h.run_sensor("watcher", "load") is not None
        assert planner.executed == []  # 50 rps: no decision
        watcher.load_value = 180
        observation = await h.run_sensor("watcher", "load")
        assert observation is not None
        assert planner.executed == [("scale", 3)]
        await h.wait_for(lambda ev: len([e for e in ev if e["kind"] == "action"]) == 1)
        call = h.assert_called("planner", "scale", replicas=3)
        assert call["caller"] == "watcher"
        # One correlation id ties observation → decision → action, in the stream too.
        chain = await h.client.history(correlation_id=observation.correlation_id)
        assert [(r["kind"], r["agent"], r["name"]) for r in chain] == [
            ("observation", "watcher", "load"),
            ("decision", "watcher", "too_busy"),
            ("action", "planner", "scale"),
        ]
        decision = chain[1]["payload"]
        assert decision["evidence"] == {"rps": 180}
        assert chain[2]["payload"]["result"] == {"service": "digits", "replicas": 3}


async def test_redelivered_call_is_answered_from_the_first_result(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        first = await h.call("planner", "scale", replicas=2, call_id="call-1")
        again = await h.call("planner", "scale", replicas=2, call_id="call-1")
        assert first == again == {"service": "digits", "replicas": 2}
        assert planner.executed == [("scale", 2)]
        # Duplicates that arrive while the first is still running wait for it.
        results = await asyncio.gather(
            *(h.call("planner", "slow", seconds=0.1, call_id="call-2") for _ in range(5))
        )
        assert results == [0.1] * 5
        assert planner.executed.count(("slow", 0.1)) == 1
        # A new id is a new call.
        await h.call("planner", "scale", replicas=2, call_id="call-3")
        assert planner.executed.count(("scale", 2)) == 2


class Impatient(Agent):
    """A rule whose planned call gives the callee less time than the action takes."""

    @rule(on="work.slow")
    async def hurry(self, event: Event) -> Decision:
        seconds = event.payload["seconds"]
        call = Call(agent="planner", actuator="slow", params={"seconds": seconds}, timeout=0.5)
        return Decision(action="wait", calls=[call])


@pytest.mark.fake_clock
async def test_a_planned_call_without_answer_is_asked_once_more_and_runs_once(
    bus: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """No answer does not say whether the callee acted; the rule's call is keyed,
    so asking again is safe: here the second ask waits for the run still under way."""
    planner = Planner()
    async with AgentHarness(Impatient(), planner, nats_url=bus) as h:
        with caplog.at_level(logging.INFO, logger="scanflow_agents"):
            await h.emit("work.slow", {"seconds": 0.8})
            await h.wait_for(lambda ev: any(e["kind"] == "action" for e in ev), timeout=10)
            await h.settle()
    assert planner.executed == [("slow", 0.8)]
    assert "asking once more with the same call id" in caplog.text
    assert "failed after" not in caplog.text


class Waiter(Agent):
    """An actuator whose parameter names clash with the client's own keywords."""

    @actuator()
    async def wait(self, timeout: float, dry_run: bool = False) -> dict[str, Any]:
        await asyncio.sleep(timeout)
        return {"waited": timeout, "dry_run": dry_run}


class Relay(Agent):
    @actuator()
    async def relay(self, seconds: float) -> Any:
        return await self.call("waiter", "wait", {"timeout": seconds}, timeout=5)


async def test_parameters_named_like_the_clients_keywords_go_as_a_mapping(
    bus: str | None,
) -> None:
    async with AgentHarness(Waiter(), Relay(), nats_url=bus) as h:
        # From an agent as from a client.
        assert await h.call("relay", "relay", seconds=0.01) == {"waited": 0.01, "dry_run": False}
        # The mapping is the actuator's; the keywords are the call's.
        result = await h.call("waiter", "wait", {"timeout": 0.05, "dry_run": True}, timeout=5)
        assert result == {"waited": 0.05, "dry_run": True}
        # The call's own timeout still applies: an actuator told to wait longer times out.
        with pytest.raises(CallTimeout):
            await h.call("waiter", "wait", {"timeout": 2.0}, timeout=0.2)


async def test_cooldown_rejects_then_allows(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        assert await h.call("planner", "redeploy", version=1) == 1
        with pytest.raises(Rejected, match="cooling down") as info:
            await h.call("planner", "redeploy", version=2)
        assert info.value.code == ErrorCode.REJECTED
        await asyncio.sleep(0.35)
        assert await h.call("planner", "redeploy", version=3) == 3
        assert planner.executed == [("redeploy", 1), ("redeploy", 3)]
        await h.settle()
        refused = [c for c in h.calls("planner", "redeploy") if not c["ok"]]
        assert refused[0]["error"]["code"] == "rejected"


async def test_rate_limit(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        await h.call("planner", "retrain")
        await h.call("planner", "retrain")
        with pytest.raises(Rejected, match="rate limited to 2/60s"):
            await h.call("planner", "retrain")
        assert planner.executed == [("retrain", None)] * 2


async def test_dry_run_records_without_acting(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        result = await h.call("planner", "scale", replicas=4, dry_run=True)
        assert result == {"dry_run": True, "actuator": "scale", "params": {"replicas": 4}}
        assert planner.executed == []
        # Dry-run still validates.
        with pytest.raises(BadInput):
            await h.call("planner", "scale", replicas="many", dry_run=True)
        await h.wait_for(lambda ev: any(e["kind"] == "action" for e in ev))
        assert h.calls("planner", "scale")[0]["dry_run"] is True


async def test_agent_wide_dry_run_setting() -> None:
    settings = Settings.defaults()
    settings.agent.dry_run = True
    planner = Planner()
    async with AgentHarness(planner, settings=settings) as h:
        result = await h.call("planner", "scale", replicas=4)
        assert result["dry_run"] is True
        assert planner.executed == []


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({}, "replicas", "Field required"),
        ({"replicas": "many"}, "replicas", "valid integer"),
        ({"replicas": 2, "colour": "red"}, "colour", "Extra inputs"),
    ],
)
async def test_bad_arguments_are_answered_with_the_field(
    bus: str | None, params: dict[str, Any], field: str, text: str
) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        with pytest.raises(BadInput, match=text) as info:
            await h.call("planner", "scale", **params)
        assert info.value.field == field
        assert "actuator 'scale' of agent 'planner'" in info.value.message
        assert planner.executed == []
        assert await h.call("planner", "scale", replicas=1)  # still serving


class Orphan(Agent):
    """Decides calls that fail: to an agent not running, and a refused one."""

    @sensor(every=3600)
    async def tick(self) -> dict[str, int]:
        return {"n": 1}

    @rule("tick")
    async def act(self, observation: Observation) -> Decision:
        return Decision(
            action="act",
            calls=[
                Call(agent="ghost", actuator="scale", params={"replicas": 2}),
                Call(agent="planner", actuator="retrain"),
                Call(agent="planner", actuator="retrain"),
                Call(agent="planner", actuator="retrain"),
            ],
        )


async def test_a_decisions_failed_call_is_recorded_in_its_chain(bus: str | None) -> None:
    # No agent 'ghost': nothing at a callee would show the call. The third
    # retrain passes the planner's rate (2 a minute): its refusal is the
    # planner's action record, not the caller's.
    settings = Settings.defaults()
    settings.agent.call_timeout = 2
    async with AgentHarness(Orphan(), Planner(), nats_url=bus, settings=settings) as h:
        observation = await h.run_sensor("orphan", "tick")
        await h.settle()

    assert observation is not None
    (decision,) = h.records("decision", "orphan")
    (failed,) = h.records("failed", "orphan")
    assert failed["name"] == "act"
    assert failed["correlation_id"] == observation.correlation_id
    assert failed["causation_id"] == decision["id"]
    payload = failed["payload"]
    assert (payload["agent"], payload["actuator"], payload["error"]["code"]) == (
        "ghost",
        "scale",
        "unavailable",
    )
    assert "no agent 'ghost'" in payload["error"]["message"]
    assert payload["params"] == {"replicas": 2}
    assert [c["ok"] for c in h.calls("planner", "retrain")] == [True, True, False]


async def test_unknown_actuator_and_missing_agent(bus: str | None) -> None:
    async with AgentHarness(Planner(), nats_url=bus) as h:
        with pytest.raises(NotFound, match=r"no actuator 'fly'.*scale"):
            await h.call("planner", "fly")
        with pytest.raises(Unavailable, match="no agent 'ghost' is running"):
            await h.call("ghost", "anything", timeout=2)


async def test_an_unknown_sensor_is_the_same_error_run_locally_or_by_control(
    bus: str | None,
) -> None:
    async with AgentHarness(Watcher(), nats_url=bus) as h:
        with pytest.raises(NotFound) as local:
            await h.run_sensor("watcher", "nope")
        with pytest.raises(NotFound) as remote:
            await Controls(h.client, wait=0.5).run_sensor("watcher", "nope")
    expected = "agent 'watcher' has no sensor 'nope' (sensors: load)"
    assert local.value.message == expected
    assert remote.value.message == expected


async def test_failing_handlers_never_kill_the_agent(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        with pytest.raises(HandlerFailed, match="RuntimeError: disk full"):
            await h.call("planner", "broken")
        with pytest.raises(CallTimeout, match=r"timed out after 0\.1s"):
            await h.call("planner", "hangs")
        assert await h.call("planner", "flaky") == 3  # two temporary failures, then success
        assert await h.call("planner", "scale", replicas=1) == {"service": "digits", "replicas": 1}
        assert planner.runtime.ready


async def test_malformed_messages_get_a_clear_error(bus: str | None) -> None:
    planner = Planner()
    async with AgentHarness(planner, nats_url=bus) as h:
        subject = h.subjects.act("planner", "scale")
        for raw in (b"not json", b'{"kind": "call"}', Envelope(kind="event", source="x").encode()):
            data = await h.client.transport.request(subject, raw, timeout=2)
            reply = Reply.model_validate(Envelope.decode(data).payload)
            assert reply.error is not None
            assert reply.error.code == "bad_message"
            assert "cannot read the call" in reply.error.message
        bad_params = Envelope(kind="call", source="x", payload={"params": [1, 2]}).encode()
        data = await h.client.transport.request(subject, bad_params, timeout=2)
        reply = Reply.model_validate(Envelope.decode(data).payload)
        assert reply.error is not None
        assert (reply.error.code, reply.error.field) == ("bad_input", "params")
        assert await h.call("planner", "scale", replicas=1)


class Sensing(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fired: dict[str, int] = {"fast": 0, "cron": 0, "once": 0}
        self.events: list[Event] = []
        self.seen: list[Any] = []

    @sensor(every=0.05)
    async def fast(self) -> int:
        self.fired["fast"] += 1
        return self.fired["fast"]

    @sensor(cron="* * * * * *")  # every second: the six-field form starts with seconds
    async def cron(self) -> None:
        self.fired["cron"] += 1

    @sensor(on="serving.*.predictions")
    async def predictions(self, event: Event) -> dict[str, Any]:
        self.events.append(event)
        return {"count": event.payload["count"]}

    @rule("predictions")
    async def keep(self, observation: Observation) -> None:
        self.seen.append(observation.value)

    @sensor(every=3600)
    async def fails(self) -> None:
        raise RuntimeError("MLflow unreachable at http://127.0.0.1:1")


async def test_time_triggers_fire(bus: str | None) -> None:
    when = datetime.now(UTC) + timedelta(seconds=0.3)

    class TimedSensing(Sensing):
        @sensor(at=when)
        async def once(self) -> str:
            assert datetime.now(UTC) >= when  # not early
            self.fired["once"] += 1
            return "done"

    agent = TimedSensing()
    async with AgentHarness(agent, nats_url=bus, schedule=True) as h:
        await eventually(
            lambda: (
                agent.fired["fast"] >= 3 and agent.fired["cron"] >= 1 and agent.fired["once"] == 1
            ),
            timeout=3,
        )
        description = await h.client.describe(agent.name)
        sensors = {s.id: s for s in description.sensors}
        assert sensors["fast"].runs >= 3
        assert sensors["fast"].next_run is not None
        assert sensors["once"].last is not None
        assert sensors["once"].last.value == "done"
        assert sensors["predictions"].trigger == "on 'serving.*.predictions'"
    assert agent.fired["once"] == 1


async def test_event_sensor_feeds_rules(bus: str | None) -> None:
    agent = Sensing()
    async with AgentHarness(agent, nats_url=bus) as h:
        sent = await h.emit("serving.digits.predictions", {"count": 7}, source="model-server")
        await h.emit("serving.digits.latency", {"p99": 3})  # another topic: ignored
        await eventually(lambda: bool(agent.seen))
        await h.settle()
        assert agent.seen == [{"count": 7}]
        event = agent.events[0]
        assert (event.topic, event.source, event.correlation_id) == (
            "serving.digits.predictions",
            "model-server",
            sent.correlation_id,
        )


async def test_failing_sensor_is_reported_in_description(bus: str | None) -> None:
    agent = Sensing()
    async with AgentHarness(agent, nats_url=bus) as h:
        assert await h.run_sensor(agent.name, "fails") is None
        description = await h.client.describe(agent.name)
        fails = next(s for s in description.sensors if s.id == "fails")
        assert fails.failures == 1
        assert fails.last is not None
        assert "MLflow unreachable" in str(fails.last.error)
        assert description.state == "running"


async def test_describe_discover_and_heartbeats(bus: str | None) -> None:
    settings = Settings.defaults()
    settings.agent.heartbeat_interval = 0.05
    async with AgentHarness(Watcher(), Planner(), nats_url=bus, settings=settings) as h:
        beats: list[Heartbeat] = []

        async def keep(message: Message) -> None:
            envelope = Envelope.decode(message.data)
            beats.append(Heartbeat.read(envelope.payload, agent=envelope.source))

        await h.client.transport.subscribe(h.subjects.heartbeat("*"), keep)
        description = await h.client.describe("planner")
        actuators = {a.id: a for a in description.actuators}
        assert actuators["scale"].params["required"] == ["replicas"]
        assert actuators["redeploy"].cooldown == 0.3
        assert actuators["retrain"].rate == "2/60s"
        described_watcher = await h.client.describe("watcher")
        assert described_watcher.rules[0].sensors == ("load",)
        found = await h.client.discover()
        assert sorted(beat.agent for beat in found) == ["planner", "watcher"]
        await eventually(lambda: {b.agent for b in beats} == {"planner", "watcher"})
        assert all(b.ready for b in beats)


async def test_describe_raises_the_error_an_agent_answers_with(bus: str | None) -> None:
    # An agent that cannot describe itself answers ok=False: that error, not an
    # empty or unreadable description, is what the caller gets.
    async with AgentHarness(Planner(), nats_url=bus) as h:

        async def refuse(message: Message) -> None:
            answer = Reply(ok=False, error={"code": "unavailable", "message": "disk is gone"})
            reply = Envelope(kind="reply", source="ghost", payload=answer.model_dump())
            await message.respond(reply.encode())

        await h.client.transport.subscribe(h.subjects.describe("ghost"), refuse)
        with pytest.raises(Unavailable, match="disk is gone"):
            await h.client.describe("ghost")


async def test_control_ops_return_once_every_running_replica_answered(bus: str | None) -> None:
    async with AgentHarness(nats_url=bus) as h:
        first, second = Planner(settings=h.settings), Planner(settings=h.settings)
        async with (
            first.running(await h.connect("first"), schedule=False),
            second.running(await h.connect("second"), schedule=False),
        ):
            # Each replica's last state is kept before its start returns.
            kept = await h.client.last_states()
            assert sorted(beat.state for beat in kept if beat.agent == "planner") == [
                "running",
                "running",
            ]
            # Nothing known beforehand, as in a new CLI process: the replicas are
            # counted from their kept states, and nobody waits out `wait`.
            controls = Controls(h.client, wait=600)
            answered = await asyncio.wait_for(controls.pause("planner"), 30)
            assert len({result["instance"] for result in answered}) == 2
            assert controls.replicas == {"planner": 2}
            await asyncio.wait_for(Controls(h.client, wait=600).resume("planner"), 30)


async def test_reading_last_states_of_a_namespace_with_none_makes_no_bucket(
    bus: str | None,
) -> None:
    # `scanflow agents -n typo` must not leave a bucket behind in the typo's name.
    async with AgentHarness(nats_url=bus) as h:
        assert await h.client.last_states() == []
        bucket = h.client.subjects.agents_bucket
        assert await h.client.transport.existing_key_value(bucket) is None


async def test_replicas_share_calls_through_a_queue_group(bus: str | None) -> None:
    one = Planner()
    async with AgentHarness(one, nats_url=bus) as h:
        two = Planner(settings=h.settings)
        other = await h.connect("planner-2")
        async with two.running(other):
            await asyncio.gather(*(h.call("planner", "scale", replicas=i) for i in range(40)))
            assert len(one.executed) + len(two.executed) == 40
            assert one.executed
            assert two.executed


async def test_graceful_stop_answers_in_flight_calls(bus: str | None) -> None:
    async with AgentHarness(nats_url=bus) as h:
        planner = Planner(settings=h.settings)
        runtime = planner.running(await h.connect("planner"))
        await runtime.start()
        pending = asyncio.create_task(h.call("planner", "slow", seconds=0.3))
        await asyncio.sleep(0.1)
        await asyncio.gather(runtime.stop(), runtime.stop())  # idempotent, even concurrently
        assert await pending == 0.3
        assert runtime.state == "stopped"
        with pytest.raises(Unavailable):
            await h.call("planner", "scale", replicas=1, timeout=1)


async def test_pause_skips_sensors_and_rejects_calls(bus: str | None) -> None:
    watcher, planner = Watcher(), Planner()
    async with AgentHarness(watcher, planner, nats_url=bus) as h:
        controls = Controls(h.client, wait=2.0, replicas={"planner": 1, "watcher": 1})
        await controls.pause("planner", reason="maintenance window")
        await controls.pause("watcher")
        with pytest.raises(Rejected, match="paused: maintenance window"):
            await h.call("planner", "scale", replicas=1)
        assert await h.run_sensor("watcher", "load") is None
        assert (await h.client.describe("planner")).state == "paused"
        await controls.resume("planner")
        assert await h.call("planner", "scale", replicas=1)
        assert (await h.client.describe("planner")).state == "running"


class Lifecycle(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []
        self.workflows = {"digits"}

    async def on_start(self) -> None:
        self.calls.append("start")

    async def on_stop(self) -> None:
        self.calls.append("stop")

    @actuator()
    async def scale(self, workflow: str, replicas: int) -> str | None:
        if workflow not in self.workflows:
            raise BadInput(f"no workflow '{workflow}'", field="workflow")
        return self.message_id


async def test_hooks_message_id_and_refusals_raised_by_handlers(bus: str | None) -> None:
    agent = Lifecycle()
    async with AgentHarness(agent, nats_url=bus) as h:
        assert agent.calls == ["start"]
        assert (
            await h.call("lifecycle", "scale", workflow="digits", replicas=1, call_id="c-9")
            == "c-9"
        )
        with pytest.raises(BadInput, match="no workflow 'iris'") as info:
            await h.call("lifecycle", "scale", workflow="iris", replicas=1)
        assert info.value.field == "workflow"
    assert agent.calls == ["start", "stop"]


async def test_failing_start_hook_leaves_nothing_running(bus: str | None) -> None:
    class Broken(Agent):
        async def on_start(self) -> None:
            raise RuntimeError("platform unreachable")

        @actuator()
        async def go(self) -> None:
            return None

    async with AgentHarness(nats_url=bus) as h:
        agent = Broken(settings=h.settings)
        with pytest.raises(RuntimeError, match="platform unreachable"):
            await agent.running(await h.connect("broken")).start()
        with pytest.raises(Unavailable):
            await h.call("broken", "go", timeout=1)


async def test_a_dead_background_loop_makes_the_agent_not_ready(bus: str | None) -> None:
    async with AgentHarness(Planner(), nats_url=bus) as h:
        runtime = h.runtime("planner")
        assert (await h.client.describe("planner")).ready is True

        async def loop_that_dies() -> None:
            raise ConnectionResetError("lost the stream")

        runtime.tasks.spawn(loop_that_dies(), name="probe", endless=True)
        await eventually(lambda: not runtime.ready)
        description = await h.client.describe("planner")
        assert (description.state, description.ready) == ("running", False)
        assert await h.call("planner", "scale", replicas=1)  # still serving, but says so


async def test_stopping_mid_sensor_run_logs_no_error(
    bus: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    # The scheduler's shutdown cancels the job awaiting the run; the run itself
    # goes on and stop() waits for it. That is a clean stop: nothing at ERROR.
    started, finished = asyncio.Event(), asyncio.Event()

    class Slow(Agent, name="slow"):
        @sensor(every=0.05)
        async def measure(self) -> int:
            started.set()
            await asyncio.sleep(0.3)
            finished.set()
            return 1

    caplog.set_level(logging.DEBUG)
    async with AgentHarness(nats_url=bus) as h:
        agent = Slow(settings=h.settings)
        runtime = agent.running(await h.connect("slow"))
        await runtime.start()
        await asyncio.wait_for(started.wait(), 10)
        await runtime.stop()
        assert finished.is_set()  # the run under way finished before the stop ended
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [(r.name, r.getMessage()) for r in errors]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("apscheduler"))


class Keeper(Agent):
    """Keeps values in a key-value bucket of its namespace."""

    async def bucket(self) -> KeyValue:
        return await self.key_value(f"keeper-{self.settings.namespace}")

    @actuator()
    async def remember(self, key: str, value: str) -> int:
        return await (await self.bucket()).put(key, value.encode())

    @actuator(read_only=True)
    async def recall(self, key: str) -> str | None:
        entry = await (await self.bucket()).get(key)
        return None if entry is None else entry.value.decode()


async def test_agent_state_in_key_value_outlives_the_process(nats_url: str) -> None:
    namespace = f"kv-{new_id()[:8]}"
    async with AgentHarness(Keeper(), nats_url=nats_url, namespace=namespace) as h:
        assert await h.call("keeper", "recall", key="model") is None
        assert await h.call("keeper", "remember", key="model", value="v7") >= 1
    # A new process (a restart, or another replica) finds what the first one kept.
    async with AgentHarness(Keeper(), nats_url=nats_url, namespace=namespace) as h:
        assert await h.call("keeper", "recall", key="model") == "v7"
        transport = h.client.transport
        assert isinstance(transport, NatsTransport)
        await transport.js.delete_key_value(f"keeper-{namespace}")
        await transport.js.delete_stream(transport.streams[0].name)
