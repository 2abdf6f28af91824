"""Settings of the Kubernetes platform: which cluster, which images, what pods are told."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scanflow_agents.settings import Settings
from scanflow_agents.workflows import Resources

# The project's two images (the Containerfile's targets): agents need only MLflow's
# client; model servers, workflow steps and built images need the full stack.
_AGENT_IMAGE = "ghcr.io/scanflow-agents/scanflow-agents:0.1.0"
_SERVING_IMAGE = "ghcr.io/scanflow-agents/scanflow-agents-serving:0.1.0"


class PodEnv(BaseModel):
    """One environment variable of every container the platform makes: a value, or a
    key of a Secret in the container's own namespace (a pod cannot name another's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = None
    secret: str | None = Field(default=None, description="Secret holding the value.")
    key: str | None = Field(default=None, description="Key of the value in the Secret.")

    @model_validator(mode="after")
    def _one_source(self) -> PodEnv:
        if (self.value is None) == (self.secret is None) or (self.secret is None) != (
            self.key is None
        ):
            raise ValueError(f"pod_env {self.name}: give either a value, or a secret and its key")
        return self

    def entry(self) -> dict[str, object]:
        """The container ``env`` entry."""
        if self.secret is None:
            return {"name": self.name, "value": self.value}
        ref = {"name": self.secret, "key": self.key}
        return {"name": self.name, "valueFrom": {"secretKeyRef": ref}}


