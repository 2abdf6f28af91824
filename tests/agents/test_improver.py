"""The improver's plans, with stand-in tracker and planner agents on a real NATS and MLflow.

The stand-ins are real agents with the same actuators as the built-in ones, so
the improver's calls, events and decisions cross the real bus; the whole loop
with the real tracker, checker and planner runs in the demo's test.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any

import pytest
from scanflow_agents.builtin.improver import Autoscaler, Improver, Scaling

from scanflow_agents import Agent, NotFound, actuator
from scanflow_agents.controls import Controls
from scanflow_agents.knowledge import KnowledgeClient, MlflowServer
from scanflow_agents.settings import MlflowSettings, Settings
from scanflow_agents.testing import AgentHarness, eventually

# -- the autoscaler alone ------------------------------------------------------------------


def slo(breached: bool, rps: float, replicas: int) -> dict[str, Any]:
    return {"breached": breached, "rps": rps, "replicas": replicas, "workflow": "serve"}


def test_scale_out_jumps_to_the_target_in_one_step() -> None:
    scaler = Autoscaler(Scaling(capacity_rps=40, headroom=0.2, max_replicas=6))
    plan = scaler.plan(slo(True, 100, 1), now=0)
    assert plan is not None
    assert (plan.current, plan.target) == (1, 3)  # ceil(100 * 1.2 / 40), not 1 -> 2 -> 3
    assert scaler.plan(slo(True, 100, 1), now=1) is None  # cooldown: the last one is starting


def test_scale_in_waits_for_calm_windows_and_does_not_flap() -> None:
    scaler = Autoscaler(
        Scaling(capacity_rps=40, headroom=0.2, scale_in_windows=3, scale_in_cooldown=20)
    )
    assert scaler.plan(slo(True, 100, 1), now=0) is not None
    # Demand at the edge of what 2 replicas hold (with headroom): no decision either way.
    for t in range(5, 60, 5):
        assert scaler.plan(slo(False, 70, 3), now=t) is None
    # Demand falls: three calm windows later (and past the cooldown), one step down.
    assert scaler.plan(slo(False, 20, 3), now=60) is None
    assert scaler.plan(slo(False, 20, 3), now=65) is None
    plan = scaler.plan(slo(False, 20, 3), now=70)
    assert plan is not None
    assert plan.target == 1
    assert scaler.plan(slo(False, 20, 1), now=75) is None


def test_findings_measured_before_the_last_change_are_ignored() -> None:
    scaler = Autoscaler(Scaling(capacity_rps=40, headroom=0.2, scale_out_cooldown=0))
    started = time.time() - 3
    first = scaler.plan({**slo(True, 100, 1), "window": {"start": started}}, now=0)
    assert first is not None
    # The next findings of the burst measured the old count: not a reason to act again.
    assert scaler.plan({**slo(True, 100, 1), "window": {"start": started + 1}}, now=10) is None
    fresh = {**slo(True, 200, 3), "window": {"start": time.time() + 1}}
    plan = scaler.plan(fresh, now=20)
    assert plan is not None
    assert plan.target > 3


def test_a_transient_breach_does_not_pin_the_replicas() -> None:
    """One breach at a load one replica handles (a cold replica): out, then back in."""
    settings = Scaling(
        capacity_rps=150,
        headroom=0.2,
        scale_in_windows=3,
        scale_in_cooldown=20,
        recover_windows=3,
        max_replicas=4,
    )
    scaler = Autoscaler(settings)
    plan = scaler.plan(slo(True, 90, 1), now=0)  # 90 rps "should" fit one replica of 150
    assert plan is not None
    assert plan.target == 2
    assert scaler.capacity < 90
    replicas, t, timeline = 2, 0, []
    while t < 120:  # the same 90 rps, healthy, one window every 4 s
        t += 4
        plan = scaler.plan(slo(False, 90, replicas), now=t)
        if plan is not None:
            replicas = plan.target
            timeline.append((t, replicas))
    assert replicas == 1, f"capacity {scaler.capacity:.0f}, changes {timeline}"
    assert len(timeline) == 1  # one step down, no flapping
    assert scaler.capacity == pytest.approx(150, rel=0.02)


def test_a_real_limit_is_learnt_and_flapping_slows_down() -> None:
    """Replicas that really hold 60 rps: each scale-out makes the next rise wait longer."""
    settings = Scaling(
        capacity_rps=150,
        headroom=0.2,
        scale_in_windows=2,
        scale_in_cooldown=0,
        scale_out_cooldown=0,
        recover_windows=2,
        max_replicas=4,
    )
    scaler = Autoscaler(settings)
    replicas, scale_ins = 1, []
    for t in range(0, 2000, 4):
        plan = scaler.plan(slo(90 / replicas > 60, 90, replicas), now=t)
        if plan is not None:
            if plan.target < replicas:
                scale_ins.append(t)
            replicas = plan.target
    gaps = [b - a for a, b in itertools.pairwise(scale_ins)]
    assert len(gaps) >= 2
    # Ever rarer, up to a bound (the estimate must still be able to come back).
    assert all(b >= a for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] >= 3 * gaps[0], gaps


def test_a_breach_the_estimate_did_not_expect_lowers_the_capacity() -> None:
    scaler = Autoscaler(Scaling(capacity_rps=100, headroom=0.2, max_replicas=8))
    plan = scaler.plan(slo(True, 90, 2), now=0)  # 2 replicas "should" hold 90 rps: they did not
    assert plan is not None
    assert plan.target > 2
    assert scaler.capacity < 45


# -- the improver with stand-in agents -----------------------------------------------------


class Tracker(Agent, name="tracker"):
    counts: list[int] = []  # labelled rows since the drift, as the tracker answers in turn

    @actuator()
    async def labelled(self, workflow: str, node: str = "model", since: float | None = None) -> int:
        return self.counts.pop(0) if self.counts else 10_000

    @actuator()
    async def dataset(
        self, workflow: str, node: str = "model", limit: int = 5000, since: float | None = None
    ) -> dict[str, Any]:
        return {"uri": "runs:/abc/recent.npz", "rows": 300}


class Planner(Agent, name="planner"):
    """Records calls; ``run`` logs a training run in MLflow and reports it, as the real one."""

    def __init__(
        self, client: KnowledgeClient, experiment: str, scores: list[tuple[float, float]], **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.client, self.experiment, self.scores = client, experiment, scores
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.version = 1

    @actuator()
    async def run(self, workflow: str, parameters: dict[str, dict[str, Any]] | None = None) -> str:
        self.calls.append(("run", {"workflow": workflow, "parameters": parameters}))
        run_id = f"{workflow}-{uuid.uuid4().hex[:6]}"
        self.version += 1
        new, old = self.scores.pop(0)
        experiment = await self.client.experiment_id(self.experiment, create=True)
        assert experiment is not None
        mlflow_run = await self.client.create_run(
            experiment,
            tags={"scanflow.run_id": run_id, "scanflow.model_version": str(self.version)},
        )
        now = int(time.time() * 1000)
        await self.client.log_batch(
            mlflow_run,
            metrics=[("recent_accuracy", new, now, 0), ("production_recent_accuracy", old, now, 0)],
        )
        await self.client.end_run(mlflow_run)
        # Reported before `run` answers: a fast run must not confuse the improver.
        status = {"run_id": run_id, "workflow": workflow, "state": "succeeded"}
        await self.emit(f"run.{workflow}.succeeded", status)
        return run_id

    @actuator()
    async def promote(self, model: str, version: str, alias: str = "production") -> dict[str, Any]:
        self.calls.append(("promote", {"model": model, "version": version}))
        return {"previous": "1", "version": version}

    @actuator()
    async def redeploy(self, workflow: str, node: str, model_uri: str) -> dict[str, Any]:
        self.calls.append(
            ("redeploy", {"workflow": workflow, "node": node, "model_uri": model_uri})
        )
        return {"outcome": "updated"}

    @actuator()
    async def scale(self, workflow: str, node: str, replicas: int) -> dict[str, Any]:
        self.calls.append(("scale", {"workflow": workflow, "replicas": replicas}))
        return {"outcome": "updated"}

    def called(self, name: str) -> list[dict[str, Any]]:
        return [params for kind, params in self.calls if kind == name]


def improver_settings(server: MlflowServer, experiment: str, **improver: Any) -> Settings:
    base = Settings.defaults()
    config = {"workflows": {"serve": {"experiment": experiment}}, "retrain_cooldown": 0, **improver}
    return base.model_copy(
        update={
            "mlflow": MlflowSettings(tracking_uri=server.url),
            "agents": {"improver": config},
        }
    )


DRIFT = {
    "workflow": "serve",
    "node": "model",
    "model_uri": "models:/digits@production",
    "test": "ks",
}


async def test_drift_retrains_then_promotes_a_better_candidate_and_rolls_back_if_it_fails(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(mlflow_server, experiment)
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.93, 0.40)])
        async with AgentHarness(
            Improver(), Tracker(), planner, nats_url=nats_url, settings=settings
        ) as h:
            await h.emit("finding.drift.serve", DRIFT, source="checker")
            await eventually(lambda: bool(planner.called("redeploy")), timeout=20)
            assert planner.called("run")[0]["parameters"] == {
                "train": {"recent": "runs:/abc/recent.npz"}
            }
            assert planner.called("promote") == [{"model": "digits", "version": "2"}]
            assert planner.called("redeploy")[0]["model_uri"] == "models:/digits/2"
            improver = h.agents["improver"]
            assert isinstance(improver, Improver)
            assert improver.retrainings.states == {}  # nothing left in flight
            await h.settle()
            actions = [d["payload"]["action"] for d in h.records("decision", "improver")]
            assert actions == ["retrain", "promote"]
            promote = h.records("decision", "improver", "judge_candidate")[0]["payload"]
            assert promote["evidence"]["recent_accuracy"] == 0.93
            # On probation: the new version serves worse than the one it replaced did
            # on the same recent data (0.40) -> roll back.
            window = {
                "workflow": "serve",
                "model_uris": ["models:/digits/2"],
                "accuracy": 0.3,
                "labels": {"matched": 50, "correct": 25},
            }
            for _ in range(3):
                await h.emit("observation.tracker.serving", {"value": window}, source="tracker")
            await eventually(lambda: len(planner.called("redeploy")) == 2, timeout=20)
            assert planner.called("promote")[-1] == {"model": "digits", "version": "1"}
            assert planner.called("redeploy")[-1]["model_uri"] == "models:/digits/1"


async def test_a_worse_candidate_is_rejected_with_its_figures(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(mlflow_server, experiment, margin=0.02)
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.81, 0.80)])  # better, but not by the margin
        async with AgentHarness(
            Improver(), Tracker(), planner, nats_url=nats_url, settings=settings
        ) as h:
            await h.emit("finding.performance.serve", DRIFT, source="checker")
            await h.wait_for(
                lambda ev: any(
                    e["kind"] == "decision" and e["name"] == "judge_candidate" for e in ev
                ),
                timeout=20,
            )
            await h.settle()
            decision = h.records("decision", "improver", "judge_candidate")[0]["payload"]
            assert decision["action"] == "reject-candidate"
            assert "81.0%" in decision["reason"]
            assert "80.0%" in decision["reason"]
            assert planner.called("promote") == []


async def test_plans_can_wait_for_approval(mlflow_server: MlflowServer) -> None:
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(mlflow_server, experiment, approval=["retrain", "scale"])
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.9, 0.5)])
        async with AgentHarness(Improver(), Tracker(), planner, settings=settings) as h:
            controls = Controls(h.client, wait=0.5)
            await h.emit("finding.drift.serve", DRIFT, source="checker")
            await h.emit("finding.slo.serve", slo(True, 100, 1), source="checker")
            await eventually(lambda: len(h.records("decision", "improver")) == 2)
            waiting = await h.call("improver", "plans")
            assert sorted(p["kind"] for p in waiting) == ["retrain", "scale"]
            assert planner.calls == []  # nothing done without approval
            scale_plan = next(p["id"] for p in waiting if p["kind"] == "scale")
            retrain_plan = next(p["id"] for p in waiting if p["kind"] == "retrain")
            rejected = await controls.reject("improver", scale_plan, reason="maintenance")
            assert rejected["approved"] is False
            await controls.approve("improver", retrain_plan, reason="looks right")
            await eventually(lambda: bool(planner.called("run")))
            assert planner.called("scale") == []
            with pytest.raises(NotFound, match="no approval"):
                await controls.approve("improver", scale_plan, reason="too late")
            # The improver decides nothing itself: approving and rejecting are the core's.
            assert not {"approve", "reject"} & set(Improver.actuators)
            assert "approval_timeouts" not in Improver.sensors


async def test_held_plans_are_listed_and_decided_by_operators(
    mlflow_server: MlflowServer, nats_url: str
) -> None:
    """``scanflow approvals``, ``approve`` and ``reject`` (and the console) reach the plans."""
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(mlflow_server, experiment, approval=["retrain", "scale"])
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.9, 0.5)])
        async with AgentHarness(
            Improver(), Tracker(), planner, nats_url=nats_url, settings=settings
        ) as h:
            improver = h.agents["improver"]
            assert isinstance(improver, Improver)
            controls = Controls(h.client, wait=0.5)
            await h.emit("finding.drift.serve", DRIFT, source="checker")
            await h.emit("finding.slo.serve", slo(True, 100, 1), source="checker")
            await eventually(lambda: len(h.records("decision", "improver")) == 2)
            held = {approval.kind: approval for approval in await controls.approvals()}
            assert sorted(held) == ["retrain", "scale"]
            retrain, scale = held["retrain"], held["scale"]
            assert retrain.agent == "improver"
            assert retrain.details["workflow"] == "serve"
            assert retrain.expires_in_s is not None
            assert 0 < retrain.expires_in_s <= 600  # the default approval_timeout
            decision = h.records("decision", "improver", "retrain_on_drift")[0]
            assert decision["payload"]["evidence"]["plan"] == retrain.id
            assert retrain.correlation_id == decision["correlation_id"]
            plans = await h.call("improver", "plans")  # the improver's own view: the same plans
            assert sorted(p["id"] for p in plans) == sorted([retrain.id, scale.id])

            # Rejected by an operator: the reservation goes, so the next finding plans anew.
            await controls.reject("improver", retrain.id, reason="not this week")
            await eventually(lambda: improver.retrainings.state("serve") is None)
            await h.emit("finding.drift.serve", DRIFT, source="checker")
            await eventually(lambda: len(h.records("decision", "improver")) == 3)
            (again,) = [a for a in await controls.approvals() if a.kind == "retrain"]
            assert again.id != retrain.id
            assert planner.calls == []

            # Approved by an operator: carried out.
            approved = await controls.approve("improver", again.id, reason="looks right")
            assert approved["approved"] is True
            await controls.approve("improver", scale.id, reason="traffic is real")
            await eventually(lambda: bool(planner.called("run") and planner.called("scale")))
            assert planner.called("scale") == [{"workflow": "serve", "replicas": 3}]
            assert await controls.approvals() == []
            with pytest.raises(NotFound, match="no approval"):
                await controls.approve("improver", scale.id, reason="twice")
            await h.settle()
            await eventually(lambda: len(h.records("control", "improver", "approve-done")) == 2)
            assert all(r["payload"]["ok"] for r in h.records("control", "improver", "approve-done"))


@pytest.mark.parametrize("on_timeout", ["reject", "approve", "hold"])
async def test_a_plan_nobody_decides_follows_the_timeout_policy(
    mlflow_server: MlflowServer, on_timeout: str
) -> None:
    """The core's approvals apply the policy: no sensor of the improver polls for it."""
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(
        mlflow_server, experiment, approval=["retrain"], approval_timeout=1.0, on_timeout=on_timeout
    )
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.9, 0.5)])
        async with AgentHarness(Improver(), Tracker(), planner, settings=settings) as h:
            improver = h.agents["improver"]
            assert isinstance(improver, Improver)
            await h.emit("finding.drift.serve", DRIFT, source="checker")
            await eventually(lambda: bool(h.records("decision", "improver")))
            assert len(await h.call("improver", "plans")) == 1  # not expired yet
            await eventually(lambda: bool(h.records("control", "improver", "expired")))
            await h.settle()
            # The audit trail says nobody decided, in the chain of the decision that held it.
            held = h.records("decision", "improver")[0]
            (expired,) = h.records("control", "improver", "expired")
            assert expired["payload"]["policy"] == on_timeout
            assert expired["payload"]["reason"] == "nobody decided within 1 s"
            assert expired["correlation_id"] == held["correlation_id"]
            waiting = await h.call("improver", "plans")
            if on_timeout == "approve":
                await eventually(lambda: bool(planner.called("run")))
                assert waiting == []
            elif on_timeout == "reject":
                assert planner.called("run") == []
                assert improver.retrainings.state("serve") is None
                assert waiting == []
            else:  # held: still waiting for a person, who may still decide it
                assert [plan["expires_in_s"] for plan in waiting] == [0.0]
                assert planner.called("run") == []
                await Controls(h.client, wait=0.5).approve(
                    "improver", waiting[0]["id"], reason="late, but checked"
                )
                await eventually(lambda: bool(planner.called("run")))


