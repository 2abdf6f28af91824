"""The console prompt's grammar, completion and argument checks (no terminal needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.runtime.arguments import check_params
from scanflow_agents.runtime.console.commands import (
    CommandError,
    TypedHistory,
    complete,
    parse,
)
from scanflow_agents.runtime.feeds import EventFilter

from scanflow_agents.errors import BadInput
from scanflow_agents.messages import ActuatorStatus, Description, SensorStatus

SCHEMA = {
    "properties": {
        "replicas": {"type": "integer", "minimum": 0, "description": "how many"},
        "service": {"type": "string", "default": "digits"},
        "model": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["replicas"],
}


def described(actuators: dict[str, dict[str, Any]], sensors: list[str]) -> Description:
    """A description with these actuators (by parameter schema) and sensors, and no more."""
    return Description(
        agent="scaler",
        agent_class="tests.Scaler",
        namespace="default",
        instance="5ca1e5",
        state="running",
        ready=True,
        time=datetime.now(UTC),
        uptime=1.0,
        events={},
        backlog=0,
        leader=True,
        dry_run=False,
        approvals=0,
        sensors=tuple(
            SensorStatus(id=s, description="", trigger="every 1s", runs=0, failures=0, skipped=0)
            for s in sensors
        ),
        rules=(),
        actuators=tuple(
            ActuatorStatus(
                id=a,
                description="",
                params=schema,
                cooldown=0.0,
                idempotent=False,
                read_only=False,
                executions=0,
            )
            for a, schema in actuators.items()
        ),
    )


AGENTS = {"scaler": described({"scale": SCHEMA, "stop": {}}, ["load"]), "gate": None}


def test_parse_keeps_words_and_json_parameters() -> None:
    command = parse("call scaler scale replicas=3 service=web flags='[1, 2]'")
    assert command.verb == "call"
    assert command.words == ("scaler", "scale")
    assert command.params == {"replicas": 3, "service": "web", "flags": [1, 2]}
    with pytest.raises(CommandError, match="unknown command 'scael'"):
        parse("scael scaler")
    with pytest.raises(BadInput, match="'5' is not key=value") as caught:
        parse("call scaler scale 5")  # not a word skipped in silence
    assert caught.value.field == "5"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"replicas": "lots"}, "replicas", "expected integer, got str 'lots'"),
        ({"replicas": True}, "replicas", "expected integer, got a boolean"),
        ({"replicas": -1}, "replicas", "-1 breaks minimum 0"),
        ({}, "replicas", "argument 'replicas' is required"),
        ({"replicas": 1, "colour": "red"}, "colour", "unknown argument 'colour'"),
        ({"replicas": 1, "model": 7}, "model", "expected string"),
    ],
)
def test_arguments_are_checked_and_the_field_named(
    params: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        check_params(SCHEMA, params)
    assert caught.value.field == field


def test_good_arguments_pass() -> None:
    check_params(SCHEMA, {"replicas": 2, "model": None})
    check_params(SCHEMA, {"replicas": 2, "model": "models:/digits/2"})


@pytest.mark.parametrize(
    ("line", "completed"),
    [
        ("ca", "call "),
        ("call s", "call scaler "),
        ("call scaler sc", "call scaler scale "),
        ("call scaler scale r", "call scaler scale replicas="),
        ("call scaler scale replicas=2 s", "call scaler scale replicas=2 service="),
        ("pause scaler l", "pause scaler load "),
        ("dry-run gate o", "dry-run gate on "),
        ("call nobody x", None),
    ],
)
def test_completion(line: str, completed: str | None) -> None:
    assert complete(line, AGENTS) == completed


def test_typed_history_survives_sessions(tmp_path: Path) -> None:
    path = tmp_path / "state" / "console-history"
    first = TypedHistory(path)
    first.add("pause scaler")
    first.add("pause scaler")  # a repeat is kept once
    first.add("approvals")
    assert TypedHistory(path).lines == ["pause scaler", "approvals"]


def test_event_filters() -> None:
    wanted = EventFilter.parse("agent=checker kind=decision,action drift")
    record = {"agent": "checker", "kind": "decision", "topic": "decision.checker.drift"}
    assert wanted.matches(record)
    assert not wanted.matches({**record, "agent": "tracker"})
    assert str(wanted) == "agent=checker kind=decision,action drift"
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        EventFilter.parse("colour=red")
