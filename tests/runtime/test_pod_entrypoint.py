"""``scanflow run --http-port``: probes, metrics and the SIGTERM order, in real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from scanflow_agents.runtime.loading import load_agent_classes
from scanflow_agents.runtime.metering import PrometheusInstruments
from scanflow_agents.runtime.probing import Probes

from scanflow_agents import Agent, BadInput, Settings, actuator
from scanflow_agents.clients import Client
from scanflow_agents.testing import die_with_parent, eventually, free_port
from scanflow_agents.transports.memory import MemoryBroker

ROOT = Path(__file__).resolve().parents[2]
SCANFLOW = [sys.executable, "-m", "scanflow_agents.runtime"]

AGENT = textwrap.dedent(
    """
    import asyncio
    from scanflow_agents import Agent, Call, Decision, actuator, rule, sensor

    class Pod(Agent):
        @sensor(every=0.2)
        async def tick(self) -> int:
            return 1

        @rule("tick")
        async def act(self, observation):
            return Decision(action="note", calls=[Call(actuator="note", params={})])

        @actuator()
        async def note(self) -> str:
            return "noted"

        @actuator()
        async def slow(self, seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "done"

        @actuator()
        async def config(self) -> dict:
            return self.settings.agent_config(self.name)
    """
)


def _get(port: int, path: str) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _has(metrics: str, name: str, labels: dict[str, str]) -> bool:
    try:
        _sample(metrics, name, **labels)
    except AssertionError:
        return False
    return True


def _wait_ready(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the agent process did not become ready")


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and found == wanted:
            return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}} in:\n{metrics}")


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "pod_agent.py"
    path.write_text(AGENT)
    return path


def test_probes_metrics_and_sigterm_order(agent_file: Path, nats_url: str) -> None:
    namespace = f"pod-{uuid.uuid4().hex[:6]}"
    port = free_port()
    command = ["--nats", nats_url, "-n", namespace, "run", f"{agent_file}:Pod"]
    process = subprocess.Popen(
        [*SCANFLOW, *command, "--http-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        _wait_ready(port, process)
        status, body = _get(port, "/livez")
        assert status == 200
        assert json.loads(body) == {"alive": True, "broken_loops": []}
        status, body = _get(port, "/readyz")
        assert json.loads(body)["agents"] == {"pod": "ready"}

        settings = Settings.load(namespace=namespace, nats={"url": nats_url})
        results: dict[str, Any] = {}

        async def calls() -> None:
            async with Client.connect(settings) as client:
                with pytest.raises(BadInput, match="seconds"):
                    await client.call("pod", "slow", seconds="long")
                # A call in flight when SIGTERM arrives is still answered.
                results["slow"] = await client.call("pod", "slow", seconds=5.0, timeout=30)

        thread = threading.Thread(target=lambda: asyncio.run(calls()))
        thread.start()
        # Each counter moves on its own (a decision is counted before the call it
        # makes ends): wait until every one the test reads has moved.
        ok = {"agent": "pod", "actuator": "note", "outcome": "ok"}
        bad = {"agent": "pod", "actuator": "slow", "outcome": "bad_input"}
        wanted = [
            ("scanflow_rule_decisions_total", {"agent": "pod", "rule": "act"}),
            ("scanflow_actuator_calls_total", ok),
            ("scanflow_actuator_calls_total", bad),
            ("scanflow_actuator_calls_in_flight", {"agent": "pod"}),
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = _get(port, "/metrics")[1]
            if all(_has(metrics, name, labels) for name, labels in wanted) and (
                _sample(metrics, "scanflow_actuator_calls_in_flight", agent="pod") == 1
            ):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no sensor run, or the slow call never in flight:\n{metrics}")

        assert _sample(metrics, "scanflow_sensor_runs_total", agent="pod", sensor="tick") >= 1
        assert _sample(metrics, "scanflow_sensor_failures_total", agent="pod", sensor="tick") == 0
        assert _sample(metrics, "scanflow_rule_decisions_total", agent="pod", rule="act") >= 1
        assert _sample(metrics, "scanflow_actuator_calls_total", **ok) >= 1
        assert _sample(metrics, "scanflow_actuator_calls_total", **bad) == 1
        timed = {"agent": "pod", "actuator": "note"}
        assert _sample(metrics, "scanflow_actuator_call_duration_seconds_count", **timed) >= 1
        assert _sample(metrics, "scanflow_recorder_backlog_events", agent="pod") >= 0
        assert _sample(metrics, "scanflow_nats_messages_received_total") > 0
        assert _sample(metrics, "scanflow_nats_messages_sent_total") > 0
        assert _sample(metrics, "scanflow_nats_connected") == 1

        process.send_signal(signal.SIGTERM)
        # Readiness goes false while the accepted call is still being served.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, body = _get(port, "/readyz")
            if status == 503:
                break
            time.sleep(0.02)
        assert status == 503
        assert "draining" in body
        assert thread.is_alive(), "the slow call ended before readiness turned false"
        output, _ = process.communicate(timeout=30)
        thread.join(timeout=10)
        assert process.returncode == 0, output
        assert results == {"slow": "done"}
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_dead_loop_fails_liveness_and_readiness(http: ModuleType) -> None:
    class Looper(Agent):
        @actuator()
        async def ping(self) -> str:
            return "pong"

    agent = Looper()
    transport = MemoryBroker().connect()
    instruments = PrometheusInstruments()
    probes = Probes([agent], instruments, host="127.0.0.1", port=0)
    await probes.start()
    try:
        probes.watch(transport)
        status, body = await asyncio.to_thread(http.request, probes.port, "GET", "/readyz")
        assert status == 503
        assert body["agents"] == {"looper": "not started"}
        async with agent.running(transport, instruments=instruments) as runtime:
            status, _ = await asyncio.to_thread(http.request, probes.port, "GET", "/readyz")
            assert status == 200

            async def ends() -> None:
                return None

            runtime.tasks.spawn(ends(), name="watchdog", endless=True)
            await eventually(lambda: not runtime.ready, timeout=10, what="the loop's end noticed")
            status, body = await asyncio.to_thread(http.request, probes.port, "GET", "/livez")
            assert (status, body) == (503, {"alive": False, "broken_loops": ["looper:watchdog"]})
            status, body = await asyncio.to_thread(http.request, probes.port, "GET", "/readyz")
            assert status == 503
            assert body["reasons"] == ["agent 'looper' is not ready (a loop died)"]
    finally:
        await probes.stop()
        await transport.close()


async def test_an_agent_that_waits_for_something_is_not_ready_and_says_what(
    http: ModuleType,
) -> None:
    class Waiter(Agent):
        missing = ["namespace scanflow-vision does not exist"]

        def unready(self) -> list[str]:
            return list(self.missing)

    agent = Waiter()
    transport = MemoryBroker().connect()
    instruments = PrometheusInstruments()
    probes = Probes([agent], instruments, host="127.0.0.1", port=0)
    await probes.start()
    try:
        probes.watch(transport)
        async with agent.running(transport, instruments=instruments):
            status, body = await asyncio.to_thread(http.request, probes.port, "GET", "/readyz")
            assert status == 503
            assert body["reasons"] == [
                "agent 'waiter' is not ready: namespace scanflow-vision does not exist"
            ]
            agent.missing = []
            status, _ = await asyncio.to_thread(http.request, probes.port, "GET", "/readyz")
            assert status == 200
    finally:
        await probes.stop()
        await transport.close()


def test_an_agents_config_reaches_it_under_a_name_with_a_dash(
    agent_file: Path, tmp_path: Path, nats_url: str
) -> None:
    """The platform's env (SCANFLOW_AGENTS__MY_POD as JSON) and a mounted file, merged."""
    from scanflow_agents.platforms.kubernetes.manifests import agent_deployment
    from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
    from scanflow_agents.workflows import AgentSpec

    spec = AgentSpec(name="my-pod", agent=f"{agent_file}:Pod", config={"threshold": 0.2})
    port = free_port()
    # The rendered command is run as is, with its own --http-port.
    rendered = agent_deployment(
        KubernetesPlatformSettings(agent_http_port=port), "team", "app", spec
    )
    container = rendered["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert env["SCANFLOW_AGENTS__MY_POD"] == '{"threshold": 0.2}'
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("agents:\n  my-pod:\n    window: 5\n    threshold: 0.9\n")

    namespace = f"pod-{uuid.uuid4().hex[:6]}"
    env.update({"SCANFLOW_NATS__URL": nats_url, "SCANFLOW_NAMESPACE": namespace})
    command = [*SCANFLOW, "--settings", str(settings_file), *container["command"][1:]]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,  # gone with its test process
    )
    try:
        _wait_ready(port, process)
        result = subprocess.run(
            [*SCANFLOW, "--nats", nats_url, "-n", namespace, "call", "my-pod", "config"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        # The environment beats the file; the file's other keys stay.
        assert json.loads(result.stdout) == {"threshold": 0.2, "window": 5}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_settings_merge_both_spellings_of_an_agent_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(agents={"A_B": {"x": 1}, "a-b": {"y": 2}}).agents == {"a-b": {"x": 1, "y": 2}}
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"agents": {"drift-watch": {"window": 5, "alpha": 0.1}}}))
    monkeypatch.setenv("SCANFLOW_AGENTS__DRIFT_WATCH__ALPHA", "0.01")
    settings = Settings.load(str(settings_file))
    assert settings.agent_config("drift-watch") == {"window": 5, "alpha": "0.01"}
    assert settings.agent_config("drift_watch") == settings.agent_config("drift-watch")


@pytest.mark.parametrize("name", ["tracker", "checker", "improver", "planner"])
def test_builtin_agents_load_by_module_and_by_class(name: str) -> None:
    by_module = load_agent_classes(f"scanflow_agents.builtin.{name}")
    by_class = load_agent_classes(f"scanflow_agents.builtin.{name}:{name.capitalize()}")
    assert by_module == by_class
    assert by_class[0].name == name
