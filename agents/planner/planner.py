"""The planner: the "execute" of MAPE-K. It builds, deploys, runs, scales and redeploys.

Its one sensor checks what its platform needs (a cluster's namespaces and
permissions: the preflight); until nothing is missing the planner is not
ready, and says what is missing. It decides nothing on its own: other agents (the improver,
an operator at the console) decide, and call its actuators. What it adds is
the application catalog (which workflows exist, where their scripts are), the
mapping of platform failures onto the wire's error codes, and the events that
say a batch run ended: ``run.<workflow>.succeeded`` or ``run.<workflow>.failed``
(``cancelled`` too), with the run's final status, in the chain of the call
that started it, so a retraining plan reads back as one story.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field, ValidationError
from scanflow_agents.builtin.planner.catalog import Catalog, stored_form, summary
from scanflow_agents.builtin.planner.platforms import make_platform
from scanflow_agents.builtin.planner.runstore import KeyValueRunStore
from scanflow_agents.builtin.planner.settings import PlannerSettings

from scanflow_agents import (
    Agent,
    BadInput,
    NotFound,
    PermanentError,
    actuator,
    chains,
    sensor,
)
from scanflow_agents.knowledge import (
    ApplicationStore,
    KnowledgeClient,
    KnowledgeError,
    ModelRegistry,
)
from scanflow_agents.platforms import ActionResult, Platform, PlatformError, RunStatus
from scanflow_agents.redaction import redact
from scanflow_agents.transports import KeyValue
from scanflow_agents.workflows import ServiceNode, Workflow, WorkflowError

#: Key-value buckets (one per namespace) of run records, and of the chains runs' end
#: events belong to.
RUNS = "scanflow-planner-runs"
CHAINS = "scanflow-planner-chains"

logger = logging.getLogger("scanflow_agents.builtin.planner")

#: The most replicas one scale call may ask for: a typo (300 for 3) must not fork-bomb a node.
MAX_REPLICAS = 64
#: The longest ``wait`` may block (the actuator's own timeout is set above it).
MAX_WAIT = 3600.0

_SAFE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
NonEmpty = Annotated[str, Field(min_length=1)]
AliasName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$", max_length=255)]


#: Seconds between preflight checks while the platform lacks something.
PREFLIGHT_INTERVAL = 30.0


class Planner(Agent):
    """Executes plans on a platform: build, deploy, run, scale, redeploy, promote.

    Configured by ``settings.agents["planner"]`` (see :class:`PlannerSettings`).
    """

    name = "planner"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = PlannerSettings()
        self.catalog = Catalog()
        self._platform: Platform | None = None
        self._knowledge: KnowledgeClient | None = None
        # Run id -> (workflow, correlation id, id of the call that started it): the
        # chain the run's end event belongs to, whichever task reports the end.
        self._chains: dict[str, tuple[str, str | None, str | None]] = {}
        self._store: KeyValueRunStore | None = None
        self._chains_kv: KeyValue | None = None  # the chains of runs started here
        # Applications from the settings' files, which stored versions never replace.
        self._from_files: set[str] = set()
        # What the platform lacks (the preflight's last answer): not ready while any.
        self._missing: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        """Validate the settings, open the platform and MLflow, load the application files."""
        try:
            self.options = PlannerSettings.from_settings(self.settings)
        except ValidationError as exc:
            raise ValueError(f"planner: bad settings in settings.agents.planner: {exc}") from None
        self.catalog, self._from_files = Catalog(), set()
        for path in self.options.applications:
            try:
                loaded = self.catalog.load(path)
                self.catalog.register(loaded)
                self._from_files.add(loaded.name)
            except (WorkflowError, BadInput, OSError) as exc:
                raise ValueError(f"planner: cannot load application file {path}: {exc}") from exc
        self._knowledge = KnowledgeClient(self.settings.mlflow)
        # Run records and chains in JetStream key-value: a planner restarted
        # mid-run follows its runs again and still sends their end events.
        self._store = KeyValueRunStore(await self.key_value(_bucket(RUNS, self.settings.namespace)))
        self._chains_kv = await self.key_value(_bucket(CHAINS, self.settings.namespace))
        self._platform = make_platform(self.settings, self.options, self._run_finished, self._store)
        await self._preflight()
        resumed = await self._platform.resume()
        if resumed:
            logger.info("planner: following %d run(s) again: %s", len(resumed), resumed)
        logger.info(
            "planner: %s platform, %d workflow(s) known: %s",
            self.options.platform,
            len(self.catalog.owners),
            ", ".join(sorted(self.catalog.owners)) or "none",
        )

    async def on_stop(self) -> None:
        """Close the platform (the local one stops its services) and the MLflow client."""
        platform, self._platform = self._platform, None
        knowledge, self._knowledge = self._knowledge, None
        if platform is not None:
            await platform.close()
        if knowledge is not None:
            await knowledge.aclose()
        self._chains.clear()

    # -- preflight -----------------------------------------------------------------------

    def unready(self) -> list[str]:
        """What the platform lacks: the planner serves no plans it would fail to execute."""
        return [f"{self.options.platform} platform: {missing}" for missing in self._missing]

    @sensor(every=PREFLIGHT_INTERVAL, publish=False)
    async def preflight(self) -> dict[str, list[str]]:
        """Check again, while anything is missing, what the platform needs (a cluster's
        namespaces, permissions, Argo's account): what an operator fixed is seen."""
        if self._missing:
            await self._preflight()
        return {"missing": list(self._missing)}

    async def _preflight(self) -> None:
        before, self._missing = self._missing, await self.platform.preflight()
        if self._missing and self._missing != before:
            for missing in self._missing:
                logger.warning(
                    "planner: not ready: %s platform: %s", self.options.platform, missing
                )
        elif before and not self._missing:
            logger.info("planner: the %s platform has all it needs", self.options.platform)

    @property
    def platform(self) -> Platform:
        """The platform workflows run on (an error before start)."""
        if self._platform is None:
            raise RuntimeError("the planner has no platform: it is not running")
        return self._platform

    @property
    def mlflow(self) -> KnowledgeClient:
        """The planner's MLflow client (an error before start)."""
        if self._knowledge is None:
            raise RuntimeError("the planner has no MLflow client: it is not running")
        return self._knowledge

    # -- applications --------------------------------------------------------------------

    @actuator(timeout=120)
    async def apply(
        self, application: dict[str, Any], base_dir: str | None = None
    ) -> dict[str, Any]:
        """Register an application definition and store it in MLflow for its team.

        Applying the same application again replaces its definition; services
        already deployed keep running until the next deploy.

        Args:
            application: The application (name, team, workflows, agents) as in a YAML file.
            base_dir: Folder of the workflows' scripts on the platform's machine; default cwd.
        """
        team = application.get("team") or self.options.team
        parsed = self.catalog.parse({**application, "team": team}, base_dir=base_dir)
        stored = False
        if self.options.store:
            # Stored first: if MLflow refuses, the planner has not changed either.
            await ApplicationStore(self.mlflow).save(stored_form(parsed), team=team)
            stored = True
        self.catalog.register(parsed)
        return {
            "application": parsed.name,
            "team": parsed.team,
            "stored": stored,
            "workflows": summary(parsed),
        }

    async def _workflow(self, name: str) -> Workflow:
        """The workflow ``name``; on a miss, the team's stored applications are read again.

        Another planner replica may have applied it (replicas share calls through a
        queue group, not memory), or this planner restarted since it was applied.
        Applications loaded from the settings' files win over stored ones of the
        same name: they are this deployment's declared configuration.

        Raises:
            NotFound: Neither this planner nor the store knows the workflow (or the
                store could not be read: the message says why).
        """
        try:
            return self.catalog.workflow(name)
        except NotFound as missing:
            if not self.options.store:
                raise
            try:
                await self._load_stored()
            except KnowledgeError as exc:
                # Still an unknown workflow to the caller, with why the store did not help.
                logger.warning("planner: application store not read for %r: %s", name, exc)
                raise NotFound(f"{missing}; the application store was not read: {exc}") from None
            return self.catalog.workflow(name)

    def _team(self, workflow: str) -> str:
        """The team of the application that owns ``workflow``: whose namespace it acts in."""
        owner = self.catalog.owners.get(workflow)
        found = self.catalog.applications.get(owner) if owner else None
        return found.team if found is not None else self.options.team

    async def _remember(self, run_id: str, chain: tuple[str, str | None, str | None]) -> None:
        self._chains.setdefault(run_id, chain)
        assert self._chains_kv is not None  # set in on_start, before any run
        await self._chains_kv.put(KeyValueRunStore.key(run_id), json.dumps(list(chain)).encode())

    async def _chain(self, status: RunStatus) -> tuple[str, str | None, str | None]:
        if status.run_id in self._chains:
            return self._chains.pop(status.run_id)
        try:  # Started by an earlier planner: its chain is in the bucket.
            assert self._chains_kv is not None
            entry = await self._chains_kv.get(KeyValueRunStore.key(status.run_id))
        except Exception as exc:
            logger.warning("planner: chain of run %s not read: %s", status.run_id, exc)
            entry = None
        if entry is None:
            return status.workflow, None, None
        workflow, correlation, cause = json.loads(entry.value)
        return str(workflow), correlation, cause

    async def _load_stored(self) -> None:
        team = self.options.team
        for data in await ApplicationStore(self.mlflow).list(team):
            name = data.get("name")
            if name in self._from_files:
                continue
            try:
                self.catalog.register(self.catalog.parse(data))
            except BadInput as exc:
                logger.warning(
                    "planner: stored application %r of team %r skipped: %s", name, team, exc
                )

    # -- workflows -----------------------------------------------------------------------

    @actuator(timeout=1800)
    async def build(self, workflow: str) -> dict[str, Any]:
        """Prepare every node's environment of a workflow (venvs, or images on Kubernetes).

        Args:
            workflow: The workflow's name.
        """
        target = await self._workflow(workflow)
        with _platform_errors("build", workflow, field="workflow"):
            result = await self.platform.build(target, team=self._team(workflow))
        return result.model_dump(mode="json")

    @actuator(timeout=600)
    async def deploy(self, workflow: str) -> dict[str, Any]:
        """Make an online workflow's services run as declared (model, replicas).

        Args:
            workflow: The name of an online workflow.
        """
        target = await self._workflow(workflow)
        with _platform_errors("deploy", workflow, field="workflow"):
            result = await self.platform.deploy(target, team=self._team(workflow))
        return result.model_dump(mode="json")

    @actuator(timeout=60)
    async def run(self, workflow: str, parameters: dict[str, dict[str, Any]] | None = None) -> str:
        """Start a batch run and return its id at once.

        When the run ends, the event ``run.<workflow>.<state>`` (succeeded, failed or
        cancelled) carries its final status. The call's id is the run's id, so a
        call delivered twice starts one run.

        Args:
            workflow: The name of a batch workflow.
            parameters: Per executor node, overrides of its parameters: {"train": {"C": 0.5}}.
        """
        target = await self._workflow(workflow)
        correlation, cause = chains.current()
        run_id = _run_id(workflow, self.message_id or cause or correlation)
        await self._remember(run_id, (workflow, correlation, cause))
        try:
            with _platform_errors("run", workflow, field="parameters"):
                return await self.platform.run(
                    target, run_id=run_id, parameters=parameters or {}, team=self._team(workflow)
                )
        except BaseException:
            self._chains.pop(run_id, None)
            raise

    @actuator(timeout=30)
    async def run_status(self, run_id: str) -> dict[str, Any]:
        """The state of a batch run and of each of its nodes.

        Args:
            run_id: The id ``run`` returned.
        """
        with _platform_errors("run_status", run_id, field="run_id"):
            status = await self.platform.run_status(run_id)
        return status.model_dump(mode="json")

    @actuator(timeout=MAX_WAIT + 30)
    async def wait(
        self, run_id: str, seconds: Annotated[float, Field(gt=0, le=MAX_WAIT)] = 600.0
    ) -> dict[str, Any]:
        """Wait until a batch run ends, and return its status (still running if time ran out).

        The limit is not called ``timeout``: callers' clients take that name for
        the reply timeout of the call itself.

        Args:
            run_id: The id ``run`` returned.
            seconds: How long to wait at most.
        """
        with _platform_errors("wait", run_id, field="run_id"):
            status = await self.platform.run_status(run_id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            if not status.done:
                with contextlib.suppress(TimeoutError):
                    status = await self.platform.wait(run_id, seconds)
            while not status.done and loop.time() < deadline:
                await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
                status = await self.platform.run_status(run_id)
        return status.model_dump(mode="json")

    @actuator(timeout=600)
    async def scale(self, workflow: str, node: str, replicas: Replicas) -> dict[str, Any]:
        """Run ``replicas`` replicas of a deployed service node.

        Args:
            workflow: The online workflow's name.
            node: The service node's name.
            replicas: The wanted number of replicas (0 stops the service, keeping it deployed).
        """
        await self._service(workflow, node)
        with _platform_errors("scale", workflow, field="replicas"):
            result = await self.platform.scale(workflow, node, replicas, team=self._team(workflow))
        return result.model_dump(mode="json")

    @actuator(timeout=900)
    async def redeploy(self, workflow: str, node: str, model_uri: NonEmpty) -> dict[str, Any]:
        """Roll a service node's replicas to another model, one replica at a time.

        Args:
            workflow: The online workflow's name.
            node: The service node's name.
            model_uri: The MLflow model to serve, e.g. ``models:/digits/2``.
        """
        await self._service(workflow, node)
        with _platform_errors("redeploy", workflow, field="model_uri"):
            result = await self.platform.redeploy(
                workflow, node, model_uri, team=self._team(workflow)
            )
        if result.outcome == "failed":
            await self._rolled_back(result)
        return result.model_dump(mode="json")

    @actuator(timeout=60)
    async def status(self, workflow: str) -> dict[str, Any]:
        """What runs of a workflow: its services (replicas, health, address) and recent runs.

        Args:
            workflow: The workflow's name.
        """
        await self._workflow(workflow)
        with _platform_errors("status", workflow, field="workflow"):
            result = await self.platform.status(workflow, team=self._team(workflow))
        return result.model_dump(mode="json")

    @actuator(timeout=300)
    async def delete(self, workflow: str) -> dict[str, Any]:
        """Stop a workflow's services and cancel its runs; its definition stays applied.

        Args:
            workflow: The workflow's name.
        """
        await self._workflow(workflow)
        with _platform_errors("delete", workflow, field="workflow"):
            result = await self.platform.delete(workflow, team=self._team(workflow))
        # Cancelled runs reported their end (run.<workflow>.cancelled) on the way.
        return result.model_dump(mode="json")

    # -- models --------------------------------------------------------------------------

    @actuator(timeout=120)
    async def promote(
        self, model: NonEmpty, version: int | str, alias: AliasName = "production"
    ) -> dict[str, Any]:
        """Point a registered model's alias at a version; answer the version it left.

        Promoting the version the alias already points at changes nothing. To roll
        back, promote the ``previous`` version of the answer.

        Args:
            model: The registered model's name.
            version: The version to promote.
            alias: The alias to move (services serve ``models:/<model>@<alias>``).
        """
        version = str(version)
        registry = ModelRegistry(self.mlflow)
        versions = await registry.versions(model)
        if not versions:
            raise NotFound(
                f"no registered model {model!r} in MLflow at {redact(self.mlflow.tracking_uri)}"
            )
        known = [v.version for v in versions]
        if version not in known:
            raise NotFound(f"model {model!r} has no version {version} (versions: {known})")
        previous = await registry.version_by_alias(model, alias)
        before = previous.version if previous is not None else None
        if before != version:
            await registry.set_alias(model, alias, version)
        outcome = "unchanged" if before == version else ("created" if before is None else "updated")
        return {
            "model": model,
            "alias": alias,
            "version": version,
            "previous": before,
            "outcome": outcome,
            "model_uri": f"models:/{model}@{alias}",
        }

    # -- internals -----------------------------------------------------------------------

    async def _service(self, workflow: str, node: str) -> ServiceNode:
        target: Workflow = await self._workflow(workflow)
        try:
            found = target.node(node)
        except KeyError as exc:
            raise NotFound(str(exc.args[0])) from None
        if not isinstance(found, ServiceNode):
            raise BadInput(
                f"node {node!r} of workflow {workflow!r} is an executor, not a service; "
                "only services have replicas and models",
                field="node",
            )
        return found

    async def _rolled_back(self, result: ActionResult) -> None:
        """Record the decision a failed rollout forced, then fail the call.

        The platform put the previous model back; the event
        ``redeploy.<workflow>.rolled_back`` says so in the call's chain (the
        console and the audit trail show it), and the caller gets an error.
        """
        await self.emit(
            f"redeploy.{result.workflow}.rolled_back",
            {
                "decision": "roll back",
                "reason": result.details.get("reason"),
                **result.model_dump(mode="json"),
            },
        )
        raise PermanentError(
            f"redeploy of {result.workflow}/{result.node} failed on the platform: {result.message}"
        )

    async def _run_finished(self, status: RunStatus) -> None:
        """The platform's report that a run ended: publish it in the run's chain.

        The platform awaits this in its own guarded task (no task is left
        running here); ``emit`` only queues the event for the stream.
        """
        workflow, correlation, cause = await self._chain(status)
        topic = f"run.{workflow}.{status.state}"
        if not self.is_running:
            logger.warning("planner stopped before run %s ended: %s not sent", status.run_id, topic)
            return
        payload = status.model_dump(mode="json")
        if correlation is None:
            await self.emit(topic, payload)
            return
        with chains.within(correlation, cause):
            await self.emit(topic, payload)


def _bucket(base: str, namespace: str) -> str:
    """A key-value bucket of the planner's namespace (bucket names allow ``[-_A-Za-z0-9]``)."""
    return f"{base}-{re.sub(r'[^-_A-Za-z0-9]', '_', namespace)}"


def _run_id(workflow: str, message_id: str) -> str:
    """``<workflow>-<call id>``: the same call gives the same run, on any replica.

    A caller may choose the call id; one that is not a short, safe token (it
    names folders and platform objects) is replaced by a digest of itself,
    which keeps the id deterministic.
    """
    if not _SAFE_ID.match(message_id):
        message_id = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"{workflow}-{message_id}"


@contextlib.contextmanager
def _platform_errors(action: str, subject: str, *, field: str) -> Iterator[None]:
    """Platform failures as the wire's error codes (not_found, bad_input, handler failure)."""
    try:
        yield
    except PlatformError as exc:
        if exc.code == "not_found":
            raise NotFound(str(exc)) from None
        if exc.code == "invalid":
            raise BadInput(str(exc), field=field) from None
        raise PermanentError(f"{action} of {subject!r} failed on the platform: {exc}") from exc
