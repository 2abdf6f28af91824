"""Policy replay: an agent's rules run again on its recorded history, without acting.

The history is recorded by the test itself, on the in-memory bus and on NATS,
and read back as ``scanflow history --export`` reads it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from scanflow_agents import Agent, Call, Decision, Observation, actuator, clocks, rule, sensor
from scanflow_agents.knowledge import KnowledgeClient
from scanflow_agents.replaying import check_determinism, replay
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import AgentHarness, assert_replays

LOADS = [50, 120, 90, 150, 30, 110]


class Watch(Agent):
    """Scales out above ``threshold`` requests per second, a replica per 50."""

    threshold = 100

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loads = list(LOADS)

    @sensor(every=3600)
    async def load(self) -> dict[str, int]:
        return {"rps": self.loads.pop(0)}

    @sensor(every=3600, publish=False)
    async def queue(self) -> int:
        return 0

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        if rps <= self.threshold:
            return None
        calls = [Call(agent="scaler", actuator="scale", params={"replicas": rps // 50})]
        return Decision(action="scale-out", reason=f"{rps} rps", calls=calls)

    @rule("queue")
    async def backlog(self, observation: Observation) -> None:
        return None


class EagerWatch(Watch, name="watch"):
    """The same agent, scaling out from 80."""

    threshold = 80


class StampedWatch(Watch, name="watch"):
    """Writes the time into its call: a rule that reads the wall clock."""

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        if rps <= self.threshold:
            return None
        params = {"replicas": rps // 50, "at": time.time()}
        return Decision(
            action="scale-out", calls=[Call(agent="scaler", actuator="scale", params=params)]
        )


class Scaler(Agent):
    @actuator()
    async def scale(self, replicas: int, at: float | None = None) -> dict[str, int]:
        return {"replicas": replicas}


async def _recorded(watch: Watch, bus: str | None) -> list[dict[str, Any]]:
    async with AgentHarness(watch, Scaler(), nats_url=bus) as h:
        for _ in LOADS:
            await h.run_sensor("watch", "load")
        await h.settle()
        return await h.client.history(kinds=None)


async def test_an_unchanged_agent_replays_its_own_history_with_no_difference(
    bus: str | None,
) -> None:
    history = await _recorded(Watch(), bus)
    result = await replay(Watch(), history)
    assert result.observations == len(LOADS)
    assert result.counts() == {"same": 3, "changed": 0, "removed": 0, "added": 0}
    assert result.new_calls == []
    assert result.counterfactual_from is None
    assert check_determinism(Watch(), result) == []
    # The sensor whose observations are not recorded is named, with its rule.
    assert result.unreplayable == {"queue": ["backlog"]}


async def test_a_changed_threshold_adds_the_decisions_it_crosses_and_no_others(
    bus: str | None,
) -> None:
    history = await _recorded(Watch(), bus)
    result = await replay(EagerWatch(), history)
    # 90 rps is the one load between 80 and 100: the one new decision.
    assert result.counts() == {"same": 3, "changed": 0, "removed": 0, "added": 1}
    (added,) = result.differences
    assert added.difference.trigger["sensor"] == "load"
    assert added.as_json()["replayed"]["calls"] == [
        {"agent": "scaler", "actuator": "scale", "params": {"replicas": 1}}
    ]
    # Its call was not made then: answered with a stub, and listed.
    assert [(c.agent, c.actuator, dict(c.params)) for c in result.new_calls] == [
        ("scaler", "scale", {"replicas": 1})
    ]
    # From that scale-out on, what was observed is no longer what would have been.
    assert result.counterfactual_from == added.difference.time
    later = [
        row.counterfactual for row in result.rows if row.difference.time > added.difference.time
    ]
    assert later == [True, True]
    assert not added.counterfactual


async def test_a_rule_that_reads_the_wall_clock_is_named(bus: str | None) -> None:
    history = await _recorded(StampedWatch(), bus)
    result = await replay(StampedWatch(), history)
    assert result.counts()["changed"] == 3
    (found,) = check_determinism(StampedWatch(), result)
    assert found.rule == "busy"
    assert found.suspects == ("the wall clock",)
    assert "reads the wall clock" in str(found)


async def test_assert_replays_passes_a_deterministic_agent_and_names_a_clock_reader() -> None:
    assert (await assert_replays(Watch(), await _recorded(Watch(), None))).counts()["same"] == 3
    history = await _recorded(StampedWatch(), None)
    with pytest.raises(AssertionError, match=r"rule 'busy' decided otherwise .* the wall clock"):
        await assert_replays(StampedWatch(), history)


class Reporting(Watch, name="watch"):
    """Emits a finding on every busy load, and asks MLflow on every other one."""

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        if observation.value["rps"] > self.threshold:
            await self.emit("finding.busy", {"rps": observation.value["rps"]})
            decided: Decision | None = await Watch.busy(self, observation)
            return decided
        assert self.knowledge is not None  # a replay gives no MLflow: this raises
        return None


async def test_emits_are_kept_and_a_rule_that_needs_mlflow_is_counted_failed() -> None:
    result = await replay(Reporting(), await _recorded(Watch(), None))
    assert result.emitted == [("finding.busy", {"rps": rps}) for rps in (120, 150, 110)]
    assert result.counts() == {"same": 3, "changed": 0, "removed": 0, "added": 0}
    assert result.failures == {"busy": 3}  # 50, 90 and 30 rps: it asked MLflow
    assert result.as_json()["failures"] == {"busy": 3}


async def test_a_replay_refuses_an_mlflow_client_that_can_write() -> None:
    settings = MlflowSettings(tracking_uri="http://127.0.0.1:9")  # never reached
    async with KnowledgeClient(settings) as writer:
        with pytest.raises(ValueError, match="read_only=True"):
            await replay(Reporting(), [], knowledge=writer)


async def test_every_call_made_then_is_answered_from_its_record() -> None:
    asked: list[Any] = []
    history = await _recorded(Watch(), None)
    actions = [r["payload"]["result"] for r in history if r["kind"] == "action"]
    assert actions == [{"replicas": 2}, {"replicas": 3}, {"replicas": 2}]
    result = await replay(Watch(), history, answers=lambda *call: asked.append(call))
    assert result.new_calls == []
    assert asked == []  # the stub is for new calls only


class AskingWatch(Watch, name="watch"):
    """Asks the scaler from its own code how many replicas run, then decides on the answer."""

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        running = await self.call("scaler", "scale", replicas=rps // 50, at=None)
        if running["replicas"] < 2:
            return None
        return Decision(action="noted", reason=f"{running['replicas']} for {rps} rps")


async def test_a_call_from_a_rules_own_code_is_answered_from_its_record(bus: str | None) -> None:
    """Its id was random then: it is found by its chain, target and parameters."""
    history = await _recorded(AskingWatch(), bus)
    assert len([r for r in history if r["kind"] == "action"]) == len(LOADS)
    same = await assert_replays(AskingWatch(), history)
    assert same.new_calls == []
    assert same.counts()["same"] == 3  # 120, 150 and 110 rps: 2 replicas or more
    # Changed parameters are a call not made then: the stub answers it.
    doubled = await replay(
        Doubling(), history, answers=lambda *call: {"replicas": call[2]["replicas"]}
    )
    assert len(doubled.new_calls) == len(LOADS)


class Doubling(AskingWatch, name="watch"):
    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        doubled = Observation.model_validate(
            {**observation.model_dump(), "value": {"rps": 2 * observation.value["rps"]}}
        )
        decided: Decision | None = await AskingWatch.busy(self, doubled)
        return decided


class TimingWatch(Watch, name="watch"):
    """Notes how long its scale-out took, on the clock a replay sets."""

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        started = clocks.wall()
        await self.call("scaler", "scale", replicas=observation.value["rps"] // 50, at=None)
        took = clocks.wall() - started
        return Decision(action="scaled-slowly" if took >= 0.2 else "scaled-at-once")


class SlowScaler(Scaler, name="scaler"):
    @actuator()
    async def scale(self, replicas: int, at: float | None = None) -> dict[str, int]:
        await asyncio.sleep(0.25)
        return {"replicas": replicas}


async def test_a_call_answered_from_its_record_takes_as_long_as_it_took_then() -> None:
    async with AgentHarness(TimingWatch(), SlowScaler()) as h:
        for _ in LOADS:
            await h.run_sensor("watch", "load")
        await h.settle()
        history = await h.client.history(kinds=None)
    assert {d["payload"]["action"] for d in history if d["kind"] == "decision"} == {"scaled-slowly"}
    same = await assert_replays(TimingWatch(), history)
    assert same.counts()["same"] == len(LOADS)


async def _cli(*arguments: str) -> Result:
    """A command run as the user would run it, in a thread: it runs its own event loop."""
    from scanflow_agents.runtime.cli import main

    return await asyncio.to_thread(CliRunner().invoke, main, list(arguments))


async def test_history_export_then_replay_from_the_command_line(
    nats_url: str, tmp_path: Path
) -> None:
    """The two commands as a user runs them: a span exported to a file, replayed from it."""
    exported, eager = str(tmp_path / "history.jsonl"), f"{__file__}:EagerWatch"
    async with AgentHarness(Watch(), Scaler(), nats_url=nats_url) as h:
        for _ in LOADS:
            await h.run_sensor("watch", "load")
        await h.settle()
        where = ("--nats", nats_url, "-n", h.namespace)
        export = await _cli(*where, "history", "--export", exported)
        assert export.exit_code == 0, export.output
        # From the stream, as from the file: the same replay.
        live = await _cli(*where, "replay", eager, "--json")
    assert "record(s) written to" in export.output
    lines = (await asyncio.to_thread(Path(exported).read_text)).splitlines()
    assert {json.loads(line)["kind"] for line in lines} >= {"observation", "decision", "action"}

    replayed = await _cli("replay", eager, "--file", exported, "--json")
    assert replayed.exit_code == 0, replayed.output
    found = json.loads(replayed.output)
    assert found["counts"] == {"same": 3, "changed": 0, "removed": 0, "added": 1}
    assert [c["params"] for c in found["new_calls"]] == [{"replicas": 1}]
    assert found["unreplayable"] == {"queue": ["backlog"]}
    assert json.loads(live.output)["counts"] == found["counts"]

    # --since bounds the file's span as it bounds the stream's.
    observed = sorted(r["time"] for r in map(json.loads, lines) if r["kind"] == "observation")
    later = await _cli("replay", eager, "--file", exported, "--since", observed[3], "--json")
    assert json.loads(later.output)["observations"] == len(LOADS) - 3

    table = (await _cli("replay", eager, "--file", exported)).output
    assert "scaler.scale(replicas=1)" in table
    assert "0 changed, 0 removed, 1 added" in table
    assert "not replayed: sensor 'queue'" in table

    # Unchanged, with the determinism check: nothing to report, exit 0.
    same = await _cli("replay", f"{__file__}:Watch", "--file", exported, "--check-determinism")
    assert same.exit_code == 0, same.output
    assert "not deterministic" not in same.output


async def test_a_wall_clock_rule_fails_the_determinism_check(nats_url: str, tmp_path: Path) -> None:
    exported = str(tmp_path / "history.jsonl")
    async with AgentHarness(StampedWatch(), Scaler(), nats_url=nats_url) as h:
        for _ in LOADS:
            await h.run_sensor("watch", "load")
        await h.settle()
        assert (
            await _cli("--nats", nats_url, "-n", h.namespace, "history", "--export", exported)
        ).exit_code == 0
    checked = await _cli(
        "replay", f"{__file__}:StampedWatch", "--file", exported, "--check-determinism"
    )
    assert checked.exit_code == 1, checked.output
    assert "not deterministic: rule 'busy' decided otherwise on" in checked.output
    assert "it reads the wall clock" in checked.output


def test_a_file_that_is_not_history_is_refused_with_the_line(tmp_path: Path) -> None:
    from scanflow_agents.runtime.cli import main

    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"kind": "observation", "time": "2026-12-07T10:00:00+00:00"}\nhello\n')
    result = CliRunner().invoke(main, ["replay", f"{__file__}:Watch", "--file", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: not a JSON record" in result.output
    wrong = CliRunner().invoke(
        main, ["replay", f"{__file__}:Watch", "--answer", "scale=3", "--file", str(bad)]
    )
    assert wrong.exit_code == 2
    assert "AGENT.ACTUATOR=JSON" in wrong.output
    missing = CliRunner().invoke(main, ["replay", f"{__file__}:Watch", "--file", "nowhere.jsonl"])
    assert missing.exit_code == 1
    assert "cannot read nowhere.jsonl: No such file or directory" in missing.output