async def test_slo_findings_scale_out_then_in(mlflow_server: MlflowServer) -> None:
    quick = {"scale_in_windows": 2, "scale_in_cooldown": 0, "scale_out_cooldown": 0}
    settings = improver_settings(mlflow_server, "unused", scaling={"capacity_rps": 40, **quick})
    planner = Planner(None, "unused", [])  # type: ignore[arg-type]
    async with AgentHarness(Improver(), planner, settings=settings) as h:
        await h.emit("finding.slo.serve", slo(True, 100, 1), source="checker")
        await eventually(lambda: bool(planner.called("scale")))
        assert planner.called("scale") == [{"workflow": "serve", "replicas": 3}]
        for _ in range(2):
            await h.emit("finding.slo.serve", slo(False, 10, 3), source="checker")
        await eventually(lambda: len(planner.called("scale")) == 2)
        assert planner.called("scale")[-1] == {"workflow": "serve", "replicas": 1}
        await h.settle()
        actions = [d["payload"]["action"] for d in h.records("decision", "improver", "scale")]
        assert actions == ["scale-out", "scale-in"]


async def test_retraining_waits_for_enough_rows_since_the_drift(
    mlflow_server: MlflowServer,
) -> None:
    experiment = f"digits-{uuid.uuid4().hex[:6]}"
    settings = improver_settings(mlflow_server, experiment, min_dataset_rows=200)
    tracker = Tracker()
    tracker.counts = [40, 120, 260]  # at the finding, then at each check of the sensor
    async with KnowledgeClient(settings.mlflow) as client:
        planner = Planner(client, experiment, [(0.9, 0.5)])
        async with AgentHarness(Improver(), tracker, planner, settings=settings) as h:
            drift = {**DRIFT, "window": {"start": time.time() - 4, "end": time.time()}}
            await h.emit("finding.drift.serve", drift, source="checker")
            await eventually(lambda: bool(h.records("decision", "improver")))
            first = h.records("decision", "improver")[0]["payload"]
            assert first["action"] == "gather-data"
            assert (first["evidence"]["rows"], first["evidence"]["needed"]) == (40, 200)
            assert planner.called("run") == []
            for _ in range(2):  # the sensor checks again, as its schedule would
                await h.run_sensor("improver", "gathered")
            assert planner.called("run")
            await h.settle()
            retrain = h.records("decision", "improver", "retrain_when_gathered")[0]["payload"]
            assert "260 recent labelled row(s)" in retrain["reason"]


