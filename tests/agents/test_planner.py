"""The planner end to end: every step through its actuators, over real NATS and MLflow.

Apply the digits example application, build, train (a real scikit-learn model,
registered in a real MLflow server), promote, deploy a real model server and
predict over HTTP, scale 1 → 3 → 1, retrain, redeploy under a continuous
client loop, refuse bad input, delete.

Each test starts a planner of its own, with a registered model name of its own,
and takes the steps before its own itself: any one runs alone, in any order.
Training is the slow step (about 18 s on a busy machine), so the model is
trained once for the module, and a test that needs a first version registers
that model's files as version 1 of its own model; only the tests of training
itself train. Leaving a test stops its planner, which stops every process the
platform started, failed test or not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import yaml
from scanflow_agents.builtin.planner import Planner

from scanflow_agents import BadInput, NotFound, Settings
from scanflow_agents.knowledge import (
    ApplicationStore,
    KnowledgeClient,
    MlflowServer,
    ModelRegistry,
)
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import AgentHarness

# Room for a test's own training run on top of the module's shared one.
pytestmark = [
    pytest.mark.nats,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


@dataclass(frozen=True)
class Trained:
    """The module's one training of the example: its model files and some test rows."""

    source: str
    run_id: str | None
    rows: list[list[float]]
    labels: list[int]


@dataclass
class Story:
    """One test's planner, model name and application, and the steps a test may need."""

    h: AgentHarness
    mlflow: KnowledgeClient
    model: str
    application: dict[str, Any]

    async def call(self, actuator: str, /, **params: Any) -> Any:
        params.setdefault("timeout", 60.0)
        return await self.h.call("planner", actuator, **params)

    async def apply(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "apply", application=self.application, base_dir=str(EXAMPLE)
        )
        return result

    async def train(self, **params: Any) -> dict[str, Any]:
        """Run the training workflow to its end; its status."""
        run_id = await self.call("run", workflow="train", **params)
        finished: dict[str, Any] = await self.call("wait", run_id=run_id, seconds=90, timeout=95)
        assert finished["state"] == "succeeded", finished["message"]
        return finished

    async def register(self, trained: Trained) -> None:
        """The module's trained model as version 1 of this test's model."""
        from mlflow import MlflowClient

        def create() -> None:
            # MLflow 3 registers a logged model (``models:/m-<id>``) only with its id.
            MlflowClient(self.mlflow.tracking_uri).create_model_version(
                self.model,
                trained.source,
                run_id=trained.run_id,
                model_id=trained.source.removeprefix("models:/"),
            )

        await ModelRegistry(self.mlflow).ensure_model(self.model)
        await asyncio.to_thread(create)

    async def serve(self, trained: Trained) -> dict[str, Any]:
        """Applied, version 1 in production and deployed: the service's status."""
        await self.apply()
        await self.register(trained)
        await self.call("promote", model=self.model, version="1")
        await self.call("deploy", workflow="serve")
        return await self.service()

    async def service(self) -> dict[str, Any]:
        status = await self.call("status", workflow="serve")
        assert len(status["services"]) == 1, status
        service: dict[str, Any] = status["services"][0]
        return service


@asynccontextmanager
async def _story(nats_url: str, mlflow_url: str, base: Path) -> AsyncIterator[Story]:
    # A model name of its own: the MLflow server is shared by the whole session.
    model = f"digits-{uuid.uuid4().hex[:8]}"
    application = yaml.safe_load((EXAMPLE / "application.yaml").read_text())
    train = next(w for w in application["workflows"] if w["name"] == "train")
    step = next(n for n in train["nodes"] if n["name"] == "train")
    step["parameters"].update({"registered-model": model, "experiment": model})
    serve = next(w for w in application["workflows"] if w["name"] == "serve")
    serve["nodes"][0]["model_uri"] = f"models:/{model}@production"
    settings = Settings.defaults().model_copy(
        update={
            "mlflow": MlflowSettings(tracking_uri=mlflow_url),
            "agents": {
                "planner": {"local": {"base_dir": str(base / "local"), "report_interval": 60}}
            },
        }
    )
    async with (
        KnowledgeClient(MlflowSettings(tracking_uri=mlflow_url)) as mlflow,
        AgentHarness(Planner(), nats_url=nats_url, settings=settings) as h,
    ):
        yield Story(h=h, mlflow=mlflow, model=model, application=application)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def trained(
    nats_url: str, mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    base = tmp_path_factory.mktemp("trained")
    async with _story(nats_url, mlflow_server.url, base) as story:
        await story.apply()
        finished = await story.train()
        [version] = await ModelRegistry(story.mlflow).versions(story.model)
        with np.load(Path(finished["run_dir"]) / "digits.npz") as data:
            rows, labels = data["x_test"][:40].tolist(), data["y_test"][:40].tolist()
    return Trained(source=version.source, run_id=version.run_id, rows=rows, labels=labels)


@pytest_asyncio.fixture(loop_scope="module")
async def story(nats_url: str, mlflow_server: MlflowServer, tmp_path: Path) -> AsyncIterator[Story]:
    async with _story(nats_url, mlflow_server.url, tmp_path) as story:
        yield story


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid or 0, 0)
    except ProcessLookupError:
        return False
    return bool(pid)


