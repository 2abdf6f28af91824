"""A shadow agent: a changed policy beside the live one, acting on nothing.

It sees the same events under a name of its own; every call it makes is a dry
run, its decisions say ``"shadow": true``, and what it emits goes under
``shadow.<name>.``, out of the live rules' sight. On the in-memory bus and on
NATS.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from scanflow_agents import (
    Agent,
    Call,
    Decision,
    Event,
    Observation,
    Rejected,
    actuator,
    rule,
    sensor,
)
from scanflow_agents.controls import Controls
from scanflow_agents.diffs import diff_decisions
from scanflow_agents.settings import Settings
from scanflow_agents.testing import AgentHarness, eventually


class Gate(Agent):
    """Scales out above ``threshold`` requests per second, and says it found load."""

    def __init__(self, *, threshold: int = 100, per: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.per = per  # requests per second one replica takes

    @rule(on="load.*")
    async def busy(self, event: Event) -> Decision | None:
        rps = event.payload["rps"]
        if rps <= self.threshold:
            return None
        await self.emit("finding.busy", {"rps": rps, "by": self.name})
        return Decision(
            action="scale-out",
            reason=f"{rps} rps is over {self.threshold}",
            calls=[Call(agent="scaler", actuator="scale", params={"replicas": rps // self.per})],
        )


class Scaler(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.executed: list[int] = []
        self.findings: list[dict[str, Any]] = []

    @actuator()
    async def scale(self, replicas: int) -> int:
        self.executed.append(replicas)
        return replicas

    @rule(on="finding.*")
    async def note(self, event: Event) -> None:
        self.findings.append(event.payload)


class Watch(Agent):
    """Samples the load once an hour (or when told), and scales out above ``threshold``."""

    def __init__(self, *, threshold: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.rps = 0
        self.sampled = 0

    @sensor(every=3600)
    async def load(self) -> dict[str, int]:
        self.sampled += 1
        return {"rps": self.rps}

    @rule("load")
    async def busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        if rps <= self.threshold:
            return None
        calls = [Call(agent="scaler", actuator="scale", params={"replicas": rps // 50})]
        return Decision(action="scale-out", reason=f"{rps} rps", calls=calls)


def _shadow_settings(base: Settings) -> Settings:
    return base.model_copy(update={"agent": base.agent.model_copy(update={"shadow": True})})


async def test_a_shadow_decides_on_the_same_events_and_acts_on_nothing(bus: str | None) -> None:
    scaler = Scaler()
    # The policy under trial scales out from 50 rps, a replica per 40; the
    # live one from 100, a replica per 50.
    shadow = Gate(name="gate-shadow", threshold=50, per=40)
    async with AgentHarness(Gate(), scaler, nats_url=bus) as h:
        shadow.settings = _shadow_settings(h.settings)
        async with shadow.running(await h.connect(shadow.name)):
            await h.emit("load.web", {"rps": 80})  # only the shadow decides
            await h.emit("load.web", {"rps": 200})  # both decide, differently
            await h.emit("load.web", {"rps": 150})  # both decide the same: 3 replicas
            await h.emit("load.web", {"rps": 20})  # neither decides
            await h.wait_for(lambda _: len(h.calls("scaler", "scale")) == 5, timeout=10)
            await shadow.runtime.settle(5)
        await h.settle()

        # Only the live gate's call ran.
        assert scaler.executed == [4, 3]
        calls = h.calls("scaler", "scale")
        assert sorted((c["caller"], c["params"]["replicas"], c["dry_run"]) for c in calls) == [
            ("gate", 3, False),
            ("gate", 4, False),
            ("gate-shadow", 2, True),
            ("gate-shadow", 3, True),
            ("gate-shadow", 5, True),
        ]
        live = h.records("decision", "gate")
        trial = h.records("decision", "gate-shadow")
        assert [d["payload"].get("shadow") for d in live] == [None, None]
        assert [d["payload"]["shadow"] for d in trial] == [True, True, True]
        # Paired on their causes, the events: where the two policies differ.
        diff = diff_decisions(live, trial)
        loads = [e["payload"]["rps"] for e in h.events if e["topic"] == "load.web"]
        assert [(row.status, loads[_event_index(h, row.cause)]) for row in diff.rows] == [
            ("only_shadow", 80),
            ("changed", 200),
            ("same", 150),
        ]
        # The shadow's findings are stored apart: the live rule watching
        # finding.* saw the live gate's only.
        await eventually(lambda: len(scaler.findings) == 2, timeout=5)
        assert scaler.findings == [{"rps": 200, "by": "gate"}, {"rps": 150, "by": "gate"}]
        topics = sorted(e["topic"] for e in h.events if e["payload"].get("by") == "gate-shadow")
        assert topics == ["shadow.gate-shadow.finding.busy"] * 3


def _event_index(h: AgentHarness, event_id: str) -> int:
    loads = [e["id"] for e in h.events if e["topic"] == "load.web"]
    return loads.index(event_id)


async def test_a_shadows_rules_follow_the_live_agents_observations(bus: str | None) -> None:
    live = Watch()
    shadow = Watch(name="watch-shadow", threshold=50)
    async with AgentHarness(live, Scaler(), nats_url=bus) as h:
        shadow.settings = _shadow_settings(h.settings)
        async with shadow.running(await h.connect(shadow.name)):
            for rps in (80, 200):
                live.rps = rps
                await h.run_sensor("watch", "load")
            await h.wait_for(lambda _: len(h.records("decision", "watch-shadow")) == 2, timeout=10)
            await shadow.runtime.settle(5)
        await h.settle()

    # The shadow sampled nothing: its rule ran on the live agent's two
    # observations, and its decisions name them as their causes.
    assert shadow.sampled == 0
    observed = [o["id"] for o in h.records("observation", "watch")]
    assert h.records("observation", "watch-shadow") == []

    def causes(agent: str) -> list[str]:
        return [d["payload"]["trigger"]["observation"] for d in h.records("decision", agent)]

    assert causes("watch-shadow") == observed
    assert causes("watch") == observed[1:]
    statuses = diff_decisions(h.records("decision", "watch"), h.records("decision", "watch-shadow"))
    assert [row.status for row in statuses.rows] == ["only_shadow", "same"]


async def test_a_shadow_stays_in_dry_run(bus: str | None) -> None:
    shadow = Gate(name="gate-shadow")
    async with AgentHarness(Scaler(), nats_url=bus) as h:
        shadow.settings = _shadow_settings(h.settings)
        async with shadow.running(await h.connect(shadow.name)):
            controls = Controls(h.client, wait=2.0, replicas={"gate-shadow": 1})
            with pytest.raises(Rejected, match="'gate-shadow' is a shadow") as refused:
                await controls.dry_run("gate-shadow", False)
            assert await controls.dry_run("gate-shadow", True)  # on stays allowed
            beats = {b.agent: b for b in await h.client.discover(expect=2, wait=2.0)}

    assert "stays in dry-run" in refused.value.message
    assert (beats["gate-shadow"].dry_run, beats["scaler"].dry_run) == (True, False)
    assert (beats["gate-shadow"].shadow_of, beats["scaler"].shadow_of) == ("gate", None)


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        (["--name", "scaler"], "a shadow needs a name of its own, not the live agent's 'scaler'"),
        (["--name", "Bad Name"], "agent name 'Bad Name' must be"),
    ],
)
def test_run_shadow_refuses_the_live_name(arguments: list[str], text: str) -> None:
    from scanflow_agents.runtime.cli import main

    result = CliRunner().invoke(
        main, ["run", "--shadow", *arguments, "examples/quickstart.py:Scaler"]
    )
    assert result.exit_code == 2, result.output
    assert text in " ".join(result.output.split())


async def test_a_shadow_that_would_follow_itself_is_refused_naming_the_fix() -> None:
    shadow = Gate(name="trial")  # not '<live>-shadow', and no shadow_of
    async with AgentHarness(Scaler()) as h:
        shadow.settings = _shadow_settings(h.settings)
        with pytest.raises(ValueError, match="'trial' would follow itself") as refused:
            shadow.running(await h.connect(shadow.name))
        shadow.settings.agent.shadow_of = "gate"
        async with shadow.running(await h.connect(shadow.name)) as runtime:
            assert runtime.consumers.follow == "gate"
    assert "settings.agent.shadow_of" in str(refused.value)