async def test_findings_about_a_workflow_not_managed_are_recorded_as_ignored(
    mlflow_server: MlflowServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = improver_settings(mlflow_server, "unused")
    planner = Planner(None, "unused", [])  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="scanflow_agents.builtin.improver")
    async with AgentHarness(Improver(), planner, settings=settings) as h:
        other = {**DRIFT, "workflow": "wine"}
        await h.emit("finding.drift.wine", other, source="checker")
        await h.emit(
            "finding.slo.wine", {**slo(True, 100, 1), "workflow": "wine"}, source="checker"
        )
        await h.emit(
            "finding.slo.wine", {**slo(False, 10, 1), "workflow": "wine"}, source="checker"
        )
        await eventually(lambda: len(h.records("decision", "improver")) == 2)
        await h.settle()
        decisions = [d["payload"] for d in h.records("decision", "improver")]
        assert [d["action"] for d in decisions] == ["ignored", "ignored"]
        assert "'wine' is not managed" in decisions[0]["reason"]
        assert decisions[0]["evidence"]["managed"] == ["serve"]
        assert planner.calls == []
    warnings = [r for r in caplog.records if "'wine'" in r.getMessage()]
    assert len(warnings) == 1  # once per workflow, not once per finding


class SlowPlanner(Planner, name="planner"):
    """A planner whose runs never end (no run event): the improver must not wait for ever."""

    @actuator()
    async def run(self, workflow: str, parameters: dict[str, dict[str, Any]] | None = None) -> str:
        self.calls.append(("run", {"workflow": workflow, "parameters": parameters}))
        return f"{workflow}-{len(self.calls)}"


