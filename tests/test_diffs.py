"""Pairing two agents' decisions on their causes (``scanflow_agents.diffs``)."""

from __future__ import annotations

from typing import Any

from scanflow_agents.diffs import diff_decisions


def _decision(
    record_id: str,
    cause: str,
    at: str,
    action: str = "scale-out",
    reason: str = "",
    rule: str = "busy",
    **params: Any,
) -> dict[str, Any]:
    calls = [{"agent": "scaler", "actuator": "scale", "params": params}] if params else []
    return {
        "id": record_id,
        "name": rule,
        "time": f"2026-12-07T10:00:{at}+00:00",
        "payload": {
            "action": action,
            "reason": reason,
            "calls": calls,
            "trigger": {"event": cause, "time": f"2026-12-07T09:59:{at}+00:00"},
        },
    }


def test_pairs_on_rule_and_cause_in_the_order_the_causes_happened() -> None:
    live = [
        _decision("l1", "e2", "02", replicas=4, reason="200 rps is over 100"),
        _decision("l2", "e3", "03", replicas=3),
        _decision("l3", "e4", "04", replicas=2),
        _decision("l4", "e2", "02", rule="log", action="note"),
    ]
    shadow = [
        _decision("s1", "e1", "01", replicas=2),
        _decision("s2", "e2", "02", replicas=5),
        # Worded otherwise, and its params in another order: the same decision.
        _decision("s3", "e3", "03", replicas=3, reason="over 50"),
    ]
    diff = diff_decisions(live, shadow)
    assert [(row.rule, row.cause, row.status) for row in diff.rows] == [
        ("busy", "e1", "only_shadow"),
        ("busy", "e2", "changed"),
        ("log", "e2", "only_live"),
        ("busy", "e3", "same"),
        ("busy", "e4", "only_live"),
    ]
    assert diff.counts() == {"same": 1, "changed": 1, "only_live": 2, "only_shadow": 1}
    changed = diff.rows[1]
    assert changed.live is not None
    assert changed.live.what() == "scale-out: scaler.scale(replicas=4)"
    assert changed.as_json()["shadow"]["calls"] == [
        {"agent": "scaler", "actuator": "scale", "params": {"replicas": 5}}
    ]
    assert [row.status for row in diff.disagreements] == [
        "only_shadow",
        "changed",
        "only_live",
        "only_live",
    ]


def test_calls_with_the_same_params_in_another_order_are_the_same() -> None:
    one = _decision("a", "e1", "01", replicas=3, service="digits")
    other = _decision("b", "e1", "01", service="digits", replicas=3)
    assert diff_decisions([one], [other]).counts()["same"] == 1


def test_a_cause_decided_twice_counts_once() -> None:
    # A redelivered event records its decision under one id; a reader may
    # still see two records of it: the first stands.
    first = _decision("l1", "e1", "01", replicas=4)
    again = _decision("l1", "e1", "05", replicas=4)
    diff = diff_decisions([first, again], [_decision("s1", "e1", "01", replicas=4)])
    assert [(row.status, row.live.id if row.live else None) for row in diff.rows] == [
        ("same", "l1")
    ]


def test_nothing_to_compare() -> None:
    diff = diff_decisions([], [])
    assert diff.rows == []
    assert diff.counts() == {"same": 0, "changed": 0, "only_live": 0, "only_shadow": 0}


def test_a_cause_reads_as_its_sensor_or_its_event() -> None:
    observed = _decision("l1", "o1", "01", replicas=2)
    observed["payload"]["trigger"].update(observation="o1", sensor="request_rate")
    del observed["payload"]["trigger"]["event"]
    event = _decision("l2", "e1", "02", replicas=3)
    event["payload"]["trigger"].update(topic="drift", source="checker")
    unknown = _decision("l3", "e9", "03", replicas=4)  # an older record: only the id
    rows = diff_decisions([observed, event, unknown], []).rows
    assert [row.on for row in rows] == ["request_rate reading", "drift from checker", "e9"]