class KubernetesPlatformSettings(BaseModel):
    """How the Kubernetes platform reaches the cluster and what it creates there.

    Connection: ``host`` set means that API server (no kubeconfig is read);
    otherwise the in-cluster service account, then ``kubeconfig``/``context``.

    Namespaces: every team gets ``namespace_prefix + team``. Creating it is
    off by default: a platform engineer usually creates team namespaces with
    their quotas and RBAC, and a least-privilege agent may not create them.
    With ``create_namespaces`` on, a missing namespace is created best-effort
    (a failure is logged, and the next request names the missing namespace).
    """

    host: str | None = Field(
        default=None, description="API server URL; None: in-cluster/kubeconfig."
    )
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig file (default ~/.kube/config)."
    )
    context: str | None = Field(default=None, description="Kubeconfig context.")
    impersonate: str | None = Field(
        default=None,
        description="Act as this user (Impersonate-User), e.g. the planner's account "
        "system:serviceaccount:<namespace>:<name>: how `scanflow check` asks a cluster, "
        "from a laptop, what the planner may do there.",
    )
    verify_ssl: bool = True
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds for one API request.")

    team: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Team used when a call names none (an Application brings its own).",
    )
    teams: tuple[str, ...] = Field(
        default=(),
        description="The teams whose namespaces this platform may act in (the chart's "
        "kubernetes.teams, each with its Role); empty: any team. A call for another team "
        "is refused, naming the setting.",
    )
    bus_namespace: str = Field(
        default="default",
        description="The agents' namespace on the bus (settings.namespace): the subjects "
        "every pod made here reports and listens on, whatever its team's Kubernetes "
        "namespace.",
    )
    namespace_prefix: str = Field(
        default="scanflow-",
        pattern=r"^([a-z0-9][a-z0-9-]*)?$",
        description="Kubernetes namespace of a team: prefix + team.",
    )
    create_namespaces: bool = Field(default=False, description="Create missing team namespaces.")

    serving_image: str = Field(
        default=_SERVING_IMAGE,
        description="Image of service nodes that have no image of their own.",
    )
    executor_image: str = Field(
        default=_SERVING_IMAGE, description="Image of executors that need no build."
    )
    agent_image: str = Field(default=_AGENT_IMAGE, description="Image agents run in.")
    image_pull_secrets: tuple[str, ...] = ()
    serving_port: int = Field(default=8080, ge=1, le=65535, description="Model servers' port.")
    env_secret: str | None = Field(
        default=None,
        description="Secret every container gets as environment (envFrom): credentials for "
        "MLflow, NATS and object stores stay out of the pod specs.",
    )
    pod_env: tuple[PodEnv, ...] = Field(
        default=(),
        description="Environment of every container the platform makes (model servers, "
        "steps, agents): how they get the NATS and MLflow credentials the agents have, from "
        "Secrets in their own namespace (the chart fills it from its values).",
    )
    agent_service_account: str | None = Field(
        default=None, description="Service account of agent pods (their RBAC)."
    )
    agent_http_port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Port of agent pods' /livez, /readyz and /metrics (scanflow run --http-port).",
    )

    run_as_user: int = Field(
        default=10001,
        ge=1,
        description="Numeric non-root user of built images and of every generated pod that "
        "runs one: the project image's user.",
    )
    read_only_root: bool = Field(
        default=True,
        description="Mount containers' root filesystems read-only; /tmp and the run folder "
        "are writable emptyDirs.",
    )
    default_resources: Resources = Field(
        default=Resources(cpu="100m", memory="256Mi"),
        description="Requests of model servers and steps whose node declares none (no "
        "limit): a namespace with a ResourceQuota refuses pods without requests.",
    )
    serving_tmp_size: str | None = Field(
        default="1Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti)?$",
        description="Size limit of a model server's /tmp (an emptyDir, on the node's disk; "
        "the model's artifacts are downloaded there): past it the pod is evicted instead "
        "of filling the node. None: no limit.",
    )
    probe_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a model server's probe may take to answer."
    )
    rollout_deadline: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a redeploy's new pods get to become ready before it is rolled "
        "back (the Deployments' progressDeadlineSeconds).",
    )

    # Builds.
    registry: str | None = Field(
        default=None, description="Where built images are pushed, e.g. registry.example.com/ml."
    )
    registry_secret: str | None = Field(
        default=None,
        description="Secret of type dockerconfigjson with pull and push credentials for the "
        "builder, in the build namespace.",
    )
    base_image: str = Field(
        default=_SERVING_IMAGE,
        description="What built images start FROM: the project's serving image (the "
        "framework, the model server and its libraries), plus each node's requirements.",
    )
    build_namespace: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Namespace of build Jobs (default: prefix + 'builds'); the only pods "
        "that are not 'restricted' (see the platform's README).",
    )
    builder_image: str = Field(
        default="moby/buildkit:v0.20.0-rootless",
        description="The rootless BuildKit image that builds and pushes images.",
    )
    build_resources: Resources = Field(
        default=Resources(cpu="1", memory="2Gi"),
        description="Requests of a build's BuildKit container (memory also its limit): a "
        "ResourceQuota refuses pods without requests, and a build is no small process.",
    )
    helper_image: str = Field(
        default="busybox:1.36", description="Copies a build context out of its ConfigMap."
    )
    max_context_bytes: int = Field(
        default=900_000,
        gt=0,
        description="Largest build context: it travels as a ConfigMap, which the API server "
        "caps at 1 MiB (etcd's object size limit).",
    )
    build_timeout: float = Field(
        default=1800.0, gt=0, description="Seconds one image build may take."
    )
    build_ttl: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="Seconds a finished build Job is kept (while it lives, a build of the same "
        "context is found done instead of run again).",
    )

    # Batch runs.
    argo: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Run batch workflows as one Argo Workflow: 'auto' when the cluster "
        "serves argoproj.io/v1alpha1, else Jobs in dependency order.",
    )
    argo_executor_service_account: str = Field(
        default="scanflow-argo-executor",
        description="Service account of Argo's wait container (it reports step results); the "
        "steps' own containers mount no token.",
    )
    job_backoff_limit: int = Field(default=0, ge=0, description="Retries of a failed step's pod.")
    step_timeout: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="Deadline of a step that declares no timeout (its Job's "
        "activeDeadlineSeconds): nothing on the cluster runs forever by default.",
    )
    run_timeout: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="Deadline of a whole run (the Argo Workflow's activeDeadlineSeconds; the "
        "planner stops scheduling Jobs after it).",
    )
    pending_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a step may wait for its pod to be scheduled or created (a quota, "
        "no node fits) before the run fails with the reason; image and configuration errors "
        "fail at once.",
    )
    argo_pickup_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds an Argo Workflow may stay without a phase (no controller picked "
        "it up) before the run fails.",
    )
    run_artifacts: str | None = Field(
        default="mlflow-artifacts:/scanflow-runs",
        description="Artifact location under which every run gets a folder "
        "(<run_artifacts>/<run id>) that its steps read before and write after they run: "
        "how SCANFLOW_RUN_DIR is shared between steps in different pods. The default goes "
        "through the MLflow tracking server; s3://, gs:// and other MLflow artifact URIs "
        "work too. None: each step's run folder is its own, empty.",
    )
    finished_ttl: int = Field(
        default=3600,
        ge=0,
        description="Seconds finished Jobs and Argo Workflows of runs are kept (their pods' "
        "logs with them) before the cluster deletes them.",
    )
    poll_interval: float = Field(default=2.0, gt=0, description="Seconds between run status reads.")
    kept_runs: int = Field(default=100, ge=1, description="Finished runs remembered for status.")

    # What pods are told.
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI for pods.")
    replica_reports: bool = Field(
        default=False,
        description="Each model-server replica also logs every number of its reports to MLflow "
        "(about 350 metrics a report); off: the tracker logs each window's figures per node.",
    )
    registry_uri: str | None = None
    nats_url: str | None = Field(default=None, description="NATS URL for pods.")

    request_retries: int = Field(
        default=3, ge=0, description="Retries of a request that met a broken connection or 5xx."
    )

    @model_validator(mode="after")
    def _team_is_managed(self) -> KubernetesPlatformSettings:
        if self.teams and self.team not in self.teams:
            raise ValueError(
                f"team {self.team!r} (the team of calls that name none) is not among the "
                f"managed teams {list(self.teams)}; add it to teams or set team to one of them"
            )
        return self

    def managed(self, team: str) -> str:
        """The namespace of ``team``, if this platform may act there.

        Raises:
            ValueError: ``team`` is not one of ``teams``; the message says what to change.
        """
        if self.teams and team not in self.teams:
            raise ValueError(
                f"team {team!r} is not one this planner manages (teams: "
                f"{', '.join(self.teams)}): {self.namespace(team)} has no Role for it; add "
                f"{team!r} to kubernetes.teams (the chart's value) and upgrade the release"
            )
        return self.namespace(team)

    @model_validator(mode="after")
    def _no_short_service_names(self) -> KubernetesPlatformSettings:
        # The planner's pods run in team namespaces, where cluster DNS resolves a
        # short name like "nats" in the pod's own namespace: the Service is not
        # there, and every pod would fail to connect long after the planner started.
        for setting in ("nats_url", "tracking_uri", "registry_uri"):
            for url in (getattr(self, setting) or "").split(","):
                host = short_service_name(url.strip())
                if host is not None:
                    raise ValueError(
                        f"{setting} {url.strip()} names Service {host!r} by its short name, "
                        "which pods in team namespaces look up in their own namespace; give "
                        f"its full name, {host}.<its namespace>.svc"
                    )
        return self

    def namespace(self, team: str | None = None) -> str:
        """The Kubernetes namespace of ``team`` (default: this platform's team)."""
        return f"{self.namespace_prefix}{team or self.team}"

    def builds_namespace(self) -> str:
        """Where build Jobs and their contexts go."""
        return self.build_namespace or f"{self.namespace_prefix}builds"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> KubernetesPlatformSettings:
        """Take MLflow, NATS, the bus namespace and the default team from the settings tree.

        The URLs pods get must be reachable from inside the cluster: they are
        the agents' own when the agents run there too.
        """
        values: dict[str, object] = {
            "tracking_uri": settings.mlflow.tracking_uri,
            "registry_uri": settings.mlflow.registry_uri,
            "nats_url": settings.nats.url,
            "team": settings.namespace,
            "bus_namespace": settings.namespace,
        }
        values.update(overrides)
        return cls.model_validate(values)


def short_service_name(url: str) -> str | None:
    """The host of ``url`` if it is a short (one-label) cluster name, else ``None``.

    Addresses and ``localhost`` are not Service names; a name with a dot is
    taken as qualified (``nats.mlops``, ``nats.mlops.svc``) or outside the cluster.
    """
    if "://" not in url:
        return None
    host = urlsplit(url).hostname or ""
    if not host or "." in host or host == "localhost":
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None
