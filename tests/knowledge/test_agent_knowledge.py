"""Agents with MLflow: incremental sensors, restarts, outages, and the audit trail in MLflow."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from scanflow_agents import Agent, Call, Decision, Observation, Runs, actuator, rule, sensor
from scanflow_agents.audit import mlflow_history
from scanflow_agents.knowledge import KnowledgeClient, MlflowServer, Poll
from scanflow_agents.settings import MlflowSettings, Settings
from scanflow_agents.testing import AgentHarness

EXPERIMENT = f"training-{uuid.uuid4().hex[:8]}"


class Watch(Agent):
    """Reads new training runs; asks for a retraining for each one below 0.9."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.polls: list[list[str]] = []

    @sensor(every=3600, reads=Runs(experiments=(EXPERIMENT,), workflow="digits", node="train"))
    async def trainings(self, poll: Poll) -> dict[str, float] | None:
        self.polls.append([run.run_id for run in poll.runs])
        return {run.run_id: run.metrics.get("accuracy", 0.0) for run in poll.runs} or None

    @rule("trainings")
    async def weak(self, observation: Observation) -> Decision | None:
        weak = sorted(run for run, accuracy in observation.value.items() if accuracy < 0.9)
        if not weak:
            return None
        return Decision(
            action="retrain",
            reason=f"{len(weak)} run(s) below 0.9",
            evidence={"runs": weak},
            calls=[Call(agent="trainer", actuator="retrain", params={"runs": weak})],
        )


