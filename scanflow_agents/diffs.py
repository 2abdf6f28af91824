"""Two policies' decisions on the same causes, side by side.

A decision record names its cause (``trigger``: the event or observation its
rule ran on). A shadow agent decides on the live agent's very events and
observations (see ``settings.agent.shadow``), so the two agents' decisions
pair exactly on (rule, cause):

- ``same``: both decided the same action with the same calls (the reasons
  may be worded differently: they are shown, not compared);
- ``changed``: both decided, differently;
- ``only_live`` / ``only_shadow``: one decided, the other let the cause pass.

A rule that returns ``None`` records nothing, so a cause on which neither
decided does not appear. A decision on the newest causes may still be on its
way from the slower of the two agents: read a span that ended a few seconds
ago (``until``) for a settled answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["same", "changed", "only_live", "only_shadow"]
STATUSES: tuple[Status, ...] = ("same", "changed", "only_live", "only_shadow")


@dataclass(frozen=True)
class Decided:
    """One agent's decision on a cause: its record id, time, action, reason and calls."""

    id: str
    time: str
    action: str
    reason: str | None
    calls: tuple[tuple[str | None, str, str], ...]  # agent, actuator, params as sorted JSON

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Decided:
        payload = record.get("payload") or {}
        calls = tuple(
            (
                call.get("agent"),
                str(call.get("actuator")),
                json.dumps(call.get("params") or {}, sort_keys=True),
            )
            for call in payload.get("calls") or ()
        )
        return cls(
            id=str(record.get("id")),
            time=str(record.get("time")),
            action=str(payload.get("action")),
            reason=payload.get("reason"),
            calls=calls,
        )

    def what(self) -> str:
        """The action and its calls, as a line: ``scale-out: scaler.scale(replicas=4)``."""
        calls = ", ".join(
            f"{agent or '(self)'}.{actuator}("
            + ", ".join(f"{k}={json.dumps(v)}" for k, v in json.loads(params).items())
            + ")"
            for agent, actuator, params in self.calls
        )
        return f"{self.action}: {calls}" if calls else self.action


@dataclass(frozen=True)
class Difference:
    """The two decisions (or one) on one cause of one rule."""

    status: Status
    rule: str
    cause: str
    trigger: Mapping[str, Any]
    live: Decided | None
    shadow: Decided | None

    @property
    def time(self) -> str:
        """When the cause happened (or, for a record that does not say, the first decision)."""
        cause_time = self.trigger.get("time")
        if cause_time:
            return str(cause_time)
        return min(d.time for d in (self.live, self.shadow) if d is not None)

    @property
    def on(self) -> str:
        """The cause in a few words: the sensor read, or the event's topic and source.

        Tables show this rather than the cause's id (``--json`` has the id).
        """
        if sensor := self.trigger.get("sensor"):
            return f"{sensor} reading"
        if topic := self.trigger.get("topic"):
            source = self.trigger.get("source")
            return f"{topic} from {source}" if source else str(topic)
        return self.cause

    def as_json(self) -> dict[str, Any]:
        def side(decided: Decided | None) -> dict[str, Any] | None:
            if decided is None:
                return None
            return {
                "id": decided.id,
                "time": decided.time,
                "action": decided.action,
                "reason": decided.reason,
                "calls": [
                    {"agent": agent, "actuator": actuator, "params": json.loads(params)}
                    for agent, actuator, params in decided.calls
                ],
            }

        return {
            "status": self.status,
            "rule": self.rule,
            "cause": self.cause,
            "trigger": dict(self.trigger),
            "time": self.time,
            "live": side(self.live),
            "shadow": side(self.shadow),
        }


@dataclass
class DecisionDiff:
    """Every cause either agent decided on, in the order the causes happened, and counts."""

    rows: list[Difference] = field(default_factory=list)

    def counts(self) -> dict[Status, int]:
        found = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            found[row.status] += 1
        return found

    @property
    def disagreements(self) -> list[Difference]:
        return [row for row in self.rows if row.status != "same"]


def _cause(record: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    trigger = (record.get("payload") or {}).get("trigger") or {}
    cause = trigger.get("event") or trigger.get("observation") or record.get("causation_id")
    return str(cause), trigger


def diff_decisions(
    live: Iterable[Mapping[str, Any]], shadow: Iterable[Mapping[str, Any]]
) -> DecisionDiff:
    """Pair two agents' decision records on (rule, cause) and say how each pair differs.

    Args:
        live: the live agent's decision records (as ``Client.history`` returns them).
        shadow: the shadow's, on the same span.
    """
    sides: dict[tuple[str, str], dict[str, Any]] = {}
    for name, records in (("live", live), ("shadow", shadow)):
        for record in records:
            cause, trigger = _cause(record)
            pair = sides.setdefault((str(record.get("name")), cause), {"trigger": trigger})
            # A cause handled twice (a redelivery) records one decision id; the
            # first record stands for it.
            pair.setdefault(name, Decided.of(record))
    rows = []
    for (rule, cause), pair in sides.items():
        before, after = pair.get("live"), pair.get("shadow")
        if before is None:
            status: Status = "only_shadow"
        elif after is None:
            status = "only_live"
        elif (before.action, before.calls) == (after.action, after.calls):
            status = "same"
        else:
            status = "changed"
        rows.append(Difference(status, rule, cause, pair["trigger"], before, after))
    rows.sort(key=lambda row: row.time)
    return DecisionDiff(rows)
