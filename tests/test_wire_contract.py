"""The status messages on the wire are models: what agents send validates, readers use attributes.

Three parts:

- the version rule of :data:`~scanflow_agents.messages.STATUS_VERSION`, on the
  models alone;
- what a running agent sends (its heartbeats, its answers to discovery and
  ``describe``, its approval listing) validates into the models *strictly*
  (nothing missing, nothing the contract does not name) and dumps back to the
  same JSON, on the in-memory bus and on a real nats-server;
- nothing under ``runtime/`` reads a field of these messages by string key.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from scanflow_agents import (
    Agent,
    BadMessage,
    Decision,
    IncompatibleVersion,
    Observation,
    actuator,
    rule,
    sensor,
)
from scanflow_agents.messages import (
    STATUS_VERSION,
    ActuatorStatus,
    ApprovalListing,
    ConsumerStatus,
    Description,
    Envelope,
    Heartbeat,
    LastRun,
    PendingApproval,
    Reply,
    RuleStatus,
    SensorStatus,
)
from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports import Message

ROOT = Path(__file__).resolve().parents[1]

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
    "unstored": None,
    "leader": True,
    "leader_instance": "5ca1ab1e",
    "lease_token": 7,
    "dry_run": False,
    "frozen": False,
    "paused_sensors": [],
    "approvals": 0,
}


def test_a_message_without_a_version_is_of_version_1() -> None:
    # What agents sent before the field existed: a mixed fleet keeps reading it.
    beat = Heartbeat.read(BEAT, agent="checker")
    assert (beat.v, beat.agent_class, beat.lease_token) == (1, "agents.Checker", 7)
    # A field added since within the version (shadow_of) takes its default.
    assert beat.shadow_of is None
    assert beat.model_dump(mode="json", exclude={"v", "shadow_of"}) == BEAT


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


# -- what a running agent sends ---------------------------------------------------------


class Gate(Agent):
    """A sensor, a rule that holds its decision for a person, an actuator with parameters."""

    @sensor(every=3600.0)
    async def candidate(self) -> dict[str, str]:
        """A model version to deploy."""
        return {"model": "models:/digits/7"}

    @rule("candidate")
    async def hold(self, observation: Observation) -> Decision:
        async def deploy(reason: str) -> None:
            return None

        self.approvals.hold("deploy", "deploy models:/digits/7", deploy, timeout=60)
        return Decision(action="hold", reason="a person decides")

    @actuator(cooldown=1.0, rate="5/m")
    async def scale(self, replicas: int, service: str = "digits") -> int:
        """Scale a service.

        Args:
            replicas: how many.
            service: which one.
        """
        return replicas


def _strict(model: type[BaseModel], payload: Any) -> BaseModel:
    """``payload`` as ``model``, refusing any field the contract does not name."""
    read = model.model_validate(payload)  # the models forbid extras unless told otherwise
    assert read.model_dump(mode="json") == payload  # and it is all that was sent
    return read


async def _ask(h: AgentHarness, subject: str, payload: Any = None) -> Any:
    envelope = Envelope(kind="call", source="test", payload=payload)
    data = await h.client.transport.request(subject, envelope.encode(), 5.0)
    reply = Reply.model_validate(Envelope.decode(data).payload)
    assert reply.ok, reply.error
    return reply.result


async def test_what_an_agent_sends_is_the_contract_exactly(bus: str | None) -> None:
    async with AgentHarness(Gate(), nats_url=bus, schedule=True) as h:
        beats: list[Any] = []

        async def keep(message: Message) -> None:
            beats.append(Envelope.decode(message.data).payload)

        await h.client.transport.subscribe(h.subjects.heartbeat("gate"), keep)
        await h.run_sensor("gate", "candidate")
        await h.settle()
        await eventually(lambda: bool(beats), timeout=10)

        beat = _strict(Heartbeat, beats[-1])
        assert isinstance(beat, Heartbeat)
        envelope = Envelope(kind="describe", source="test")
        (answer,) = await h.client.transport.gather(h.subjects.discover, envelope.encode(), 0.3)
        _strict(Heartbeat, Reply.model_validate(Envelope.decode(answer).payload).result)

        described = _strict(Description, await _ask(h, h.subjects.describe("gate")))
        assert isinstance(described, Description)
        (candidate,) = described.sensors
        assert candidate.last is not None
        assert candidate.last.value == {"model": "models:/digits/7"}
        assert described.rules[0].last_decision == Decision(
            action="hold", reason="a person decides"
        )
        scale = described.actuator("scale")
        assert scale is not None
        assert [p.name for p in scale.parameters()] == ["replicas", "service"]
        assert (scale.cooldown, scale.rate) == (1.0, "5/60s")

        listing = _strict(ApprovalListing, await _ask(h, h.subjects.control("gate", "approvals")))
        assert isinstance(listing, ApprovalListing)
        (waiting,) = listing.approvals
        assert (waiting.agent, waiting.kind) == ("gate", "deploy")
        assert waiting.expires_in_s is not None
        assert 0 < waiting.expires_in_s <= 60
        assert listing.instance == described.instance == beat.instance


# -- nobody under runtime/ reads these messages by string key -----------------------------

MODELS: tuple[type[BaseModel], ...] = (
    Heartbeat,
    Description,
    SensorStatus,
    LastRun,
    RuleStatus,
    ActuatorStatus,
    ConsumerStatus,
    ApprovalListing,
    PendingApproval,
)
# Field names that other data read under runtime/ is keyed by too: event records (id,
# time, kind, agent, correlation_id), their payloads (value, ok, error, details, params,
# dry_run), control-op results (instance, summary, skipped), the command line's options
# (namespace), the demo's service status (state), the console's set of changed panes
# (events). A read of one of these counts only on a value whose name says it is a
# status message (SUSPECT).
SHARED = {
    "id", "time", "kind", "agent", "correlation_id", "value", "ok", "error", "details",
    "params", "dry_run", "instance", "summary", "skipped", "namespace", "state", "events",
}  # fmt: skip
SUSPECT = re.compile(
    r"heartbeat|beat\b|describ|approval|listing|replica|spec\b|sensor|rule|actuator|last\b"
)


def status_fields() -> set[str]:
    names = set()
    for model in MODELS:
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
    return names


def string_key_reads(path: Path) -> Iterator[tuple[int, str, str]]:
    """``x["k"]``, ``x.get("k")`` and ``"k" in x``: (line, key, the source of ``x``)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
        ):
            key, value = node.slice.value, node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            key, value = node.args[0].value, node.func.value
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.ops[0], ast.In | ast.NotIn)
        ):
            key, value = node.left.value, node.comparators[0]
        else:
            continue
        if isinstance(key, str):
            yield node.lineno, key, ast.unparse(value)