def _ended(story: Story, run_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in story.h.events
        if e["topic"].startswith("run.train.") and e["payload"]["run_id"] == run_id
    ]


async def test_apply_registers_the_example_and_stores_it_in_mlflow(story: Story) -> None:
    result = await story.apply()
    again = await story.apply()

    assert result == again
    assert (result["application"], result["team"], result["stored"]) == ("digits", "vision", True)
    workflows = {w["name"]: w for w in result["workflows"]}
    assert workflows["train"]["kind"] == "batch"
    assert workflows["train"]["nodes"] == ["prepare", "train", "evaluate"]  # dependency order
    assert workflows["serve"]["services"] == ["model"]
    stored = await ApplicationStore(story.mlflow).get("digits", team="vision")
    assert stored is not None
    assert [w["name"] for w in stored["workflows"]] == ["train", "serve"]
    assert stored["workflows"][1]["nodes"][0]["model_uri"] == f"models:/{story.model}@production"


async def test_build_prepares_every_node(story: Story) -> None:
    await story.apply()

    train = await story.call("build", workflow="train")
    serve = await story.call("build", workflow="serve")

    # No node declares requirements: all run in the platform's own environment.
    assert [e["node"] for e in train["environments"]] == ["prepare", "train", "evaluate"]
    assert [e["node"] for e in serve["environments"]] == ["model"]
    assert train["outcome"] == serve["outcome"] == "unchanged"


async def test_run_trains_registers_and_reports_the_end_in_the_calls_chain(story: Story) -> None:
    await story.apply()
    call_id = uuid.uuid4().hex

    run_id = await story.call("run", workflow="train", call_id=call_id, correlation_id="plan-1")
    redelivered = await story.call(
        "run", workflow="train", call_id=call_id, correlation_id="plan-1"
    )
    await story.h.wait_for(lambda _: bool(_ended(story, run_id)), timeout=90)

    assert run_id == redelivered == f"train-{call_id}"  # one run for a call delivered twice
    [event] = _ended(story, run_id)
    assert event["topic"] == "run.train.succeeded", event["payload"]["message"]
    assert (event["correlation_id"], event["causation_id"]) == ("plan-1", call_id)
    status = await story.call("run_status", run_id=run_id)
    assert status["state"] == "succeeded"
    nodes = [status["nodes"][name] for name in ("prepare", "train", "evaluate")]
    assert all(n["state"] == "succeeded" for n in nodes)
    # In dependency order: each step started after the one before it ended.
    assert all(a["finished_at"] <= b["started_at"] for a, b in itertools.pairwise(nodes))
    evaluation = json.loads((Path(status["run_dir"]) / "evaluation.json").read_text())
    assert (evaluation["candidate"], evaluation["production"]) == ("1", None)
    assert evaluation["better"] is True
    assert evaluation["candidate_accuracy"] > 0.9
    assert [r["run_id"] for r in (await story.call("status", workflow="train"))["runs"]] == [run_id]
    versions = await ModelRegistry(story.mlflow).versions(story.model)
    assert [v.version for v in versions] == ["1"]


