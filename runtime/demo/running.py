"""The demo's story: start the stack, bootstrap the service, play the phases, sum up.

The bootstrap goes through the planner's actuators, as an operator would:
apply the example application, build, train version 1, promote it, deploy the
service. From then on the demo only sends traffic (and labels); every
reaction is the agents' own, and the summary reads them from the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from scanflow_agents.runtime.demo import report, summary
from scanflow_agents.runtime.demo.examples import EXAMPLES, Example
from scanflow_agents.runtime.demo.scenario import PARTS, Load, Phase, phases
from scanflow_agents.runtime.demo.stack import Stack, StackOptions, Tuning
from scanflow_agents.runtime.demo.traffic import Traffic
from scanflow_agents.runtime.demo.view import Progress, View
from scanflow_agents.runtime.demo.watching import EventLog
from scanflow_agents.runtime.inspecting import EXPORT_LIMIT, read_shadow_diff, write_history

from scanflow_agents import training
from scanflow_agents._kit.tasks import guarded

logger = logging.getLogger("scanflow_agents.runtime.demo")

HISTORY_KINDS = ("observation", "decision", "action", "finding", "run")


@dataclass
class DemoOptions:
    """What ``scanflow demo`` was asked for."""

    seed: int = 0
    speed: float = 1.0
    parts: tuple[str, ...] = PARTS
    report_dir: Path = Path("scanflow-demo-report")
    nats_url: str | None = None
    mlflow_uri: str | None = None
    work_dir: Path | None = None
    #: The traffic levels; by default ``Load`` with the example's own values.
    load: Load | None = None
    #: The loop's knobs; by default ``Tuning`` with the example's own values.
    tuning: Tuning | None = None
    example: str = "digits"
    #: Built-in agents also run as shadows, with these changes to their settings
    #: (``{"checker": {"consecutive": 3}}``); the summary pairs their decisions.
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)


async def _call(stack: Stack, progress: Progress, step: str, actuator: str, **params: Any) -> Any:
    progress.step = step
    params.setdefault("timeout", 120.0)
    return await stack.client.call("planner", actuator, **params)


async def bootstrap(stack: Stack, progress: Progress) -> tuple[str, str, str]:
    """Train, promote and deploy version 1; returns (model name, its version, service URL)."""
    example = stack.options.example
    progress.enter("bootstrap", None, f"applying the {example.name} application")
    application = yaml.safe_load(example.application.read_text())
    train, serve = example.train_workflow, example.serve_workflow
    folder = str(example.folder)
    await _call(stack, progress, "apply", "apply", application=application, base_dir=folder)
    await _call(stack, progress, "building the workflows", "build", workflow=train)
    await _call(stack, progress, "building the workflows", "build", workflow=serve)
    run_id = await _call(stack, progress, "training version 1", "run", workflow=train)
    status = await _call(
        stack, progress, "training version 1", "wait", run_id=run_id, seconds=300, timeout=310
    )
    if status["state"] != "succeeded":
        raise RuntimeError(f"the first training failed: {status['message']} ({status['run_dir']})")
    # What the training step handed over (the training contract: candidate.json).
    version = training.read_candidate(status["run_dir"])["version"]
    promoting = f"promoting version {version}"
    await _call(stack, progress, promoting, "promote", model=example.model, version=version)
    await _call(stack, progress, "deploying the service", "deploy", workflow=serve, timeout=300)
    service = (await _call(stack, progress, "deployed", "status", workflow=serve))["services"][0]
    return example.model, str(version), str(service["url"])


async def play(phase: Phase, traffic: Traffic, log: EventLog, progress: Progress) -> dict[str, Any]:
    """Send one phase's traffic until its time is up (or what it waits for, plus its hold)."""
    start = time.time()
    waiting = {
        "recovered": "a new version serving",
        "scaled": "a scale-out",
        "scaled-in": "a scale-in",
    }.get(phase.until or "")
    step = f"waiting for {waiting} (at most {phase.seconds:.0f} s)" if waiting else "traffic"
    progress.enter(phase.name, phase.seconds, step)
    clients = traffic.start(phase)
    try:
        deadline = start + phase.seconds
        while time.time() < deadline and not clients.done():
            if phase.until and log.happened(phase.until, start):
                progress.step = f"{waiting} seen; {phase.hold:.0f} s more traffic"
                progress.seconds = time.time() - start + phase.hold
                await asyncio.sleep(phase.hold)
                break
            await asyncio.sleep(0.25)
        else:
            if phase.until:
                logger.warning(
                    "demo phase %s: %s did not happen in %.0f s; going on",
                    phase.name,
                    waiting,
                    phase.seconds,
                )
    finally:
        await clients.stop()
    return {"name": phase.name, "start": start, "end": time.time(), "until": phase.until}


