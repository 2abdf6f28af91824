"""The core benchmark runs end to end and reports every section.

Only that it works is checked here: how fast is the benchmark's business, so
its goals are not asserted (a loaded CI machine must not fail the suite).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CORE = Path(__file__).resolve().parents[2] / "bench" / "core.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "core.json"
    run = subprocess.run(
        [sys.executable, str(CORE), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, f"bench/core.py --quick failed:\n{run.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(480)
@pytest.mark.parametrize("section", ["raw_nats", "http", "agents", "agents_sent"])
def test_request_reply_sections_have_latency_and_throughput(
    results: dict[str, Any], section: str
) -> None:
    measured = results[section]
    for key in ("p50_ms", "p99_ms", "calls_per_s"):
        assert measured[key] > 0, f"{section}.{key} = {measured[key]!r}"
    assert measured["p99_ms"] >= measured["p50_ms"]


@pytest.mark.timeout(480)
@pytest.mark.parametrize("section", ["agents", "agents_sent"])
def test_agent_ratios_are_reported(results: dict[str, Any], section: str) -> None:
    assert results[section]["p50_vs_raw_nats"] > 0
    assert results[section]["calls_per_s_vs_http"] > 0
    assert results[section]["calls_per_s_vs_raw_nats"] > 0


@pytest.mark.timeout(480)
@pytest.mark.parametrize("section", ["agents", "agents_sent"])
def test_every_agent_call_has_its_record_in_the_stream(
    results: dict[str, Any], section: str
) -> None:
    # Not a speed: a reply is sent only once its action record is stored (or,
    # with reply_after "sent", on its way), and every record ends up stored.
    agents = results[section]
    assert agents["records_stored"] == agents["calls_made"] > 0
    assert agents["callee_cpu_us_per_call"] > 0


@pytest.mark.timeout(480)
@pytest.mark.parametrize("replicas", [1, 3])
def test_the_cluster_line_stores_every_record_with_one_and_three_copies(
    results: dict[str, Any], replicas: int
) -> None:
    agents = results["cluster"][f"replicas_{replicas}"]
    assert agents["records_stored"] == agents["calls_made"] > 0
    assert agents["p50_ms"] > 0


@pytest.mark.timeout(480)
def test_event_chain_reaches_the_remote_actuator(results: dict[str, Any]) -> None:
    reaction = results["event_to_actuator"]
    assert reaction["lost"] < reaction["events"]
    for key in ("to_actuator_start", "to_action_event"):
        assert reaction[key]["p50_ms"] > 0
        assert reaction[key]["p99_ms"] > 0


@pytest.mark.timeout(480)
def test_memory_of_idle_agents_and_hosts(results: dict[str, Any]) -> None:
    memory = results["memory"]
    for key in ("idle_agent", "idle_agent_core_deps_only"):
        assert memory[key]["rss_mib"] > 0
        assert set(memory[key]["heavy_modules"]) >= {"numpy", "mlflow", "kubernetes"}
    assert sorted(memory["hosts"], key=int) == ["1", "10", "50"]
    assert all(host["rss_mib"] > 0 for host in memory["hosts"].values())


@pytest.mark.timeout(480)
def test_every_goal_has_a_verdict(results: dict[str, Any]) -> None:
    assert results["goals"]
    assert all(isinstance(goal["pass"], bool) for goal in results["goals"])
