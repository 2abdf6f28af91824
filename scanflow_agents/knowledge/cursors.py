"""The position of an incremental reader in an experiment's history.

A cursor answers two questions cheaply: "which runs did I already return?"
and "up to which point did I read each metric of the runs still running?".
It is a small JSON-able dict so the core can persist it (in NATS KV) after
each poll and a restarted agent continues where it stopped.

How runs are found exactly once. Runs are read in ``start_time`` order with a
filter ``start_time >= since - lookback``, where ``since`` is the newest start
time seen. Runs are not always visible in start-time order: a client stamps
``start_time`` itself, before its create request reaches the database, and
clients' clocks differ. The lookback window re-reads the recent past, and the
ids seen inside that window are remembered (``seen``) to drop the repeats.
Ids that fall out of the window are forgotten, so the state stays as small as
the number of runs started during one lookback, whatever the history size. A
run that becomes visible more than ``lookback`` after its start time is missed;
size the lookback to the worst clock skew plus commit delay of the writers.

How metric points are found exactly once. For every run that was not
finished when seen, the cursor keeps, per wanted metric, the newest
``(timestamp, step)`` already returned (a watermark), and the run stays "open"
until a poll sees it in a terminal status. Points logged with a timestamp not
after the watermark (a client writing into the past) are not returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_VERSION = 1


@dataclass
class OpenRun:
    """A run still receiving metric points.

    Attributes:
        start_time: The run's start time (ms), to expire runs that never finish.
        marks: Per metric key, the ``[timestamp, step]`` of the newest point returned.
    """

    start_time: int
    marks: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class RunCursor:
    """Where an :class:`~scanflow_agents.knowledge.readers.IncrementalRunReader` is.

    Attributes:
        since: Newest start time (ms) seen, or None before the first run.
        seen: Ids of runs returned whose start time is inside the lookback window.
        open: Runs returned before they finished, with their metric watermarks.
    """

    since: int | None = None
    seen: dict[str, int] = field(default_factory=dict)
    open: dict[str, OpenRun] = field(default_factory=dict)

    def lower_bound(self, lookback_ms: int) -> int | None:
        """The smallest start time the next search must include."""
        return None if self.since is None else self.since - lookback_ms

    def is_seen(self, run_id: str) -> bool:
        """Whether the run was already returned."""
        return run_id in self.seen

    def see(self, run_id: str, start_time: int) -> None:
        """Remember a returned run and advance ``since``."""
        self.seen[run_id] = start_time
        if self.since is None or start_time > self.since:
            self.since = start_time

    def prune(self, lookback_ms: int, *, now_ms: int, open_ttl_ms: int) -> list[str]:
        """Forget seen ids older than the window and open runs older than the TTL.

        Returns:
            Ids of the open runs given up on (started more than ``open_ttl_ms``
            ago and still not finished: most likely a crashed writer).
        """
        bound = self.lower_bound(lookback_ms)
        if bound is not None:
            self.seen = {rid: start for rid, start in self.seen.items() if start >= bound}
        expired = [rid for rid, run in self.open.items() if now_ms - run.start_time > open_ttl_ms]
        for rid in expired:
            del self.open[rid]
        return expired

    def mark(self, run_id: str, key: str) -> tuple[int, int] | None:
        """The ``(timestamp, step)`` of the newest point returned for a metric."""
        run = self.open.get(run_id)
        found = run.marks.get(key) if run else None
        return (found[0], found[1]) if found else None

    def set_mark(self, run_id: str, key: str, timestamp: int, step: int) -> None:
        """Advance a metric's watermark (only for open runs)."""
        if run_id in self.open:
            self.open[run_id].marks[key] = [timestamp, step]

    def to_dict(self) -> dict[str, Any]:
        """The state as a JSON-able dict."""
        return {
            "version": _VERSION,
            "since": self.since,
            "seen": dict(self.seen),
            "open": {
                rid: {"start_time": run.start_time, "marks": dict(run.marks)}
                for rid, run in self.open.items()
            },
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunCursor:
        """Rebuild a cursor saved with :meth:`to_dict`.

        Raises:
            ValueError: The state was written by an unknown format version.
        """
        if state.get("version") != _VERSION:
            raise ValueError(
                f"run cursor state has version {state.get('version')!r}, expected {_VERSION}"
            )
        return cls(
            since=state["since"],
            seen={str(k): int(v) for k, v in state["seen"].items()},
            open={
                str(rid): OpenRun(
                    int(run["start_time"]),
                    {str(k): [int(m[0]), int(m[1])] for k, m in run["marks"].items()},
                )
                for rid, run in state["open"].items()
            },
        )