async def test_a_running_retraining_notes_new_findings_and_times_out(
    mlflow_server: MlflowServer,
) -> None:
    settings = improver_settings(mlflow_server, "unused", retrain_timeout=1.0)
    planner = SlowPlanner(None, "unused", [])  # type: ignore[arg-type]
    improver = Improver()
    async with AgentHarness(improver, Tracker(), planner, settings=settings) as h:
        await h.emit("finding.drift.serve", DRIFT, source="checker")
        # The improver knows the run once the planner's answer is back, a moment after
        # the planner is called (in between, it notes "run not started yet": seen in CI).
        await eventually(lambda: "train-1" in improver.retrainings.runs)
        await h.emit("finding.performance.serve", DRIFT, source="checker")
        await eventually(lambda: len(h.records("decision", "improver")) == 2)
        await h.settle()
        # Two rule runs on two topics: their decisions may be stored in either order.
        decisions = [d["payload"] for d in h.records("decision", "improver")]
        assert sorted(d["action"] for d in decisions) == ["retrain", "retrain-noted"]
        noted = next(d for d in decisions if d["action"] == "retrain-noted")
        assert "a retraining is running (run train-1)" in noted["reason"]
        assert (await h.call("improver", "retraining"))["serve"]["state"] == "running"
        await asyncio.sleep(1.1)
        await h.run_sensor("improver", "overdue")
        await h.settle()
        timed_out = h.records("decision", "improver", "retrain_timed_out")[0]["payload"]
        assert timed_out["action"] == "retrain-timed-out"
        assert len(timed_out["evidence"]["retrainings"][0]["noted"]) == 1
        assert await h.call("improver", "retraining") == {}
        # Idle again (cooldown 0): the next finding starts a new retraining.
        await h.emit("finding.drift.serve", DRIFT, source="checker")
        await eventually(lambda: len(planner.called("run")) == 2)


async def test_a_tracker_outage_is_not_enough_rows(mlflow_server: MlflowServer) -> None:
    settings = improver_settings(mlflow_server, "unused", min_dataset_rows=200)
    planner = Planner(None, "unused", [])  # type: ignore[arg-type]
    async with AgentHarness(Improver(), planner, settings=settings) as h:  # no tracker runs
        drift = {**DRIFT, "window": {"start": time.time() - 4, "end": time.time()}}
        await h.emit("finding.drift.serve", drift, source="checker")
        await eventually(lambda: bool(h.records("decision", "improver")))
        await h.run_sensor("improver", "gathered")
        await h.settle()
        first = h.records("decision", "improver")[0]["payload"]
        assert first["action"] == "gather-data"
        assert "an unknown number of labelled row(s)" in first["reason"]
        assert planner.called("run") == []
        assert (await h.call("improver", "retraining"))["serve"]["state"] == "gathering"
