"""The live view: agents alive, what they observe and decide, and where the story is.

On a terminal (and with ``rich`` installed: the ``demo`` extra) the view is
a panel redrawn four times a second. Otherwise (CI, a pipe) it prints one
status line every few seconds and one line per finding, decision or action
as it happens, so a slow step is never a silent wait.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from scanflow_agents.runtime.demo.traffic import Traffic
from scanflow_agents.runtime.demo.watching import EventLog, Seen

#: Seconds between status lines in plain mode.
PLAIN_EVERY = 5.0
#: Event topics shown as they happen (observations are summarised instead).
NOTABLE = ("finding.", "decision.", "action.", "run.")
#: Actuators that only answer questions: not shown, not counted as actions.
QUERIES = ("labelled", "status", "run_status", "wait", "plans")


@dataclass
class Progress:
    """Where the demo is; the runner updates it, the view shows it."""

    started: float = field(default_factory=time.time)
    phase: str = "starting"
    phase_started: float = field(default_factory=time.time)
    seconds: float | None = None  # the phase's planned length (None: a step of unknown length)
    step: str = "starting NATS and MLflow"
    traffic: Traffic | None = None

    def enter(self, phase: str, seconds: float | None, step: str) -> None:
        self.phase, self.seconds, self.step = phase, seconds, step
        self.phase_started = time.time()


def describe_event(event: Seen) -> str:
    """One line for a notable event: who did what, in the payload's own words."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    if event.topic.startswith("decision."):
        return f"{event.source} decides {payload.get('action')}: {payload.get('reason', '')}"
    if event.topic.startswith("action."):
        if event.topic.rsplit(".", 1)[-1] in QUERIES:
            return ""  # a question (how many rows, what status), not an action
        outcome = "ok" if payload.get("ok") else (payload.get("error") or {}).get("code", "failed")
        params = ", ".join(f"{k}={v}" for k, v in (payload.get("params") or {}).items())
        return f"{event.source}.{event.topic.rsplit('.', 1)[-1]}({params[:80]}) → {outcome}"
    if event.topic.startswith("finding."):
        breached = payload.get("breached")
        if breached is False:
            return ""  # an SLO check that passed: shown in the status, not as news
        return f"{event.source} finds {event.topic} {_brief(payload)}"
    return f"{event.topic}"


def _brief(payload: dict[str, Any]) -> str:
    keys = ("statistic", "features_moved", "latency_p95_ms", "objective_ms", "error_rate_now")
    return " ".join(f"{k}={_fmt(payload[k])}" for k in keys if k in payload)


def _fmt(value: Any) -> str:
    if isinstance(value, list) and len(value) > 6:
        return f"{value[:6]} and {len(value) - 6} more"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class View:
    """Shows the demo while it runs; ``run`` until cancelled."""

    def __init__(self, log: EventLog, progress: Progress, *, out: TextIO | None = None) -> None:
        self.log = log
        self.progress = progress
        self.out = out or sys.stdout
        self._shown = 0

    def status(self) -> str:
        """The one-line status: time, phase and its progress, traffic, serving."""
        p, now = self.progress, time.time()
        in_phase = now - p.phase_started
        done = f" {min(1.0, in_phase / p.seconds):4.0%}" if p.seconds else ""
        line = f"[{now - p.started:5.0f}s] {p.phase}{done} ({in_phase:.0f}s) {p.step}"
        records = p.traffic.records if p.traffic else []
        if records:
            recent = records[-200:]
            answered = [r for r in recent if r.prediction is not None]
            acc = np.mean([r.prediction == r.label for r in answered]) if answered else float("nan")
            p95 = np.percentile([r.latency_ms for r in recent], 95)
            line += f" | {len(records)} requests, acc {acc:.2f}, p95 {p95:.0f} ms"
        serving = self._last("observation.tracker.serving")
        if serving is not None:
            value = serving.payload.get("value", serving.payload)
            line += f" | replicas {value.get('replicas')}"
        alive = sorted(a for a, (seen, _) in self.log.heartbeats.items() if now - seen < 15)
        return line + f" | agents: {', '.join(alive) or 'none yet'}"

    def news(self) -> list[str]:
        """Lines for the notable events that arrived since the last call."""
        fresh, self._shown = self.log.events[self._shown :], len(self.log.events)
        lines = []
        for event in fresh:
            if event.topic.startswith(NOTABLE) and (text := describe_event(event)):
                offset = event.time - self.progress.started
                lines.append(f"[{offset:5.0f}s]   {text}")
        return lines

    def _last(self, topic: str) -> Seen | None:
        return next((e for e in reversed(self.log.events) if e.topic == topic), None)

    async def run(self) -> None:
        """Print until cancelled: rich on a terminal, plain lines otherwise."""
        if self.out.isatty():
            try:
                import rich  # noqa: F401
            except ImportError:
                pass
            else:
                await self._rich()
                return
        await self._plain()

    async def _plain(self) -> None:
        last = 0.0
        while True:
            for line in self.news():
                print(line, file=self.out, flush=True)
            if time.monotonic() - last >= PLAIN_EVERY:
                print(self.status(), file=self.out, flush=True)
                last = time.monotonic()
            await asyncio.sleep(0.5)

    async def _rich(self) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.text import Text

        console = Console(file=self.out)
        history: list[str] = []
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                history = (history + self.news())[-12:]
                live.update(Group(Text(self.status(), style="bold"), *map(Text, history)))
                await asyncio.sleep(0.25)