def status_reads(root: Path) -> list[str]:
    """Where ``root`` reads a status message's field by string key (a heuristic, see below).

    A read counts when its key is a field of the status models that nothing else
    under runtime/ is keyed by, or a field they share (``SHARED``) read on a value
    whose name says what it is (``SUSPECT``). What escapes it: a shared field read
    on a value named otherwise (``r["agent"]``). mypy is the other half of the
    guard: the client, the link and the controls hand out models, which have no
    string keys to read.
    """
    fields = status_fields()
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, key, value in string_key_reads(path):
            if key in fields and (key not in SHARED or SUSPECT.search(value)):
                found.append(f"{path.relative_to(root)}:{line}: {value}[{key!r}]")
    return found


def test_the_heuristic_finds_the_reads_it_is_meant_to(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(
        'described["sensors"]\n'
        'heartbeat.get("state")\n'
        '"agent" in beat\n'
        'spec["id"]\n'
        'record["time"]\n'  # an event record: not a status message
        'payload.get("value")\n'
    )
    assert status_reads(tmp_path) == [
        "probe.py:1: described['sensors']",
        "probe.py:2: heartbeat['state']",
        "probe.py:3: beat['agent']",
        "probe.py:4: spec['id']",
    ]


def test_runtime_reads_no_status_field_by_string_key() -> None:
    assert status_reads(ROOT / "runtime") == []