async def run_demo(options: DemoOptions, *, out: TextIO | None = None) -> dict[str, Any]:
    """Run the whole demo; returns the summary (also written with the report)."""
    out = out or sys.stdout
    if options.example not in EXAMPLES:
        raise ValueError(f"no example {options.example!r}; choose from {', '.join(EXAMPLES)}")
    example: Example = EXAMPLES[options.example]
    tuning = options.tuning or Tuning(**example.tuning)
    load = options.load or Load(**example.load)
    plan = phases(options.parts, options.speed, load)
    data = await asyncio.to_thread(example.data, options.seed)
    own_work = options.work_dir is None
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="scanflow-demo-"))
    stack_options = StackOptions(
        work_dir=work,
        nats_url=options.nats_url,
        mlflow_uri=options.mlflow_uri,
        tuning=tuning,
        example=example,
        shadows=options.shadows,
    )
    progress = Progress()
    try:
        async with Stack(stack_options) as stack, EventLog(stack.client) as log:
            view = guarded(View(log, progress, out=out).run(), name="demo view", logger=logger)
            try:
                name, version, url = await bootstrap(stack, progress)
                traffic = Traffic(url, data, seed=options.seed, label_share=load.label_share)
                progress.traffic = traffic
                played = [await play(phase, traffic, log, progress) for phase in plan]
                progress.enter("summary", None, "reading the audit trail, evaluating models")
                # Every event, read once: kept for a replay of the loop's agents on this
                # run, and the summary's kinds taken from it.
                everything = await stack.client.history(kinds=None, limit=EXPORT_LIMIT)
                history = [r for r in everything if r.get("kind") in HISTORY_KINDS]
                assert stack.settings is not None  # set once the stack has started
                ran_with = stack.settings.model_dump(mode="json")  # secrets stay masked
                shadowed = {
                    name: await read_shadow_diff(stack.client, name, f"{name}-shadow", since=None)
                    for name in options.shadows
                }
                status = await stack.client.call(
                    "planner", "status", workflow=example.serve_workflow
                )
                models = {"before": f"models:/{name}/{version}"}
                onset = next((p["start"] for p in played if p["name"] == "drift"), None)
                for _, uri in summary.redeploys(history, onset)[:1]:
                    models["new"] = uri
                models["after"] = status["services"][0]["replicas"][0]["model_uri"]
                evaluation = await asyncio.to_thread(
                    summary.evaluate,
                    stack.mlflow_uri,
                    models,
                    data.x_drifted_eval,
                    data.y_drifted_eval,
                    data.columns,
                )
                clean_evaluation = await asyncio.to_thread(
                    summary.evaluate,
                    stack.mlflow_uri,
                    {"before": models["before"]},
                    data.x_held_out,
                    data.y_held_out,
                    data.columns,
                )
            finally:
                view.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    requests = [r.to_dict() for r in traffic.records]
    result = summary.compute(history, requests, played, evaluation, clean_evaluation)
    result["labels"] = {"sent": traffic.labels_sent, "matched": traffic.labels_matched}
    result["duration_seconds"] = round(time.time() - progress.started, 1)
    if shadowed:
        result["shadows"] = {
            name: {
                "changes": options.shadows[name],
                "counts": diff.counts(),
                "disagreements": [row.as_json() for row in diff.disagreements],
            }
            for name, (diff, _) in shadowed.items()
        }
    folder = options.report_dir
    summary.write(result, folder / "summary.json")
    (folder / "requests.json").write_text(json.dumps(requests))
    # Megabytes of JSON (19 MB for a 4-minute run): written off the event loop.
    await asyncio.to_thread(_save_history, folder / "history.jsonl", everything)
    (folder / "settings.json").write_text(json.dumps(ran_with, indent=2))
    await asyncio.to_thread(
        report.render,
        result,
        requests,
        summary.replica_timeline(history),
        folder,
        objective_ms=tuning.latency_p95_ms or _objective(example),
    )
    return result


def _objective(example: Example) -> float | None:
    """The service's latency objective in the example's application file."""
    application = yaml.safe_load(example.application.read_text())
    for workflow in application.get("workflows", []):
        if workflow.get("name") == example.serve_workflow:
            for node in workflow.get("nodes", []):
                if node.get("name") == example.node and node.get("latency_p95_ms"):
                    return float(node["latency_p95_ms"])
    return None


def _save_history(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w") as out:
        write_history(records, out)
