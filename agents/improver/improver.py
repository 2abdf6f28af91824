"""The improver: turns findings into plans, and hands them to the planner.

- drift or performance drift → retrain on recent labelled data (tracker's
  ``dataset``, planner's ``run``), then promote the candidate only if it beats
  production on held-out recent data by ``margin``, and redeploy the service;
- SLO findings → a replica target computed from demand (see ``scaling``);
- a promoted version that underperforms → roll back to the previous one;
- plan kinds listed in ``approval`` wait for ``approve``/``reject``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from scanflow_agents.builtin.improver.approvals import Approvals, PendingPlan
from scanflow_agents.builtin.improver.scaling import Autoscaler
from scanflow_agents.builtin.improver.settings import ImproverSettings, Supervised

from scanflow_agents import (
    Agent,
    Decision,
    Event,
    NotFound,
    Observation,
    actuator,
    rule,
    sensor,
)
from scanflow_agents.messages import new_id

logger = logging.getLogger(__name__)


class Improver(Agent):
    """Plans retraining, promotion, rollback and scaling for the supervised workflows."""

    async def on_start(self) -> None:
        self.config = ImproverSettings.of(self.settings, self.name)
        self.approvals = Approvals(self.config.approval_timeout)
        self.scalers = {wf: Autoscaler(self.config.scaling) for wf in self.config.workflows}
        self.retraining: dict[str, dict[str, Any]] = {}  # workflow -> run in flight
        self.runs: dict[str, str] = {}  # planner run id -> workflow
        self.ended: deque[str] = deque(maxlen=100)  # runs judged (maybe before `run` answered)
        self.last_retrain_end: dict[str, float] = {}
        self.watching: dict[str, dict[str, Any]] = {}  # workflow -> promoted version on probation

    def _supervised(self, workflow: str) -> Supervised | None:
        return self.config.workflows.get(workflow)

    # -- drift → retraining --------------------------------------------------------------

    @rule(on=("finding.drift.*", "finding.performance.*"), timeout=120)
    async def retrain_on_drift(self, event: Event) -> Decision | None:
        finding = event.payload
        workflow = str(finding.get("workflow") or event.topic.rsplit(".", 1)[-1])
        supervised = self._supervised(workflow)
        if supervised is None:
            return None
        if workflow in self.retraining:
            logger.info("a retraining of %r is already running; finding noted", workflow)
            return None
        quiet_until = self.last_retrain_end.get(workflow, -1e18) + self.config.retrain_cooldown
        if time.monotonic() < quiet_until:
            logger.info(
                "retraining of %r cools down for %.0f s more",
                workflow,
                quiet_until - time.monotonic(),
            )
            return None
        kind = event.topic.split(".")[1]
        # Train on what came after the change, not on a mix with the old distribution.
        since = (finding.get("window") or {}).get("start")
        evidence = {"finding": event.topic, "finding_id": event.id, "summary": _summary(finding)}
        self.retraining[workflow] = {"state": "gathering", "finding": event.id}
        have = await self._labelled(workflow, supervised, since)
        if since is not None and have < self.config.min_dataset_rows:
            self.retraining[workflow].update(
                since=since, deadline=time.monotonic() + self.config.max_data_wait, kind=kind,
                evidence=evidence,
            )  # fmt: skip
            return Decision(
                action="gather-data",
                reason=(
                    f"{_kind(kind)} on {workflow}: {have} labelled row(s) since it began, "
                    f"waiting for {self.config.min_dataset_rows} (at most "
                    f"{self.config.max_data_wait:g} s) before retraining"
                ),
                evidence={**evidence, "rows": have, "needed": self.config.min_dataset_rows},
            )
        return await self._retrain(workflow, supervised, kind, since, evidence, have)

    async def _retrain(
        self, workflow: str, supervised: Supervised, kind: str, since: float | None,
        evidence: dict[str, Any], rows: int,
    ) -> Decision:  # fmt: skip
        train = supervised.train_workflow
        reason = f"{_kind(kind)} on {workflow}: retrain {train} on {rows} recent labelled row(s)"

        async def execute() -> dict[str, Any]:
            return await self._start_retraining(workflow, supervised, since)

        return await self._plan("retrain", workflow, reason, {**evidence, "rows": rows}, execute)

    async def _labelled(self, workflow: str, supervised: Supervised, since: float | None) -> int:
        try:
            count: int = await self.call(
                "tracker", "labelled", workflow=workflow, node=supervised.node, since=since
            )
        except Exception as exc:  # an older tracker without the count: do not wait
            logger.warning("cannot count the labelled rows of %r: %s", workflow, exc)
            return self.config.min_dataset_rows
        return count

    @sensor(every=2.0)
    async def gathered(self) -> list[dict[str, Any]] | None:
        """Retrainings waiting for data whose rows are there (or whose wait is over)."""
        ready = []
        for workflow, plan in self.retraining.items():
            if plan.get("state") != "gathering" or "since" not in plan:
                continue
            supervised = self.config.workflows[workflow]
            rows = await self._labelled(workflow, supervised, plan["since"])
            if rows >= self.config.min_dataset_rows or time.monotonic() >= plan["deadline"]:
                plan["state"] = "ready"
                ready.append({"workflow": workflow, "rows": rows})
        return ready or None

    @rule("gathered", timeout=120)
    async def retrain_when_gathered(self, observation: Observation) -> Decision | None:
        decisions = []
        for item in observation.value:
            workflow = item["workflow"]
            plan = self.retraining.get(workflow)
            if plan is None or plan.get("state") != "ready":
                continue
            supervised = self.config.workflows[workflow]
            decisions.append(
                await self._retrain(
                    workflow,
                    supervised,
                    plan["kind"],
                    plan["since"],
                    plan["evidence"],
                    item["rows"],
                )
            )
        return decisions[0] if decisions else None

    async def _dataset(
        self, workflow: str, supervised: Supervised, since: float | None
    ) -> dict[str, Any]:
        """Recent labelled rows: since the drift was seen if there are enough, else the newest."""
        ask = {"workflow": workflow, "node": supervised.node, "limit": self.config.dataset_rows}
        if since is not None:
            try:
                found: dict[str, Any] = await self.call("tracker", "dataset", ask, since=since)
                if int(found.get("rows", 0)) >= self.config.min_dataset_rows:
                    return found
            except NotFound:
                pass  # nothing labelled since: fall back to the newest rows
        newest: dict[str, Any] = await self.call("tracker", "dataset", ask)
        return newest

    async def _start_retraining(
        self, workflow: str, supervised: Supervised, since: float | None = None
    ) -> dict[str, Any]:
        try:
            dataset = await self._dataset(workflow, supervised, since)
            run_id = await self.call(
                "planner", "run", workflow=supervised.train_workflow,
                parameters={
                    supervised.train_node: {**supervised.train_parameters, "recent": dataset["uri"]}
                },
            )  # fmt: skip
        except Exception:
            self.retraining.pop(workflow, None)
            raise
        if run_id in self.ended:
            return {"run_id": run_id, "dataset": dataset, "ended": True}  # judged already
        self.retraining[workflow] = {"state": "running", "run_id": run_id, "dataset": dataset}
        self.runs[run_id] = workflow
        return {"run_id": run_id, "dataset": dataset}

    @rule(on="run.*.*", timeout=1200)
    async def judge_candidate(self, event: Event) -> Decision | None:
        status = event.payload if isinstance(event.payload, dict) else {}
        workflow = self._retraining_of(status)
        if workflow is None:
            return None  # not a retraining of ours
        self.ended.append(str(status.get("run_id")))
        supervised = self.config.workflows[workflow]
        self.retraining.pop(workflow, None)
        self.last_retrain_end[workflow] = time.monotonic()
        if status.get("state") != "succeeded":
            return Decision(
                action="retrain-failed",
                reason=(
                    f"retraining run {status.get('run_id')} {status.get('state')}: "
                    f"{status.get('message')}"
                ),
                evidence={"run": status.get("run_id"), "failed_node": status.get("failed_node")},
            )
        candidate = await self._candidate(supervised, str(status["run_id"]))
        if candidate is None:
            return Decision(
                action="reject-candidate",
                reason=f"no registered model found for run {status['run_id']}",
                evidence={"run": status["run_id"]},
            )
        new, old = candidate["recent_accuracy"], candidate["production_recent_accuracy"]
        evidence = {"run": status["run_id"], "margin": self.config.margin, **candidate}
        if new is None or (old is not None and new < old + self.config.margin):
            return Decision(
                action="reject-candidate",
                reason=(
                    f"candidate v{candidate['version']} scores {_pct(new)} on held-out recent "
                    f"data, production {_pct(old)}: not better by {self.config.margin:.0%}"
                ),
                evidence=evidence,
            )
        reason = (
            f"candidate v{candidate['version']} scores {_pct(new)} on held-out recent data vs "
            f"production {_pct(old)}: promote and redeploy {workflow}"
        )

        async def execute() -> dict[str, Any]:
            return await self._promote(workflow, supervised, candidate)

        return await self._plan("promote", workflow, reason, evidence, execute)

    def _retraining_of(self, status: dict[str, Any]) -> str | None:
        """The supervised workflow whose retraining this run is, if it is one of ours.

        By run id when the planner's answer has come; otherwise by training
        workflow (a fast run can end before ``run`` returns its id): at most one
        retraining per supervised workflow is in flight, so that is unambiguous.
        """
        run_id = str(status.get("run_id"))
        if run_id in self.runs:
            return self.runs.pop(run_id)
        for workflow, plan in self.retraining.items():
            supervised = self.config.workflows[workflow]
            if plan.get("run_id") is None and supervised.train_workflow == status.get("workflow"):
                plan["run_id"] = run_id  # so the answer of `run`, when it comes, is not kept
                return workflow
        return None

    async def _candidate(self, supervised: Supervised, run_id: str) -> dict[str, Any] | None:
        client = self.knowledge
        experiment = await client.experiment_id(supervised.experiment)
        if experiment is None:
            return None
        runs, _ = await client.search_runs(
            [experiment], f"tags.`scanflow.run_id` = '{run_id}'", max_results=10,
            operation=f"finding the training run of {run_id}",
        )  # fmt: skip
        for run in runs:
            version = run.data.tags.get("scanflow.model_version")
            if version:
                metrics = run.data.metrics
                return {
                    "model": supervised.model,
                    "version": version,
                    "mlflow_run": run.info.run_id,
                    "recent_accuracy": metrics.get("recent_accuracy"),
                    "production_recent_accuracy": metrics.get("production_recent_accuracy"),
                    "accuracy": metrics.get("accuracy"),
                }
        return None

    async def _promote(
        self, workflow: str, supervised: Supervised, candidate: dict[str, Any]
    ) -> dict[str, Any]:
        promoted = await self.call(
            "planner", "promote", model=supervised.model, version=candidate["version"]
        )
        model_uri = f"models:/{supervised.model}/{candidate['version']}"
        redeployed = await self.call(
            "planner", "redeploy", workflow=workflow, node=supervised.node, model_uri=model_uri,
            timeout=900,
        )  # fmt: skip
        self.watching[workflow] = {
            "model_uri": model_uri,
            "expected": candidate["recent_accuracy"],
            "previous_accuracy": candidate["production_recent_accuracy"],
            "previous": promoted.get("previous"),
            "accuracies": [],
        }
        return {"promoted": promoted, "redeployed": redeployed}

    # -- probation → rollback ------------------------------------------------------------

    @rule(on="observation.tracker.serving", timeout=1200)
    async def probation(self, event: Event) -> Decision | None:
        window = (event.payload or {}).get("value") or {}
        workflow = str(window.get("workflow"))
        watch = self.watching.get(workflow)
        if watch is None or window.get("model_uris") != [watch["model_uri"]]:
            return None
        labels = window.get("labels") or {}
        if int(labels.get("matched") or 0) < self.config.rollback_min_labels:
            return None
        watch["accuracies"].append(float(window["accuracy"]))
        if len(watch["accuracies"]) < self.config.rollback_windows:
            return None
        del self.watching[workflow]
        seen = sum(watch["accuracies"]) / len(watch["accuracies"])
        # Underperforming means doing worse than the version it replaced did on the
        # same recent data; without that figure, worse than its own evaluation allows.
        if watch["previous_accuracy"] is not None:
            floor = float(watch["previous_accuracy"])
        else:
            floor = float(watch["expected"] or 0) - self.config.rollback_margin
        evidence = {**{k: v for k, v in watch.items() if k != "accuracies"}, "accuracy": seen,
                    "windows": len(watch["accuracies"]), "floor": floor}  # fmt: skip
        if seen >= floor or not watch["previous"]:
            return Decision(
                action="confirm-promotion",
                reason=f"{watch['model_uri']} serves at {_pct(seen)}, above {_pct(floor)}",
                evidence=evidence,
            )
        supervised = self.config.workflows[workflow]
        previous = str(watch["previous"])
        reason = (
            f"{watch['model_uri']} serves at {_pct(seen)}, below {_pct(floor)}: "
            f"roll back to version {previous}"
        )

        async def execute() -> dict[str, Any]:
            await self.call("planner", "promote", model=supervised.model, version=previous)
            uri = f"models:/{supervised.model}/{previous}"
            redeployed: dict[str, Any] = await self.call(
                "planner", "redeploy", workflow=workflow, node=supervised.node, model_uri=uri,
                timeout=900,
            )  # fmt: skip
            return redeployed

        return await self._plan("rollback", workflow, reason, evidence, execute)

    # -- SLO → scaling -------------------------------------------------------------------

    @rule(on="finding.slo.*", timeout=600)
    async def scale(self, event: Event) -> Decision | None:
        finding = event.payload or {}
        workflow = str(finding.get("workflow"))
        scaler = self.scalers.get(workflow)
        supervised = self._supervised(workflow)
        if scaler is None or supervised is None:
            return None
        plan = scaler.plan(finding)
        if plan is None:
            return None
        action = "scale-out" if plan.target > plan.current else "scale-in"
        evidence = {**plan.evidence, "target": plan.target}

        node = str(finding.get("node") or supervised.node)

        async def execute() -> Any:
            result = await self.call(
                "planner", "scale", workflow=workflow, node=node, replicas=plan.target, timeout=300
            )
            scaler.changed_at = time.time()  # windows from now on see the new replicas
            return result

        return await self._plan("scale", workflow, plan.reason, evidence, execute, action=action)

    # -- plans and approvals -------------------------------------------------------------

    async def _plan(
        self, kind: str, workflow: str, reason: str, evidence: dict[str, Any],
        execute: Any, *, action: str | None = None,
    ) -> Decision:  # fmt: skip
        """Carry a plan out now, or hold it for approval; the decision records which."""
        action = action or kind
        if kind in self.config.approval:
            plan_id = new_id()[-12:]
            self.approvals.hold(PendingPlan(plan_id, kind, workflow, reason, evidence, execute))
            return Decision(
                action=f"{action}-awaiting-approval",
                reason=f"{reason} (plan {plan_id} waits for approval)",
                evidence={**evidence, "plan": plan_id},
            )
        try:
            outcome = await execute()
        except Exception as exc:
            if kind == "retrain":
                self.retraining.pop(workflow, None)
            return Decision(
                action=f"{action}-failed", reason=f"{reason}; failed: {exc}", evidence=evidence
            )
        return Decision(action=action, reason=reason, evidence={**evidence, "outcome": outcome})

    @actuator(timeout=1200)
    async def approve(self, plan: str, reason: str = "") -> dict[str, Any]:
        """Approve a waiting plan and carry it out now.

        Args:
            plan: The plan id (see ``plans``).
            reason: Why, for the audit trail.
        """
        pending = self.approvals.take(plan)
        outcome = await pending.execute()
        return {
            "plan": plan,
            "kind": pending.kind,
            "approved": True,
            "reason": reason,
            "outcome": outcome,
        }

    @actuator()
    async def reject(self, plan: str, reason: str) -> dict[str, Any]:
        """Reject a waiting plan.

        Args:
            plan: The plan id (see ``plans``).
            reason: Why, for the audit trail.
        """
        pending = self.approvals.take(plan)
        if pending.kind == "retrain":
            self.retraining.pop(pending.workflow, None)
        return {"plan": plan, "kind": pending.kind, "approved": False, "reason": reason}

    @actuator()
    async def plans(self) -> list[dict[str, Any]]:
        """The plans waiting for approval."""
        return self.approvals.listing()

    @sensor(every=1.0, publish=False)
    async def approval_timeouts(self) -> None:
        """Apply the timeout policy to plans nobody approved in time."""
        for pending in self.approvals.expired():
            if self.config.on_timeout == "approve":
                logger.warning("plan %s (%s) approved by timeout", pending.id, pending.summary)
                await pending.execute()
            else:
                logger.warning("plan %s (%s) rejected by timeout", pending.id, pending.summary)
                if pending.kind == "retrain":
                    self.retraining.pop(pending.workflow, None)


def _kind(kind: str) -> str:
    return {"drift": "input drift", "performance": "performance drift"}.get(kind, kind)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _summary(finding: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "workflow",
        "node",
        "model_uri",
        "test",
        "features_moved",
        "error_rate_before",
        "error_rate_now",
    )
    return {key: finding[key] for key in keep if key in finding}
