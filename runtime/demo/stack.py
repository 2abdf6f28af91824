"""The embedded stack: NATS, MLflow and the four built-in agents, as one async context manager.

Everything listens on 127.0.0.1 and lives in the work folder. Leaving the
context (normally, on an error, or on Ctrl-C, which cancels the demo's task)
stops the agents first (the planner stops the model servers it started), then
closes the connections and stops the servers this stack started; servers given
by URL (``--nats``, ``--mlflow``) are left running.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from scanflow_agents.runtime.demo.examples import EXAMPLES, Example
from scanflow_agents.runtime.loading import BUILTIN_AGENTS, LoadError, load_agent_classes

from scanflow_agents import Agent, Settings
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.transports import Transport
from scanflow_agents.transports.servers import NatsServer

logger = logging.getLogger("scanflow_agents.runtime.demo")

NAMESPACE = "demo"
#: The MAPE-K loop, in its order: monitor, analyse, plan, execute.
AGENTS = tuple(BUILTIN_AGENTS.values())
#: The default example application: ``examples/digits`` in a checkout, shipped in the
#: wheel as this package's ``digits`` (see pyproject.toml and ``examples.py``).
EXAMPLE = EXAMPLES["digits"].folder


@dataclass
class Tuning:
    """The loop's knobs the demo sets (each agent validates its own section).

    Attributes:
        report_interval: Seconds between the model servers' reports.
        window_seconds: The tracker's window.
        latency_p95_ms: Overrides the service's latency objective (its ``latency_p95_ms`` in
            the application) in the checker's settings; None keeps the application's.
        capacity_rps: Requests per second one replica is planned to take (the improver).
        max_replicas: The most replicas the improver may plan.
        standby_replicas: Replicas the local platform keeps loaded outside the rotation:
            enough for the spike's scale-out (1 to 4) to be activations, not process starts.
        margin: How much better a candidate must be on recent rows to be promoted.
        dataset_rows: The most recent labelled rows a retraining gets (the improver asks the
            tracker for the rows labelled since the drift began).
        train_parameters: Extra parameters of the training step on a retraining (the
            tests make a candidate worse on purpose with them).
        min_dataset_rows: Rows since the drift the improver gathers before retraining. With
            2,400 (about 2,100 drifted, the rest from the window the drift began in) the
            retrained model on the held-out drifted images comes within 2 points of the
            first model on the same images before the drift: 0.8 point short on average,
            1.8 at worst, over ten seeds with two draws of rows each (offline replay of the
            same recipe). With 1,200 rows: 1.4 on average and 2.6 at worst. At the demo's
            72 labelled rows a second, 2,400 take about 33 s of drifted traffic. (Digits;
            the wine example gathers 2,000: see ``examples.py``.)
    """

    report_interval: float = 2.0
    standby_replicas: int = 3
    window_seconds: float = 4.0
    latency_p95_ms: float | None = None
    capacity_rps: float = 150.0
    max_replicas: int = 4
    margin: float = 0.02
    dataset_rows: int = 4000
    min_dataset_rows: int = 2400
    # A fifth of the recent rows held out to judge the candidate: the rest is trained on.
    train_parameters: dict[str, Any] = field(default_factory=lambda: {"holdout": 0.2})


@dataclass
class StackOptions:
    """Where the stack lives and which servers it reuses."""

    work_dir: Path
    nats_url: str | None = None
    mlflow_uri: str | None = None
    tuning: Tuning = field(default_factory=Tuning)
    agents: tuple[str, ...] = AGENTS
    example: Example = EXAMPLES["digits"]
    #: Built-in agents run a second time as shadows (``<name>-shadow``), each with
    #: its settings section changed by the given values: a policy change tried live.
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def application(self) -> Path:
        """The example's application file."""
        return self.example.application


