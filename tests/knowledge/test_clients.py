"""The async client: explicit servers, fast failure, isolation, a light import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from scanflow_agents.knowledge import (
    KnowledgeClient,
    KnowledgeReadOnly,
    KnowledgeUnavailable,
    MlflowServer,
)
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import free_port


async def test_unreachable_server_fails_fast_with_uri_and_operation() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    async with KnowledgeClient(MlflowSettings(tracking_uri=uri)) as client:
        started = time.monotonic()
        with pytest.raises(KnowledgeUnavailable) as caught:
            await client.search_runs(["0"], operation="searching runs of experiment 'x'")
        elapsed = time.monotonic() - started
    # MLflow's default policy (7 retries, backoff factor 2) takes minutes; ours, two
    # quick retries. The bound is loose so that a loaded machine cannot breach it.
    assert elapsed < 30, f"took {elapsed:.1f} s: MLflow's default retry policy leaked through"
    assert str(caught.value).startswith(
        f"MLflow unreachable at {uri} while searching runs of experiment 'x': "
    )
    assert caught.value.uri == uri


async def test_event_loop_keeps_running_during_calls(knowledge: KnowledgeClient) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    try:
        for _ in range(5):
            await knowledge.experiment_id("Default")
            await knowledge.search_runs(["0"], max_results=1)
    finally:
        ticker.cancel()
    assert ticks > 5


async def test_two_servers_used_concurrently_do_not_interfere(
    mlflow_server: MlflowServer, second_mlflow_server: MlflowServer, unique: str
) -> None:
    first = KnowledgeClient(MlflowSettings(tracking_uri=mlflow_server.url))
    second = KnowledgeClient(MlflowSettings(tracking_uri=second_mlflow_server.url))
    async with first, second:

        async def fill(client: KnowledgeClient, label: str) -> str:
            experiment_id = await client.experiment_id(f"iso-{unique}", create=True)
            assert experiment_id is not None
            for i in range(10):
                await client.create_run(experiment_id, run_name=f"{label}-{i}")
            return experiment_id

        first_id, second_id = await asyncio.gather(fill(first, "a"), fill(second, "b"))
        first_runs, _ = await first.search_runs([first_id])
        second_runs, _ = await second.search_runs([second_id])
    assert {r.info.run_name for r in first_runs} == {f"a-{i}" for i in range(10)}
    assert {r.info.run_name for r in second_runs} == {f"b-{i}" for i in range(10)}


async def test_credentials_come_from_settings_not_the_environment(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-secret")
    settings = MlflowSettings(
        tracking_uri=mlflow_server.url,
        username="agent",
        password="s3cret",
    )
    other = MlflowSettings(tracking_uri=mlflow_server.url, token="tok")
    async with KnowledgeClient(settings) as client, KnowledgeClient(other) as second:
        creds = await client.tracking("reading credentials", lambda s: s.get_host_creds())
        registry = await client.registry("reading credentials", lambda s: s.get_host_creds())
        second_creds = await second.tracking("reading credentials", lambda s: s.get_host_creds())
    assert (creds.username, creds.password) == ("agent", "s3cret")
    assert (registry.username, registry.password) == ("agent", "s3cret")
    assert (second_creds.username, second_creds.token) == (None, "tok")


def test_importing_the_adapter_does_not_import_mlflow() -> None:
    code = "import sys, scanflow_agents.knowledge; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_read_only_client_reads_and_writes_nothing(
    knowledge: KnowledgeClient, mlflow_server: MlflowServer, unique: str
) -> None:
    """What a replay gives an agent: today's MLflow to read, and every write refused."""
    experiment = await knowledge.experiment_id(f"ro-{unique}", create=True)
    assert experiment is not None
    run_id = await knowledge.create_run(experiment, run_name="kept")
    settings = MlflowSettings(tracking_uri=mlflow_server.url)
    async with KnowledgeClient(settings, read_only=True) as reader:
        assert await reader.experiment_id(f"ro-{unique}") == experiment
        runs, _ = await reader.search_runs([experiment])
        assert [run.info.run_id for run in runs] == [run_id]
        with pytest.raises(KnowledgeReadOnly, match="create_run would write"):
            await reader.create_run(experiment, run_name="refused")
        with pytest.raises(KnowledgeReadOnly, match="update_run_info would write"):
            await reader.end_run(run_id)
        with pytest.raises(KnowledgeReadOnly, match="create_experiment would write"):
            await reader.experiment_id(f"ro-new-{unique}", create=True)
        with pytest.raises(KnowledgeReadOnly, match="log_batch would write"):
            await reader.log_batch(run_id, metrics=[("x", 1.0, 0, 0)])
    (run,), _ = await knowledge.search_runs([experiment])
    assert (run.info.run_id, run.info.status, run.data.metrics) == (run_id, "RUNNING", {})
    assert await knowledge.experiment_id(f"ro-new-{unique}") is None
