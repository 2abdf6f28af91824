"""The status messages on the wire are models, with the version rule of ``STATUS_VERSION``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from scanflow_agents import BadMessage, IncompatibleVersion
from scanflow_agents.messages import STATUS_VERSION, Description, Heartbeat

# -- the version rule -------------------------------------------------------------------

BEAT: dict[str, Any] = {
    "agent": "checker",
    "class": "agents.Checker",
    "namespace": "default",
    "instance": "5ca1ab1e",
    "state": "running",
    "ready": True,
    "time": "2025-01-01T00:00:00Z",
    "uptime": 12.5,
    "events": {"observation": 3},
    "backlog": 0,
    "leader": True,
    "leader_instance": "5ca1ab1e",
    "lease_token": 7,
    "dry_run": False,
    "paused_sensors": [],
    "approvals": 0,
}


def test_a_message_without_a_version_is_of_version_1() -> None:
    # What agents sent before the field existed: a mixed fleet keeps reading it.
    beat = Heartbeat.read(BEAT, agent="checker")
    assert (beat.v, beat.agent_class, beat.lease_token) == (1, "agents.Checker", 7)
    assert beat.model_dump(mode="json", exclude={"v"}) == BEAT


def test_fields_added_within_a_version_are_ignored_by_readers() -> None:
    newer = {**BEAT, "v": STATUS_VERSION, "temperature": 41, "mood": {"calm": True}}
    assert Heartbeat.read(newer, agent="checker") == Heartbeat.read(BEAT, agent="checker")


def test_another_major_version_is_refused_naming_both_and_what_to_upgrade() -> None:
    with pytest.raises(IncompatibleVersion) as newer:
        Description.read({**BEAT, "v": STATUS_VERSION + 1}, agent="checker")
    assert str(newer.value) == (
        f"agent 'checker' sends description version {STATUS_VERSION + 1}, this side reads "
        f"{STATUS_VERSION}: upgrade scanflow-agents here (the console, CLI or calling agent) "
        f"to a release that reads description version {STATUS_VERSION + 1}"
    )
    assert newer.value.details == {"theirs": STATUS_VERSION + 1, "ours": STATUS_VERSION}
    assert newer.value.agent == "checker"
    assert newer.value.code == "bad_message"
    with pytest.raises(IncompatibleVersion, match="upgrade agent 'checker' to a release that"):
        Heartbeat.read({**BEAT, "v": 0}, agent="checker")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {**BEAT, "uptime": "soon"},
            "uptime: Input should be a valid number, unable to parse string as a number",
        ),
        ({k: v for k, v in BEAT.items() if k != "instance"}, "instance: Field required"),
        ({**BEAT, "v": "2"}, "v: Value error, version 2 is not 1"),
        (["checker"], "list, not an object"),
    ],
)
def test_a_malformed_message_is_one_line_naming_the_agent_and_the_problem(
    value: Any, problem: str
) -> None:
    with pytest.raises(BadMessage) as caught:
        Heartbeat.read(value, agent="checker")
    assert str(caught.value) == f"agent 'checker' sent an unreadable heartbeat: {problem}"
    assert "\n" not in str(caught.value)
    assert caught.value.agent == "checker"


def test_a_misspelt_field_fails_where_the_message_is_built() -> None:
    with pytest.raises(ValidationError, match="redy"):
        Heartbeat.model_validate({**BEAT, "redy": True})