async def test_promote_sets_the_alias_and_answers_the_previous_version(
    story: Story, trained: Trained
) -> None:
    await story.register(trained)

    first = await story.call("promote", model=story.model, version="1")
    again = await story.call("promote", model=story.model, version=1)

    assert (first["previous"], first["outcome"]) == (None, "created")
    assert (again["previous"], again["outcome"]) == ("1", "unchanged")
    production = await ModelRegistry(story.mlflow).version_by_alias(story.model, "production")
    assert production is not None
    assert production.version == "1"


async def test_deploy_serves_predictions_over_http(
    story: Story, trained: Trained, http: ModuleType
) -> None:
    await story.apply()
    await story.register(trained)
    await story.call("promote", model=story.model, version="1")

    deployed = await story.call("deploy", workflow="serve")
    again = await story.call("deploy", workflow="serve")
    service = await story.service()

    assert deployed["outcome"] == "created"
    assert again["outcome"] == "unchanged"
    assert service["model_uri"] == f"models:/{story.model}@production"
    assert (service["desired_replicas"], service["ready_replicas"]) == (1, 1)
    code, body = await asyncio.to_thread(
        http.request, _port(service["url"]), "POST", "/predict", {"instances": trained.rows}
    )
    assert code == 200, body
    predicted = [p["prediction"] for p in body["predictions"]]
    right = sum(int(p) == label for p, label in zip(predicted, trained.labels, strict=True))
    assert right / len(predicted) > 0.85


async def test_scale_one_three_one(story: Story, trained: Trained, http: ModuleType) -> None:
    await story.serve(trained)

    up = await story.call("scale", workflow="serve", node="model", replicas=3)
    at_three = await story.service()
    down = await story.call("scale", workflow="serve", node="model", replicas=1)
    at_one = await story.service()

    assert (up["outcome"], up["details"]) == ("updated", {"before": 1, "replicas": 3})
    assert (at_three["desired_replicas"], at_three["ready_replicas"]) == (3, 3)
    assert all(r["alive"] and r["ready"] for r in at_three["replicas"])
    assert down["outcome"] == "updated"
    assert (at_one["desired_replicas"], at_one["ready_replicas"]) == (1, 1)
    kept = at_one["replicas"][0]["replica"]
    stopped = [r["pid"] for r in at_three["replicas"] if r["replica"] != kept]
    assert len(stopped) == 2
    assert not any(_alive(pid) for pid in stopped)
    code, body = await asyncio.to_thread(
        http.request, _port(at_one["url"]), "POST", "/predict", {"instances": [[0.0] * 64]}
    )
    assert (code, body["replica"]) == (200, kept)