def agent_sections(options: StackOptions) -> dict[str, dict[str, Any]]:
    """The per-agent sections of the settings tree (``settings.agents``)."""
    tuning, example = options.tuning, options.example
    checker: dict[str, Any] = {}
    if tuning.latency_p95_ms is not None:
        checker["slo"] = {example.serve_workflow: {"latency_p95_ms": tuning.latency_p95_ms}}
    supervised = {
        "node": example.node,
        "model": example.model,
        "train_workflow": example.train_workflow,
        "train_node": example.train_node,
        "experiment": example.experiment,
        "train_parameters": tuning.train_parameters,
    }
    return {
        "planner": {
            "platform": "local",
            "applications": [str(options.application)],
            "local": {
                "base_dir": str(options.work_dir / "local"),
                "report_interval": tuning.report_interval,
                "standby_replicas": tuning.standby_replicas,
            },
        },
        "tracker": {
            "window_seconds": tuning.window_seconds,
            "training_poll_seconds": tuning.window_seconds,
            "training_experiments": [example.experiment],
        },
        "checker": checker,
        "improver": {
            "margin": tuning.margin,
            "dataset_rows": tuning.dataset_rows,
            "min_dataset_rows": tuning.min_dataset_rows,
            "workflows": {example.serve_workflow: supervised},
            "max_data_wait": 45.0,
            "scaling": {
                "capacity_rps": tuning.capacity_rps,
                "min_replicas": 1,
                "max_replicas": tuning.max_replicas,
                "scale_in_cooldown": 15.0,
            },
        },
    }


class Stack:
    """NATS, MLflow and the agents; ``client`` talks to them over its own connection."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.settings: Settings | None = None
        self.agents: list[Agent] = []
        self.nats_url = options.nats_url or ""
        self.mlflow_uri = options.mlflow_uri or ""
        self._client: Client | None = None
        self._exits = AsyncExitStack()

    @property
    def client(self) -> Client:
        """The demo's client of the namespace (calls, discovery, history, events)."""
        if self._client is None:
            raise RuntimeError("the demo stack is not running")
        return self._client

    @property
    def transport(self) -> Transport:
        return self.client.transport

    async def __aenter__(self) -> Stack:
        # Before any server starts: a missing agent is a clear message, not a half-started stack.
        try:
            classes = [klass for ref in self.options.agents for klass in load_agent_classes(ref)]
        except LoadError as exc:
            raise RuntimeError(f"the demo needs the built-in agents: {exc}") from exc
        if not self.options.application.exists():
            missing = self.options.application
            raise RuntimeError(f"the demo's application file is missing: {missing}")
        work = self.options.work_dir
        work.mkdir(parents=True, exist_ok=True)
        try:
            await self._start(classes, work)
        except BaseException:
            await self._exits.aclose()
            raise
        return self

    async def _start(self, classes: list[type[Agent]], work: Path) -> None:
        exits = self._exits
        if not self.nats_url:
            nats = await exits.enter_async_context(NatsServer(store_dir=str(work / "nats")))
            self.nats_url = nats.url
        if not self.mlflow_uri:
            folder = work / "mlflow"
            folder.mkdir(exist_ok=True)
            mlflow = MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
            self.mlflow_uri = (await exits.enter_async_context(mlflow)).url
        self.settings = Settings.model_validate(
            {
                "namespace": NAMESPACE,
                "nats": {"url": self.nats_url},
                "mlflow": {"tracking_uri": self.mlflow_uri, "record": True},
                "agents": agent_sections(self.options),
            }
        )
        agents_transport = await connect_transport(self.settings, name="scanflow-demo-agents")
        exits.push_async_callback(agents_transport.close)
        self.agents = [klass(settings=self.settings) for klass in classes]
        self.agents += [
            self._shadow(classes, name, changes) for name, changes in self.options.shadows.items()
        ]
        for agent in self.agents:
            await exits.enter_async_context(agent.running(agents_transport))
        observer = await connect_transport(self.settings, name="scanflow-demo")
        exits.push_async_callback(observer.close)
        self._client = Client(observer, namespace=NAMESPACE, name="demo")
        logger.info(
            "demo stack: NATS %s, MLflow %s, agents %s",
            self.nats_url,
            self.mlflow_uri,
            ", ".join(a.name for a in self.agents),
        )

    def _shadow(self, classes: list[type[Agent]], name: str, changes: dict[str, Any]) -> Agent:
        """Agent ``name`` as a shadow beside the live one, its section changed by ``changes``."""
        assert self.settings is not None
        klass = next((k for k in classes if k.name == name), None)
        if klass is None:
            known = ", ".join(k.name for k in classes)
            raise RuntimeError(f"no built-in agent {name!r} to shadow (agents: {known})")
        base = self.settings
        agents = {**base.agents, name: {**base.agents.get(name, {}), **changes}}
        agent = base.agent.model_copy(update={"shadow": True})
        settings = base.model_copy(update={"agents": agents, "agent": agent})
        return klass(name=f"{name}-shadow", settings=settings)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client = None
        await self._exits.aclose()
