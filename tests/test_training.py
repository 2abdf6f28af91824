"""The training contract: what a step reads from its environment, and the candidate it leaves."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from scanflow_agents import training
from scanflow_agents.knowledge import KnowledgeClient, MlflowServer
from scanflow_agents.settings import MlflowSettings


def test_the_context_reads_the_platforms_variables(tmp_path: Path) -> None:
    env = {
        "SCANFLOW_RUN_ID": "train-1",
        "SCANFLOW_WORKFLOW": "train",
        "SCANFLOW_NODE": "fit",
        "SCANFLOW_RUN_DIR": str(tmp_path),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }
    step = training.context(env)
    assert step.in_a_run
    assert step.run_dir == tmp_path
    assert step.tags() == {
        "scanflow.run_id": "train-1",
        "scanflow.workflow": "train",
        "scanflow.node": "fit",
    }
    by_hand = training.context({})
    assert not by_hand.in_a_run
    assert by_hand.tags() == {}


def _register(uri: str, run_dir: Path, name: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(name)
    run = client.create_run(experiment)
    step = training.StepContext(
        run_id="train-7", workflow="train", node="fit", run_dir=run_dir, tracking_uri=uri
    )
    written = training.register_candidate(
        run.info.run_id,
        3,
        recent_accuracy=0.91,
        production_recent_accuracy=0.7,
        record={"registered_model": "wine"},
        step=step,
    )
    stored = client.get_run(run.info.run_id).data
    return {"written": written, "tags": stored.tags, "metrics": stored.metrics}


async def test_a_registered_candidate_is_what_the_improver_looks_for(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    got = await asyncio.to_thread(_register, mlflow_server.url, tmp_path, name)
    assert got["tags"]["scanflow.run_id"] == "train-7"
    assert got["tags"]["scanflow.model_version"] == "3"
    assert got["metrics"] == {"recent_accuracy": 0.91, "production_recent_accuracy": 0.7}
    assert training.read_candidate(tmp_path) == got["written"]
    assert json.loads((tmp_path / "candidate.json").read_text())["registered_model"] == "wine"
    # The improver's query finds it.
    async with KnowledgeClient(MlflowSettings(tracking_uri=mlflow_server.url)) as client:
        experiment = await client.experiment_id(name)
        assert experiment is not None
        runs, _ = await client.search_runs([experiment], "tags.`scanflow.run_id` = 'train-7'")
        assert [r.data.tags[training.MODEL_VERSION_TAG] for r in runs] == ["3"]


def test_a_missing_candidate_says_what_the_step_should_have_done(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="register_candidate"):
        training.read_candidate(tmp_path)