async def test_retrain_then_redeploy_under_load_fails_no_request(
    story: Story, trained: Trained, http: ModuleType
) -> None:
    await story.serve(trained)
    figures: dict[str, Any] = {}

    run_id = await story.call(
        "run",
        workflow="train",
        parameters={"train": {"C": 0.05, "max-iter": 100}},
        call_id="../retrain",  # a caller's own call id never becomes a path: it is hashed
    )
    finished = await story.call("wait", run_id=run_id, seconds=90, timeout=95)
    assert finished["state"] == "succeeded", finished["message"]
    assert re.fullmatch(r"train-[0-9a-f]{32}", run_id)
    assert Path(finished["run_dir"]).parent.name == "runs"
    await story.h.wait_for(lambda _: bool(_ended(story, run_id)), timeout=5)
    versions = await ModelRegistry(story.mlflow).versions(story.model)
    assert [v.version for v in versions] == ["2", "1"]
    evaluation = json.loads((Path(finished["run_dir"]) / "evaluation.json").read_text())
    # Fewer iterations and stronger regularisation, judged against production (version 1).
    assert (evaluation["candidate"], evaluation["production"]) == ("2", "1")
    figures["accuracy_v1_v2"] = (
        evaluation["production_accuracy"],
        evaluation["candidate_accuracy"],
    )

    port = _port((await story.service())["url"])
    stop = threading.Event()
    outcomes: list[tuple[float, int, str | None]] = []

    def client_loop() -> None:
        # One request after another, each on a new connection, until told to stop.
        while not stop.is_set():
            try:
                code, body = http.request(port, "POST", "/predict", {"instances": [[0.0] * 64]})
                replica = body.get("replica") if isinstance(body, dict) else None
            except OSError:
                code, replica = -1, None
            outcomes.append((time.monotonic(), code, replica))

    loop = asyncio.create_task(asyncio.to_thread(client_loop))
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        promoted = await story.call("promote", model=story.model, version="2")
        redeployed = await story.call(
            "redeploy", workflow="serve", node="model", model_uri=f"models:/{story.model}/2"
        )
        figures["redeploy_seconds"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await loop
    service = await story.service()

    failed = [o for o in outcomes if o[1] != 200]
    figures["redeploy_requests"] = len(outcomes)
    figures["redeploy_failures"] = len(failed)
    print(f"\nplanner e2e figures: {figures}")
    assert promoted["previous"] == "1"  # promote answers what to roll back to
    assert redeployed["outcome"] == "updated"
    assert redeployed["details"]["replaced"] == 1
    assert failed == []
    assert len(outcomes) > 20
    assert service["replicas"][0]["model_uri"] == f"models:/{story.model}/2"
    new = service["replicas"][0]["replica"]
    assert outcomes[-1][2] == new  # the last requests were served by the new replica
    assert {o[2] for o in outcomes} >= {new}
    assert len({o[2] for o in outcomes}) == 2  # old replica, then new


async def test_bad_input_is_refused_with_its_code_and_field(story: Story, trained: Trained) -> None:
    await story.apply()
    await story.register(trained)

    with pytest.raises(NotFound, match="no workflow 'nope'"):
        await story.call("run", workflow="nope")
    with pytest.raises(NotFound, match="no workflow 'nope'"):
        await story.call("status", workflow="nope")
    with pytest.raises(NotFound, match="no node 'nope'"):
        await story.call("scale", workflow="serve", node="nope", replicas=1)
    with pytest.raises(NotFound, match="no run 'train-nope'"):
        await story.call("run_status", run_id="train-nope")
    with pytest.raises(NotFound, match="has no version 9"):
        await story.call("promote", model=story.model, version="9")
    with pytest.raises(BadInput) as negative:
        await story.call("scale", workflow="serve", node="model", replicas=-1)
    assert negative.value.field == "replicas"
    with pytest.raises(BadInput) as executor:
        await story.call("scale", workflow="train", node="train", replicas=2)
    assert executor.value.field == "node"
    with pytest.raises(BadInput, match="batch workflow") as batch:
        await story.call("deploy", workflow="train")
    assert batch.value.field == "workflow"
    with pytest.raises(BadInput, match="unknown executor") as unknown:
        await story.call("run", workflow="train", parameters={"fit": {"C": 1}})
    assert unknown.value.field == "parameters"

    bad = yaml.safe_load((EXAMPLE / "application.yaml").read_text())
    bad["name"] = "broken"
    bad["workflows"][1]["name"] = "serve-broken"
    bad["workflows"][1]["nodes"][0]["replicas"] = -2
    bad["workflows"][0]["name"] = "train-broken"
    with pytest.raises(BadInput, match="node 'model', field 'replicas'") as invalid:
        await story.call("apply", application=bad)
    assert invalid.value.field == "application.workflows.serve-broken.nodes.model.replicas"
    bad["workflows"][1]["nodes"][0]["replicas"] = 1
    bad["workflows"][0]["name"] = "train"  # another application's workflow
    with pytest.raises(BadInput, match="already belongs to application 'digits'") as taken:
        await story.call("apply", application=bad)
    assert taken.value.field == "application.workflows.train.name"
    # Nothing was refused half-way: the planner still knows only the example.
    with pytest.raises(NotFound):
        await story.call("status", workflow="serve-broken")


async def test_delete_stops_the_service(story: Story, trained: Trained, http: ModuleType) -> None:
    service = await story.serve(trained)

    deleted = await story.call("delete", workflow="serve")
    again = await story.call("delete", workflow="serve")
    status = await story.call("status", workflow="serve")

    assert deleted["outcome"] == "deleted"
    assert again["outcome"] == "absent"
    assert (status["deployed"], status["services"]) == (False, [])
    assert not any(_alive(r["pid"]) for r in service["replicas"])
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(
            http.request, _port(service["url"]), "POST", "/predict", {"instances": [[0.0] * 64]}
        )
