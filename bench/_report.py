"""How every benchmark hands its results over, and the core benchmark's goals and table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(results: dict[str, Any], path: Path, shown: str) -> None:
    """Write ``results`` as JSON to ``path``, then print the table ``shown`` and where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(shown)
    print(f"\nresults written to {path}")


# The performance goals (docs/explanation/benchmarks.md lists them with the results).
MAX_P50_VS_NATS = 1.5
MIN_CALLS_VS_HTTP = 5.0
MAX_REACTION_P99_MS = 25.0
MAX_IDLE_RSS_MIB = 50.0


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the measured value and whether it is met."""
    raw, http = results["raw_nats"], results["http"]
    reaction = results["event_to_actuator"]
    idle = results["memory"]["idle_agent"]
    core = results["memory"]["idle_agent_core_deps_only"]
    heavy = sorted(name for name, loaded in idle["heavy_modules"].items() if loaded)
    calls = []
    for key, mode in (("agents", "stored"), ("agents_sent", "sent")):
        agents = results[key]
        p50_ratio = agents["p50_ms"] / raw["p50_ms"]
        calls_ratio = agents["calls_per_s"] / http["calls_per_s"]
        calls += [
            _goal(f"agent call p50 / raw NATS p50 ({mode})", p50_ratio,
                  f"<= {MAX_P50_VS_NATS}x", p50_ratio <= MAX_P50_VS_NATS),
            _goal(f"agent calls/s / HTTP calls/s ({mode})", calls_ratio,
                  f">= {MIN_CALLS_VS_HTTP}x", calls_ratio >= MIN_CALLS_VS_HTTP),
            _goal(f"action records stored / calls made ({mode})", agents["records_per_call"],
                  "1.0", agents["records_stored"] == agents["calls_made"]),
        ]  # fmt: skip
    return [
        *calls,
        _goal("event -> actuator start p99 ms", reaction["to_actuator_start"]["p99_ms"],
              f"< {MAX_REACTION_P99_MS}", reaction["to_actuator_start"]["p99_ms"]
              < MAX_REACTION_P99_MS),
        _goal("event -> action event p99 ms", reaction["to_action_event"]["p99_ms"],
              f"< {MAX_REACTION_P99_MS}", reaction["to_action_event"]["p99_ms"]
              < MAX_REACTION_P99_MS),
        _goal("idle agent RSS MiB", idle["rss_mib"], f"< {MAX_IDLE_RSS_MIB}",
              idle["rss_mib"] < MAX_IDLE_RSS_MIB),
        _goal("idle agent RSS MiB, core deps only", core["rss_mib"], f"< {MAX_IDLE_RSS_MIB}",
              core["rss_mib"] < MAX_IDLE_RSS_MIB),
        _goal("heavy imports in agent process", ", ".join(heavy) or "none", "none", not heavy),
        _goal("nothing lost in event chain", reaction["lost"], "0", reaction["lost"] == 0),
    ]  # fmt: skip


def _goal(name: str, value: Any, goal: str, met: bool) -> dict[str, Any]:
    shown = round(value, 3) if isinstance(value, float) else value
    return {"name": name, "value": shown, "goal": goal, "pass": met}


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, label in (
        ("raw_nats", "1. raw nats-py request/reply"),
        ("http", "2. HTTP: aiohttp -> FastAPI/uvicorn"),
        ("agents", "3. agent call, reply once record stored"),
        ("agents_sent", "3. agent call, reply once record sent"),
    ):
        r = results[key]
        cpu = f"{r['callee_cpu_us_per_call']:.0f} / {r['caller_cpu_us_per_call']:.0f}"
        rows.append(
            (label, _ms(r["p50_ms"]), _ms(r["p99_ms"]), f"{r['calls_per_s']:,.0f}", cpu, "")
        )
    reaction = results["event_to_actuator"]
    for key, label in (
        ("to_actuator_start", "4. event -> rule -> actuator start"),
        ("to_action_event", "4. event -> ... -> action event seen"),
    ):
        r = reaction[key]
        rows.append((label, _ms(r["p50_ms"]), _ms(r["p99_ms"]), "", "", ""))
    memory = results["memory"]
    for key, label in (
        ("idle_agent", "5. idle agent process (scanflow run)"),
        ("idle_agent_core_deps_only", "5. same, aiohttp not installed"),
    ):
        rss = f"{memory[key]['rss_mib']:.1f} MiB RSS, {memory[key]['uss_mib']:.1f} USS"
        rows.append((label, "", "", "", "", rss))
    for count, host in memory["hosts"].items():
        rss = f"{host['rss_mib']:.1f} MiB RSS"
        rows.append((f"5. one process, {count} agent(s)", "", "", "", "", rss))
    per_agent = f"{memory['per_agent_rss_mib']:.3f} MiB"
    rows.append(("5. each further agent", "", "", "", "", per_agent))
    for replicas in (1, 3):
        r = results["cluster"][f"replicas_{replicas}"]
        cpu = f"{r['callee_cpu_us_per_call']:.0f} / {r['caller_cpu_us_per_call']:.0f}"
        label = (
            f"6. agent call on a 3-server cluster, {replicas} cop{'y' if replicas == 1 else 'ies'}"
        )
        records = f"records {r['records_stored']:,} / calls {r['calls_made']:,}"
        rows.append(
            (label, _ms(r["p50_ms"]), _ms(r["p99_ms"]), f"{r['calls_per_s']:,.0f}", cpu, records)
        )
    return rows


def _render(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """The measurements, then the goals with pass or fail."""
    header = ("what", "p50 ms", "p99 ms", "calls/s", "CPU us/call callee / caller", "memory")
    measured = _render(header, _rows(results))
    goal_rows = [
        (g["name"], str(g["value"]), g["goal"], "PASS" if g["pass"] else "FAIL")
        for g in results["goals"]
    ]
    return measured + "\n\n" + _render(("goal", "measured", "target", "result"), goal_rows)