class Trainer(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retrained: list[str] = []

    @actuator()
    async def retrain(self, runs: list[str]) -> int:
        self.retrained += runs
        return len(runs)


async def log_run(
    client: KnowledgeClient, accuracy: float, *, node: str = "train", experiment: str = EXPERIMENT
) -> str:
    experiment_id = await client.experiment_id(experiment, create=True)
    assert experiment_id is not None
    run_id = await client.create_run(
        experiment_id, tags={"scanflow.workflow": "digits", "scanflow.node": node}
    )
    await client.log_batch(run_id, metrics=[("accuracy", accuracy, int(time.time() * 1000), 0)])
    await client.end_run(run_id)
    return run_id


def with_mlflow(base: Settings, uri: str, **extra: Any) -> Settings:
    return base.model_copy(
        update={"mlflow": MlflowSettings(tracking_uri=uri, retries=0, timeout=3, **extra)}
    )


async def test_each_new_run_is_seen_once_across_polls_and_restarts(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    settings = with_mlflow(Settings.defaults(), mlflow_server.url)
    async with KnowledgeClient(settings.mlflow) as client:
        trainer = Trainer()
        async with AgentHarness(trainer, nats_url=nats_url, settings=settings) as h:
            first = Watch(settings=h.settings)
            async with first.running(await h.connect("watch-1"), schedule=False):
                weak = await log_run(client, 0.80)
                await log_run(client, 0.95)
                await log_run(client, 0.97, node="serve")  # another node: not read
                await first.runtime.run_sensor("trainings")
                await first.runtime.run_sensor("trainings")  # nothing new: not even called
                assert len(first.polls) == 1
                assert len(first.polls[0]) == 2
                assert trainer.retrained == [weak]
            # A new process of the same agent goes on from the saved cursor.
            second = Watch(settings=h.settings)
            async with second.running(await h.connect("watch-2"), schedule=False):
                assert await second.runtime.run_sensor("trainings") is None
                assert second.polls == []
                newer = await log_run(client, 0.70)
                observation = await second.runtime.run_sensor("trainings")
                assert observation is not None
                assert second.polls == [[newer]]
            assert trainer.retrained == [weak, newer]  # one retraining per weak run, not per poll
            await h.settle()
            decisions = h.records("decision", "watch", "weak")
            assert [d["payload"]["evidence"]["runs"] for d in decisions] == [[weak], [newer]]


def watching(experiment: str) -> type[Watch]:
    """A Watch on its own experiment: servers on PostgreSQL share one database."""

    class OwnWatch(Watch, name="watch"):
        @sensor(every=3600, reads=Runs(experiments=(experiment,)))
        async def trainings(self, poll: Poll) -> dict[str, float] | None:
            return {run.run_id: run.metrics["accuracy"] for run in poll.runs}

    return OwnWatch


async def test_mlflow_down_and_back(make_mlflow_server: Any, nats_url: str) -> None:
    server: MlflowServer = make_mlflow_server()
    server.start()
    settings = with_mlflow(Settings.defaults(), server.url)
    experiment = f"outage-{uuid.uuid4().hex[:8]}"
    async with KnowledgeClient(settings.mlflow) as client:
        first_run = await log_run(client, 0.5, experiment=experiment)
        watch = watching(experiment)()
        async with AgentHarness(watch, Trainer(), nats_url=nats_url, settings=settings) as h:
            await asyncio.to_thread(server.stop)
            assert await h.run_sensor("watch", "trainings") is None
            described = await h.client.describe("watch")
            sensor_state = described.sensors[0]
            assert sensor_state.failures == 1
            assert sensor_state.last is not None
            assert f"MLflow unreachable at {server.url}" in str(sensor_state.last.error)
            assert watch.runtime.ready  # still serving
            await asyncio.to_thread(server.start)
            observation = await h.run_sensor("watch", "trainings")
            assert observation is not None
            assert list(observation.value) == [first_run]  # nothing lost in the outage


async def test_sensors_on_two_tracking_servers_do_not_interfere(
    mlflow_server: MlflowServer, second_mlflow_server: MlflowServer
) -> None:
    experiment = f"shared-name-{uuid.uuid4().hex[:6]}"

    class TwoSources(Agent):
        @sensor(every=3600, reads=Runs(experiments=(experiment,)))
        async def first(self, poll: Poll) -> list[str]:
            return [run.run_id for run in poll.runs]

        @sensor(
            every=3600,
            reads=Runs(experiments=(experiment,), tracking_uri=second_mlflow_server.url),
        )
        async def second(self, poll: Poll) -> list[str]:
            return [run.run_id for run in poll.runs]

    settings = with_mlflow(Settings.defaults(), mlflow_server.url)
    async with (
        KnowledgeClient(settings.mlflow) as one,
        KnowledgeClient(MlflowSettings(tracking_uri=second_mlflow_server.url)) as two,
    ):
        ones = [await log_run(one, 0.9, experiment=experiment) for _ in range(3)]
        twos = [await log_run(two, 0.9, experiment=experiment) for _ in range(2)]
        async with AgentHarness(TwoSources(), settings=settings) as h:
            a, b = await asyncio.gather(
                h.run_sensor("two-sources", "first"), h.run_sensor("two-sources", "second")
            )
            assert a is not None
            assert b is not None
            assert sorted(a.value) == sorted(ones)
            assert sorted(b.value) == sorted(twos)


async def test_audit_chain_reads_back_from_jetstream_and_mlflow(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    settings = with_mlflow(Settings.defaults(), mlflow_server.url, record=True)
    experiment = f"audit-{uuid.uuid4().hex[:8]}"
    async with KnowledgeClient(settings.mlflow) as client:
        watch = watching(experiment)()
        async with AgentHarness(watch, Trainer(), nats_url=nats_url, settings=settings) as h:
            await log_run(client, 0.42, experiment=experiment)
            observation = await h.run_sensor("watch", "trainings")
            assert observation is not None
            chain_id = observation.correlation_id
            from_stream = await h.client.history(correlation_id=chain_id)
        # Leaving the harness flushed the MLflow recorders.
        from_mlflow = await mlflow_history(settings.mlflow, correlation_id=chain_id)
    expected = [
        ("observation", "watch", "trainings"),
        ("decision", "watch", "weak"),
        ("action", "trainer", "retrain"),
    ]
    assert [(r["kind"], r["agent"], r["name"]) for r in from_stream] == expected
    assert [(r["kind"], r["agent"], r["name"]) for r in from_mlflow] == expected
    assert from_mlflow[1]["payload"]["reason"] == "1 run(s) below 0.9"
    assert from_mlflow[2]["payload"]["ok"] is True
    assert [r["id"] for r in from_mlflow] == [r["id"] for r in from_stream]


def test_runs_declaration_errors() -> None:
    from scanflow_agents import DefinitionError

    with pytest.raises(DefinitionError, match="at least one experiment"):
        Runs()
    with pytest.raises(DefinitionError, match="needs a time trigger"):
        sensor(on="x.y", reads=Runs(experiments=("e",)))(Watch.trainings)
    # Untyped callers may pass a lone name: it is one name, not its letters.
    assert Runs(experiments="one").experiments == ("one",)  # type: ignore[arg-type]


async def test_mlflow_catches_up_from_the_stream(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    """Events recorded while MLflow was not written (off, down, a crash) reach it later."""
    quiet = with_mlflow(Settings.defaults(), mlflow_server.url)
    recording = with_mlflow(Settings.defaults(), mlflow_server.url, record=True)
    namespace = f"catch-up-{uuid.uuid4().hex[:6]}"
    first, other = (f"trainer-{uuid.uuid4().hex[:6]}" for _ in range(2))
    async with AgentHarness(
        Trainer(name=first), nats_url=nats_url, settings=quiet, namespace=namespace
    ) as h:
        await h.call(first, "retrain", runs=["a"])
        await h.call(first, "retrain", runs=["b"])
    async with AgentHarness(
        Trainer(name=other), nats_url=nats_url, settings=recording, namespace=namespace
    ) as h:
        await h.call(other, "retrain", runs=["c"])
    history = await mlflow_history(recording.mlflow, agents=[first, other])
    assert [r["payload"]["params"]["runs"] for r in history] == [["c"]]  # only what recorded
    # The first agent, restarted with recording on, copies what the stream holds.
    async with AgentHarness(
        Trainer(name=first), nats_url=nats_url, settings=recording, namespace=namespace
    ):
        pass
    history = await mlflow_history(recording.mlflow, agents=[first])
    assert [r["payload"]["params"]["runs"] for r in history] == [["a"], ["b"]]


async def test_knowledge_polls_and_keeps_cursors_without_a_runtime(
    mlflow_server: MlflowServer,
) -> None:
    from scanflow_agents._core.knowing import Knowledge
    from scanflow_agents.transports.memory import MemoryBroker

    experiment = f"alone-{uuid.uuid4().hex[:8]}"

    class Alone(Agent):
        @sensor(every=3600, reads=Runs(experiments=(experiment,), workflow="digits"))
        async def trainings(self, poll: Poll) -> None:
            return None

    settings = with_mlflow(Settings.defaults(), mlflow_server.url)
    spec = Alone.sensors["trainings"]
    broker = MemoryBroker()
    first = Knowledge("alone", settings, broker.connect(), sinks=[])
    async with KnowledgeClient(settings.mlflow) as client:
        run = await log_run(client, 0.5, experiment=experiment)
        assert [r.run_id for r in (await first.poll(spec)).runs] == [run]
        assert [r.run_id for r in (await first.poll(spec)).runs] == [run]  # not committed yet
        await first.commit(spec)
        assert (await first.poll(spec)).runs == []
        # Another process of the agent resumes from the cursor in the key-value store.
        second = Knowledge("alone", settings, broker.connect(), sinks=[])
        assert (await second.poll(spec)).runs == []
        newer = await log_run(client, 0.6, experiment=experiment)
        assert [r.run_id for r in (await second.poll(spec)).runs] == [newer]
    await first.close()
    await second.close()
