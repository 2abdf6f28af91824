"""What users declare is what runs: constraints, strict types, read-only actuators, chains.

Each test is one promise of the programming model that once held only in
part; they run on the in-memory bus and on a real NATS alike.
"""

from __future__ import annotations

import enum
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from pydantic import Field

from scanflow_agents import (
    Agent,
    BadInput,
    Call,
    Decision,
    DefinitionError,
    Observation,
    actuator,
    rule,
    sensor,
)
from scanflow_agents.settings import Settings
from scanflow_agents.testing import AgentHarness


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


Workers = Annotated[int, Field(ge=0, le=8, description="between 0 and 8")]


class Limited(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.executed: list[Any] = []

    @actuator
    async def scale(self, workers: Workers) -> int:
        self.executed.append(workers)
        return workers

    @actuator(strict=False)
    async def lenient(self, workers: int) -> int:
        return workers

    @actuator
    async def schedule(
        self, when: datetime, colour: Colour, window: tuple[int, int] = (0, 1)
    ) -> dict[str, Any]:
        assert isinstance(when, datetime)
        assert isinstance(colour, Colour)
        assert isinstance(window, tuple)
        return {"year": when.year, "colour": colour.value, "window": list(window)}

    @actuator(read_only=True)
    async def status(self) -> dict[str, int]:
        return {"executed": len(self.executed)}

    @actuator
    async def described(self, size: int) -> int:
        """Args:
        size: how big, in units
            of one.
        """
        return size


async def test_annotated_constraints_are_validated_and_published(bus: str | None) -> None:
    agent = Limited()
    async with AgentHarness(agent, nats_url=bus) as h:
        with pytest.raises(BadInput, match="greater than or equal to 0") as info:
            await h.call("limited", "scale", workers=-1)
        assert info.value.field == "workers"
        with pytest.raises(BadInput, match="less than or equal to 8"):
            await h.call("limited", "scale", workers=9)
        assert await h.call("limited", "scale", workers=8) == 8
        assert agent.executed == [8]
        described = await h.client.describe("limited")
        scale = described.actuator("scale")
        assert scale is not None
        schema = scale.params
        workers = schema["properties"]["workers"]
        assert (workers["minimum"], workers["maximum"]) == (0, 8)
        assert workers["description"] == "between 0 and 8"


@pytest.mark.parametrize("value", [True, "3", 3.5, None])
async def test_ill_typed_arguments_are_refused(bus: str | None, value: Any) -> None:
    agent = Limited()
    async with AgentHarness(agent, nats_url=bus) as h:
        with pytest.raises(BadInput, match="valid integer") as info:
            await h.call("limited", "scale", workers=value)
        assert info.value.field == "workers"
        assert agent.executed == []


async def test_strict_false_accepts_lax_conversions(bus: str | None) -> None:
    async with AgentHarness(Limited(), nats_url=bus) as h:
        assert await h.call("limited", "lenient", workers="3") == 3
        assert await h.call("limited", "lenient", workers=True) == 1


async def test_json_forms_of_dates_enums_and_tuples_pass_strict_validation(
    bus: str | None,
) -> None:
    agent = Limited()
    async with AgentHarness(agent, nats_url=bus) as h:
        expected = {"year": 2030, "colour": "blue", "window": [2, 5]}
        # As JSON carries them (over the wire, from a client)...
        sent = {"when": "2030-01-02T03:04:05Z", "colour": "blue", "window": [2, 5]}
        assert await h.call("limited", "schedule", sent) == expected
        # ...and as Python values, in a local call from the agent itself.
        local = {"when": datetime(2030, 1, 2, tzinfo=UTC), "colour": Colour.BLUE, "window": (2, 5)}
        assert await agent.call(None, "schedule", local) == expected
        with pytest.raises(BadInput) as info:
            await h.call("limited", "schedule", when="soon", colour="blue")
        assert info.value.field == "when"
        with pytest.raises(BadInput) as info:
            await h.call("limited", "schedule", when="2030-01-02T03:04:05Z", colour="green")
        assert info.value.field == "colour"


async def test_read_only_actuator_runs_under_dry_run_and_is_not_recorded(
    bus: str | None,
) -> None:
    settings = Settings.defaults()
    settings.agent.dry_run = True
    agent = Limited()
    async with AgentHarness(agent, nats_url=bus, settings=settings) as h:
        # The agent-wide dry-run stubs what acts...
        assert (await h.call("limited", "scale", workers=2))["dry_run"] is True
        # ...but a read is answered for real, per call as well.
        assert await h.call("limited", "status") == {"executed": 0}
        assert await h.call("limited", "status", dry_run=True) == {"executed": 0}
        await h.settle()
        assert [c["params"] for c in h.calls("limited")] == [{"workers": 2}]
        described = await h.client.describe("limited")
        status = described.actuator("status")
        assert status is not None
        assert status.read_only


async def test_reads_are_recorded_as_reads_when_the_setting_asks() -> None:
    settings = Settings.defaults()
    settings.agent.record_reads = True
    async with AgentHarness(Limited(), settings=settings) as h:
        await h.call("limited", "status")
        await h.settle()
        (read,) = h.calls("limited", "status")
        assert read["read_only"] is True
        assert read["ok"] is True


class Chained(Agent):
    @sensor(every=3600)
    async def level(self) -> int:
        return 7

    @rule
    async def react(self, observation: Observation) -> Decision:
        return Decision(action="note", calls=[Call(actuator="note", params={"value": 1})])

    @actuator
    async def note(self, value: int) -> int:
        return value


async def test_causation_ids_name_recorded_events(bus: str | None) -> None:
    async with AgentHarness(Chained(), nats_url=bus) as h:
        observation = await h.run_sensor("chained", "level")
        assert observation is not None
        await h.settle()
        chain = await h.client.history(correlation_id=observation.correlation_id)
        by_kind = {record["kind"]: record for record in chain}
        assert set(by_kind) == {"observation", "decision", "action"}
        # The observation the rule received is the one recorded...
        assert by_kind["observation"]["id"] == observation.id
        # ...so observation → decision joins by causation id, not only by correlation.
        assert by_kind["decision"]["causation_id"] == observation.id
        assert by_kind["action"]["payload"]["result"] == 1


def test_bare_decorators_and_their_errors() -> None:
    assert set(Limited.actuators) >= {"scale", "schedule", "status"}  # bare @actuator
    assert Chained.rules["react"].watches_sensor("level")  # bare @rule: every sensor
    with pytest.raises(DefinitionError, match=r"@sensor on .*tick.* needs a trigger: write"):

        class NoTrigger(Agent):
            @sensor
            async def tick(self) -> None:
                return None


def test_var_keyword_error_names_the_double_star() -> None:
    with pytest.raises(DefinitionError, match=r"takes \*\*options: name every parameter"):

        class Bad(Agent):
            @actuator
            async def scale(self, **options: int) -> None:
                return None


def test_docstring_whose_first_line_is_args_keeps_its_descriptions() -> None:
    spec = Limited.actuators["described"]
    assert spec.description == ""  # "Args:" is not a summary
    size = spec.schema()["properties"]["size"]
    assert size["description"] == "how big, in units of one."


class Failing(Agent):
    @sensor(every=3600)
    async def probe(self) -> None:
        raise RuntimeError("MLflow unreachable")


async def test_sensor_failures_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with AgentHarness(Failing()) as h:
        with caplog.at_level(logging.INFO, logger="scanflow_agents"):
            assert await h.run_sensor("failing", "probe") is None
    failures = [r for r in caplog.records if "sensor 'probe'" in r.getMessage()]
    assert [r.levelname for r in failures] == ["WARNING"]
    assert "MLflow unreachable" in failures[0].getMessage()


@pytest.mark.nats
async def test_harness_deletes_the_streams_it_created(nats_url: str) -> None:
    async with AgentHarness(Limited(), nats_url=nats_url) as h:
        await h.call("limited", "scale", workers=1)
        await h.settle()
        probe = h.client.transport
        names = {info.config.name async for info in _streams(probe)}
        assert h.settings.stream_name in names
    async with AgentHarness(nats_url=nats_url) as other:
        names = {info.config.name async for info in _streams(other.client.transport)}
        assert h.settings.stream_name not in names


async def _streams(transport: Any) -> Any:
    for info in await transport.js.streams_info():
        yield info
