"""The improver: turns findings into plans, and hands them to the planner.

- drift or performance drift → retrain on recent labelled data (tracker's
  ``dataset``, planner's ``run``), then promote the candidate only if it beats
  production on held-out recent data by ``margin``, and redeploy the service;
- SLO findings → a replica target computed from demand (see ``scaling``);
- a promoted version that underperforms → roll back to the previous one;
- plan kinds listed in ``approval`` wait for a person, held in the agent's
  approvals (the core's): ``scanflow approvals``, ``approve``, ``reject`` and
  the console list and decide them, and the core applies ``on_timeout`` to
  a plan nobody decides within ``approval_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.builtin.improver.retrainings import Gathering, Retrainings, Running, State
from scanflow_agents.builtin.improver.scaling import Autoscaler
from scanflow_agents.builtin.improver.settings import ImproverSettings, PlanKind, Supervised

from scanflow_agents import (
    Agent,
    CallError,
    Decision,
    Event,
    NotFound,
    Observation,
    actuator,
    clocks,
    rule,
    sensor,
)
from scanflow_agents.messages import PendingApproval, new_id
from scanflow_agents.training import MODEL_VERSION_TAG, RUN_ID_TAG

logger = logging.getLogger(__name__)


@dataclass
class Probation:
    """A promoted version on probation: judged on its first labelled windows."""

    model_uri: str
    expected: float | None
    previous_accuracy: float | None
    previous: str | None
    accuracies: list[float] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        return {
            "model_uri": self.model_uri,
            "expected": self.expected,
            "previous_accuracy": self.previous_accuracy,
            "previous": self.previous,
        }


class Improver(Agent):
    """Plans retraining, promotion, rollback and scaling for the supervised workflows."""

    async def on_start(self) -> None:
        self.config = ImproverSettings.of(self.settings, self.name)
        self.scalers = {wf: Autoscaler(self.config.scaling) for wf in self.config.workflows}
        self.retrainings = Retrainings(self.config.retrain_timeout)
        self.watching: dict[str, Probation] = {}
        self.warned: set[str] = set()  # unmanaged workflows already logged

    def _supervised(self, workflow: str) -> Supervised | None:
        return self.config.workflows.get(workflow)

    def _ignored(self, event: Event, workflow: str) -> Decision:
        """The decision on a finding about a workflow this improver does not manage."""
        managed = sorted(self.config.workflows)
        if workflow not in self.warned:
            self.warned.add(workflow)  # once per workflow: findings come every window
            logger.warning(
                "improver: findings about workflow %r are ignored: it is not in "
                "settings.agents.improver.workflows (managed: %s)",
                workflow,
                ", ".join(managed) or "none",
            )
        return Decision(
            action="ignored",
            reason=(
                f"{event.topic}: workflow {workflow!r} is not managed by the improver "
                f"(managed: {', '.join(managed) or 'none'}); add it under "
                "settings.agents.improver.workflows"
            ),
            evidence={
                "finding": event.topic,
                "finding_id": event.id,
                "workflow": workflow,
                "managed": managed,
            },
        )

    # -- drift → retraining --------------------------------------------------------------

    @rule(on=("finding.drift.*", "finding.performance.*"), timeout=120)
    async def retrain_on_drift(self, event: Event) -> Decision | None:
        finding = event.payload if isinstance(event.payload, dict) else {}
        workflow = str(finding.get("workflow") or event.topic.rsplit(".", 1)[-1])
        supervised = self._supervised(workflow)
        if supervised is None:
            return self._ignored(event, workflow)
        kind = event.topic.split(".")[1]
        evidence = {"finding": event.topic, "finding_id": event.id, "summary": _summary(finding)}
        state = self.retrainings.state(workflow)
        if state is not None:
            # Not dropped: the finding is kept on the state and recorded here.
            state.noted.append(event.id)
            return Decision(
                action="retrain-noted",
                reason=f"{_kind(kind)} on {workflow}: {_busy(state)}; finding noted",
                evidence={**evidence, "retraining": self.retrainings.describe()[workflow]},
            )
        cooling = self.retrainings.cooling(workflow, self.config.retrain_cooldown)
        if cooling > 0:
            return Decision(
                action="retrain-cooling",
                reason=(
                    f"{_kind(kind)} on {workflow}: the last retraining ended less than "
                    f"{self.config.retrain_cooldown:g} s ago ({cooling:.0f} s to go); not retrained"
                ),
                evidence=evidence,
            )
        # Train on what came after the change, not on a mix with the old distribution.
        since = (finding.get("window") or {}).get("start")
        gathering = self.retrainings.gather(
            workflow,
            finding=event.id,
            kind=kind,
            since=since,
            evidence=evidence,
            wait=self.config.max_data_wait,
        )
        have = await self._labelled(workflow, supervised, since)
        if since is not None and (have is None or have < self.config.min_dataset_rows):
            counted = "an unknown number of" if have is None else str(have)
            return Decision(
                action="gather-data",
                reason=(
                    f"{_kind(kind)} on {workflow}: {counted} labelled row(s) since it began, "
                    f"waiting for {self.config.min_dataset_rows} (at most "
                    f"{self.config.max_data_wait:g} s) before retraining"
                ),
                evidence={**evidence, "rows": have, "needed": self.config.min_dataset_rows},
            )
        gathering.ready = True
        return await self._retrain(workflow, supervised, gathering, have)

    async def _retrain(
        self, workflow: str, supervised: Supervised, gathering: Gathering, rows: int | None
    ) -> Decision:
        train = supervised.train_workflow
        counted = "the" if rows is None else str(rows)
        reason = (
            f"{_kind(gathering.kind)} on {workflow}: retrain {train} on {counted} recent "
            "labelled row(s)"
        )

        async def execute() -> dict[str, Any]:
            return await self._start_retraining(workflow, supervised, gathering.since)

        evidence = {**gathering.evidence, "rows": rows, "noted": gathering.noted}
        return await self._plan("retrain", workflow, reason, evidence, execute)

    async def _labelled(
        self, workflow: str, supervised: Supervised, since: float | None
    ) -> int | None:
        """Labelled rows since ``since``, or ``None`` when the tracker cannot tell now."""
        ask = {"workflow": workflow, "node": supervised.node, "since": since}
        try:
            count = await self.call("tracker", "labelled", ask)
        except NotFound as exc:
            # A tracker without the count: waiting could only ever end at the deadline.
            logger.warning("improver: the tracker cannot count rows (%s); not waiting", exc)
            return self.config.min_dataset_rows
        except CallError as exc:
            # An outage is not "enough rows": keep gathering until the count comes or
            # the wait is over.
            logger.warning("improver: cannot count the labelled rows of %r now: %s", workflow, exc)
            return None
        return int(count)

    @sensor(every=2.0)
    async def gathered(self) -> list[dict[str, Any]] | None:
        """Retrainings waiting for data whose rows are there (or whose wait is over)."""
        ready = []
        for workflow, state in self.retrainings.gathering():
            supervised = self.config.workflows[workflow]
            rows = await self._labelled(workflow, supervised, state.since)
            enough = rows is not None and rows >= self.config.min_dataset_rows
            if enough or self.retrainings.overdue(state):
                ready.append({"workflow": workflow, "rows": rows})
        return ready or None

    @rule("gathered", timeout=120)
    async def retrain_when_gathered(self, observation: Observation) -> Decision | None:
        # The state moves here, not in the sensor: a replay gives this rule the
        # recorded observation without running the sensor, and must decide alike.
        decisions = []
        for item in observation.value:
            workflow = item["workflow"]
            state = self.retrainings.state(workflow)
            if not isinstance(state, Gathering) or state.ready:
                continue  # planned already (an observation taken before it was)
            state.ready = True
            supervised = self.config.workflows[workflow]
            decisions.append(await self._retrain(workflow, supervised, state, item["rows"]))
        return decisions[0] if decisions else None

    @sensor(every=5.0)
    async def overdue(self) -> list[dict[str, Any]] | None:
        """Retraining runs past their deadline (``retrain_timeout``): forgotten, workflow idle."""
        out = [
            {
                "workflow": workflow,
                "run_id": state.run_id,
                "noted": state.noted,
                "running_s": round(self.retrainings.clock() - state.started, 1),
            }
            for workflow, state in self.retrainings.timed_out()
        ]
        return out or None

    @rule("overdue")
    async def retrain_timed_out(self, observation: Observation) -> Decision | None:
        items = list(observation.value)
        workflows = ", ".join(f"{i['workflow']} (run {i['run_id']})" for i in items)
        return Decision(
            action="retrain-timed-out",
            reason=(
                f"no end of the retraining of {workflows} after "
                f"{self.config.retrain_timeout:g} s; a new finding may start another"
            ),
            evidence={"retrainings": items},
        )

    async def _dataset(
        self, workflow: str, supervised: Supervised, since: float | None
    ) -> dict[str, Any]:
        """Recent labelled rows: since the drift was seen if there are enough, else the newest."""
        ask = {"workflow": workflow, "node": supervised.node, "limit": self.config.dataset_rows}
        if since is not None:
            try:
                recent = {**ask, "since": since}
                found: dict[str, Any] = await self.call("tracker", "dataset", recent)
                if int(found.get("rows", 0)) >= self.config.min_dataset_rows:
                    return found
            except NotFound:
                pass  # nothing labelled since: fall back to the newest rows
        newest: dict[str, Any] = await self.call("tracker", "dataset", ask)
        return newest

    async def _start_retraining(
        self, workflow: str, supervised: Supervised, since: float | None = None
    ) -> dict[str, Any]:
        self.retrainings.start(workflow)
        try:
            dataset = await self._dataset(workflow, supervised, since)
            parameters = {
                supervised.train_node: {**supervised.train_parameters, "recent": dataset["uri"]}
            }
            run_id = str(
                await self.call(
                    "planner",
                    "run",
                    {"workflow": supervised.train_workflow, "parameters": parameters},
                )
            )
        except Exception:
            self.retrainings.drop(workflow)
            raise
        if not self.retrainings.started(workflow, run_id, dataset):
            return {"run_id": run_id, "dataset": dataset, "ended": True}  # judged already
        return {"run_id": run_id, "dataset": dataset}

    @rule(on="run.*.*", timeout=1200)
    async def judge_candidate(self, event: Event) -> Decision | None:
        status = event.payload if isinstance(event.payload, dict) else {}
        run_id = str(status.get("run_id"))
        workflow = self.retrainings.of_run(
            run_id,
            lambda wf: self.config.workflows[wf].train_workflow == status.get("workflow"),
        )
        if workflow is None:
            return None  # not a retraining of ours
        supervised = self.config.workflows[workflow]
        ended = self.retrainings.end(workflow, run_id)
        noted = ended.noted if ended is not None else []
        if status.get("state") != "succeeded":
            return Decision(
                action="retrain-failed",
                reason=f"retraining run {run_id} {status.get('state')}: {status.get('message')}",
                evidence={"run": run_id, "failed_node": status.get("failed_node"), "noted": noted},
            )
        candidate = await self._candidate(supervised, run_id)
        if candidate is None:
            return Decision(
                action="reject-candidate",
                reason=(
                    f"no registered model found for run {run_id}: the training step must "
                    "register its model with scanflow_agents.training.register_candidate"
                ),
                evidence={"run": run_id, "noted": noted},
            )
        new, old = candidate["recent_accuracy"], candidate["production_recent_accuracy"]
        evidence = {"run": run_id, "margin": self.config.margin, "noted": noted, **candidate}
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

    async def _candidate(self, supervised: Supervised, run_id: str) -> dict[str, Any] | None:
        client = self.knowledge
        experiment = await client.experiment_id(supervised.experiment)
        if experiment is None:
            return None
        runs, _ = await client.search_runs(
            [experiment],
            f"tags.`{RUN_ID_TAG}` = '{run_id}'",
            max_results=10,
            operation=f"finding the training run of {run_id}",
        )
        for run in runs:
            version = run.data.tags.get(MODEL_VERSION_TAG)
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
            "planner", "promote", {"model": supervised.model, "version": candidate["version"]}
        )
        model_uri = f"models:/{supervised.model}/{candidate['version']}"
        redeployed = await self.call(
            "planner",
            "redeploy",
            {"workflow": workflow, "node": supervised.node, "model_uri": model_uri},
            timeout=900,
        )
        previous = promoted.get("previous")
        self.watching[workflow] = Probation(
            model_uri=model_uri,
            expected=candidate["recent_accuracy"],
            previous_accuracy=candidate["production_recent_accuracy"],
            previous=None if previous is None else str(previous),
        )
        return {"promoted": promoted, "redeployed": redeployed}

    # -- probation → rollback ------------------------------------------------------------

    @rule(on="observation.tracker.serving", timeout=1200)
    async def probation(self, event: Event) -> Decision | None:
        payload = event.payload if isinstance(event.payload, dict) else {}
        window = payload.get("value") or {}
        workflow = str(window.get("workflow"))
        watch = self.watching.get(workflow)
        if watch is None or window.get("model_uris") != [watch.model_uri]:
            return None
        labels = window.get("labels") or {}
        if int(labels.get("matched") or 0) < self.config.rollback_min_labels:
            return None
        watch.accuracies.append(float(window["accuracy"]))
        if len(watch.accuracies) < self.config.rollback_windows:
            return None
        del self.watching[workflow]
        seen = sum(watch.accuracies) / len(watch.accuracies)
        # Underperforming means doing worse than the version it replaced did on the
        # same recent data; without that figure, worse than its own evaluation allows.
        if watch.previous_accuracy is not None:
            floor = float(watch.previous_accuracy)
        else:
            floor = float(watch.expected or 0) - self.config.rollback_margin
        evidence = {
            **watch.evidence(),
            "accuracy": seen,
            "windows": len(watch.accuracies),
            "floor": floor,
        }
        if seen >= floor or not watch.previous:
            return Decision(
                action="confirm-promotion",
                reason=f"{watch.model_uri} serves at {_pct(seen)}, above {_pct(floor)}",
                evidence=evidence,
            )
        supervised = self.config.workflows[workflow]
        previous = watch.previous
        reason = (
            f"{watch.model_uri} serves at {_pct(seen)}, below {_pct(floor)}: "
            f"roll back to version {previous}"
        )

        async def execute() -> Any:
            await self.call("planner", "promote", {"model": supervised.model, "version": previous})
            uri = f"models:/{supervised.model}/{previous}"
            redeployed: dict[str, Any] = await self.call(
                "planner",
                "redeploy",
                {"workflow": workflow, "node": supervised.node, "model_uri": uri},
                timeout=900,
            )
            return redeployed

        return await self._plan("rollback", workflow, reason, evidence, execute)

    # -- SLO → scaling -------------------------------------------------------------------

    @rule(on="finding.slo.*", timeout=600)
    async def scale(self, event: Event) -> Decision | None:
        finding = event.payload if isinstance(event.payload, dict) else {}
        workflow = str(finding.get("workflow"))
        scaler = self.scalers.get(workflow)
        supervised = self._supervised(workflow)
        if scaler is None or supervised is None:
            # An all-clear needs nothing done; only a breach deserves the record.
            return self._ignored(event, workflow) if finding.get("breached") else None
        plan = scaler.plan(finding)
        if plan is None:
            return None
        action = "scale-out" if plan.target > plan.current else "scale-in"
        evidence = {**plan.evidence, "target": plan.target}

        node = str(finding.get("node") or supervised.node)

        async def execute() -> Any:
            result = await self.call(
                "planner",
                "scale",
                {"workflow": workflow, "node": node, "replicas": plan.target},
                timeout=300,
            )
            scaler.changed_at = clocks.wall()  # windows from now on see the new replicas
            return result

        return await self._plan("scale", workflow, plan.reason, evidence, execute, action=action)

    # -- plans and approvals -------------------------------------------------------------

    async def _plan(
        self,
        kind: PlanKind,
        workflow: str,
        reason: str,
        evidence: dict[str, Any],
        execute: Callable[[], Awaitable[Any]],
        *,
        action: str | None = None,
    ) -> Decision:
        """Carry a plan out now, or hold it for approval; the decision records which."""
        action = action or kind
        if kind in self.config.approval:
            plan_id = new_id()[-12:]
            self._hold(plan_id, kind, workflow, reason, evidence, execute)
            return Decision(
                action=f"{action}-awaiting-approval",
                reason=f"{reason} (plan {plan_id} waits for approval)",
                evidence={**evidence, "plan": plan_id},
            )
        try:
            outcome = await execute()
        except Exception as exc:
            if kind == "retrain":
                self.retrainings.drop(workflow)
            return Decision(
                action=f"{action}-failed", reason=f"{reason}; failed: {exc}", evidence=evidence
            )
        return Decision(action=action, reason=reason, evidence={**evidence, "outcome": outcome})

    def _hold(
        self,
        plan_id: str,
        kind: PlanKind,
        workflow: str,
        reason: str,
        evidence: dict[str, Any],
        execute: Callable[[], Awaitable[Any]],
    ) -> None:
        """Hold a plan in the agent's approvals, where every way of deciding it meets.

        Operators decide it with control messages (``scanflow approve``, the
        console), and the core applies ``on_timeout`` once ``approval_timeout``
        has passed; either way the plan is carried out or dropped once, and
        the decision is recorded in the chain of the decision that held it.
        """

        async def approved(why: str) -> Any:
            return await execute()

        async def rejected(why: str) -> None:
            self.retrainings.drop(workflow)  # the workflow may retrain on the next finding

        self.approvals.hold(
            kind,
            reason,
            approved,
            on_reject=rejected if kind == "retrain" else None,
            details={**evidence, "workflow": workflow},
            approval_id=plan_id,
            timeout=self.config.approval_timeout,
            on_timeout=self.config.on_timeout,
        )

    @actuator()
    async def plans(self) -> list[dict[str, Any]]:
        """The plans waiting for approval (decide them with ``scanflow approve`` / ``reject``)."""
        return [_listed(item) for item in self.approvals.listing().approvals]

    @actuator()
    async def retraining(self) -> dict[str, dict[str, Any]]:
        """The workflows with a retraining in progress: state, deadline, findings noted."""
        return self.retrainings.describe()


def _listed(approval: PendingApproval) -> dict[str, Any]:
    """A held plan as ``plans`` has always shown it: the workflow apart from the evidence."""
    evidence = dict(approval.details)
    return {
        "id": approval.id,
        "kind": approval.kind,
        "workflow": evidence.pop("workflow", None),
        "summary": approval.summary,
        "evidence": evidence,
        "waiting_s": approval.waiting_s,
        "expires_in_s": approval.expires_in_s,
    }


def _kind(kind: str) -> str:
    return {"drift": "input drift", "performance": "performance drift"}.get(kind, kind)


def _busy(state: State) -> str:
    if isinstance(state, Running):
        run = state.run_id or "not started yet"
        return f"a retraining is running (run {run})"
    return "a retraining waits for labelled rows" if not state.ready else "a retraining is planned"


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
