"""Defining agents: what decorators record, what the class collects, and definition errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from scanflow_agents import (
    ActuatorSpec,
    Agent,
    Cron,
    DefinitionError,
    Interval,
    Observation,
    OnEvent,
    Rate,
    SensorSpec,
    actuator,
    rule,
    sensor,
)


class Base(Agent):
    @sensor(every=5)
    async def load(self) -> int:
        return 1

    @sensor(cron="*/5 * * * *")
    async def nightly(self) -> None:
        return None

    @rule("load")
    async def busy(self, observation: Observation) -> None:
        return None

    @actuator(cooldown=3, rate="10/m")
    async def scale(self, replicas: int, reason: str = "") -> int:
        """Scale the service.

        Args:
            replicas: how many replicas to run.
            reason: why, for the audit trail.
        """
        return replicas


def test_class_collects_specs_and_names_itself() -> None:
    assert Base.name == "base"
    assert set(Base.sensors) == {"load", "nightly"}
    assert set(Base.rules) == {"busy"}
    assert set(Base.actuators) == {"scale"}
    assert Base.sensors["load"].trigger == Interval(5)
    assert isinstance(Base.sensors["nightly"].trigger, Cron)
    scale = Base.actuators["scale"]
    assert scale.cooldown == 3
    assert scale.rate == Rate(10, 60.0)
    assert scale.description == "Scale the service."


def test_decorators_return_the_function_unchanged() -> None:
    async def probe(self: Agent) -> int:
        return 1

    assert sensor(every=1)(probe) is probe


def test_kebab_case_default_name_and_explicit_name() -> None:
    class DriftWatch(Agent):
        pass

    class Other(Agent, name="custom-name"):
        pass

    assert DriftWatch.name == "drift-watch"
    assert Other.name == "custom-name"


def test_actuator_schema_comes_from_signature_and_docstring() -> None:
    schema = Base.actuators["scale"].schema()
    assert schema["required"] == ["replicas"]
    assert schema["properties"]["replicas"]["type"] == "integer"
    assert schema["properties"]["replicas"]["description"] == "how many replicas to run."
    assert schema["additionalProperties"] is False


def test_subclass_overrides_by_method_and_removes_by_plain_override() -> None:
    class Child(Base):
        @sensor(every=1)
        async def load(self) -> int:  # same method, new trigger
            return 2

        async def nightly(self) -> None:  # redefined without decorator: no longer a sensor
            return None

    assert Child.sensors["load"].trigger == Interval(1)
    assert "nightly" not in Child.sensors
    assert Base.sensors["load"].trigger == Interval(5)  # the parent is untouched
    assert set(Child.actuators) == {"scale"}


def test_subclass_overrides_by_id() -> None:
    class Child(Base):
        @actuator(id="scale")
        async def scale_differently(self, replicas: int) -> int:
            return -replicas

    assert Child.actuators["scale"].fn is Child.scale_differently


def test_plain_specs_without_decorators() -> None:
    async def ping(agent: Agent, times: int = 1) -> str:
        return "pong" * times

    async def tick(agent: Agent) -> int:
        return 1

    agent = Agent(
        name="plain",
        specs=[
            ActuatorSpec(id="ping", fn=ping),
            SensorSpec(id="tick", fn=tick, trigger=Interval(2)),
        ],
    )
    assert set(agent.actuators) == {"ping"}
    assert agent.actuators["ping"].schema()["properties"]["times"]["default"] == 1
    assert agent.sensors["tick"].trigger == Interval(2)
    assert Agent.actuators == {}  # the class is untouched


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: sensor(), "exactly one trigger"),
        (lambda: sensor(every=1, cron="* * * * *"), "exactly one trigger"),
        (lambda: sensor(every=0), "interval must be positive"),
        (lambda: sensor(cron="61 * * * *"), "bad cron expression"),
        (lambda: sensor(cron="* * *"), "bad cron expression"),
        (lambda: sensor(at=datetime(2030, 1, 1)), "needs a time zone"),
        (lambda: sensor(on="a..b"), "bad event topic"),
        (lambda: sensor(every=1, timeout=-1), "timeout must be positive"),
        (lambda: sensor(every=1, errors="sometimes"), "errors must be one of"),  # type: ignore[call-overload]
        (lambda: actuator(rate="often"), "bad rate"),
        (lambda: actuator(cooldown=-1)(_async_noop), "cooldown must not be negative"),
        (lambda: rule(on="x.>.y"), "bad event topic"),
    ],
)
def test_bad_declarations_fail_at_definition(make: object, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        make()  # type: ignore[operator]


async def _async_noop(self: Agent) -> None:
    return None


def test_sync_actuator_is_refused_at_class_creation() -> None:
    with pytest.raises(DefinitionError, match="must be an 'async def'"):

        class Bad(Agent):
            @actuator()  # type: ignore[arg-type]
            def scale(self, replicas: int) -> int:
                return replicas


def test_actuator_with_var_kwargs_is_refused() -> None:
    with pytest.raises(DefinitionError, match="name every parameter"):

        class Bad(Agent):
            @actuator()
            async def scale(self, **kwargs: int) -> None:
                return None


def test_rule_watching_unknown_sensor_is_refused() -> None:
    with pytest.raises(DefinitionError, match="watches unknown sensor 'missing'"):

        class Bad(Agent):
            @rule("missing")
            async def decide(self, observation: Observation) -> None:
                return None


def test_event_sensor_must_take_the_event() -> None:
    with pytest.raises(DefinitionError, match=r"must take \(self, message\)"):

        class Bad(Agent):
            @sensor(on="serving.*")
            async def batch(self) -> None:
                return None


def test_two_handlers_with_one_id_in_one_class_are_refused() -> None:
    with pytest.raises(DefinitionError, match="two actuators with id 'go'"):

        class Bad(Agent):
            @actuator(id="go")
            async def one(self) -> None:
                return None

            @actuator(id="go")
            async def two(self) -> None:
                return None


def test_bad_agent_name_is_refused() -> None:
    with pytest.raises(DefinitionError, match="agent name"):

        class Bad(Agent, name="Not_Valid"):
            pass


def test_triggers_accept_timedelta_cron_with_seconds_and_dates() -> None:
    class Timed(Agent):
        @sensor(every=timedelta(minutes=2))
        async def a(self) -> None:
            return None

        @sensor(cron="*/10 * * * * *")
        async def b(self) -> None:
            return None

        @sensor(at=datetime(2030, 1, 1, tzinfo=UTC))
        async def c(self) -> None:
            return None

        @sensor(on="serving.digits.>")
        async def d(self, event: object) -> None:
            return None

    assert Timed.sensors["a"].trigger == Interval(120)
    assert str(Timed.sensors["b"].trigger) == "cron '*/10 * * * * *' (UTC)"
    assert Timed.sensors["d"].trigger == OnEvent("serving.digits.>")


class Target(BaseModel):
    workflow: str
    node: str


def test_actuator_params_accept_models() -> None:
    class WithModel(Agent):
        @actuator()
        async def redeploy(self, target: Target, model_uri: str) -> str:
            return model_uri

    schema = WithModel.actuators["redeploy"].schema()
    assert "target" in schema["required"]
    assert schema["$defs"]["Target"]["required"] == ["workflow", "node"]
