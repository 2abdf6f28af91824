"""Settings of the Kubernetes platform: which cluster, which images, what pods are told."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from scanflow_agents.settings import Settings

_DEFAULT_IMAGE = "ghcr.io/scanflow-agents/scanflow-agents:0.1.0"


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
    verify_ssl: bool = True
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds for one API request.")

    team: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Team used when a call names none (an Application brings its own).",
    )
    namespace_prefix: str = Field(
        default="scanflow-",
        pattern=r"^([a-z0-9][a-z0-9-]*)?$",
        description="Kubernetes namespace of a team: prefix + team.",
    )
    create_namespaces: bool = Field(default=False, description="Create missing team namespaces.")

    serving_image: str = Field(
        default=_DEFAULT_IMAGE,
        description="Image of service nodes that have no image of their own.",
    )
    executor_image: str = Field(
        default=_DEFAULT_IMAGE, description="Image of executors that need no build."
    )
    agent_image: str = Field(default=_DEFAULT_IMAGE, description="Image agents run in.")
    image_pull_secrets: tuple[str, ...] = ()
    serving_port: int = Field(default=8080, ge=1, le=65535, description="Model servers' port.")
    env_secret: str | None = Field(
        default=None,
        description="Secret every container gets as environment (envFrom): credentials for "
        "MLflow, NATS and object stores stay out of the pod specs.",
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
        default=_DEFAULT_IMAGE,
        description="What built images start FROM: the project's image (the framework, the "
        "model server and its libraries), plus each node's requirements.",
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
    registry_uri: str | None = None
    nats_url: str | None = Field(default=None, description="NATS URL for pods.")

    request_retries: int = Field(
        default=3, ge=0, description="Retries of a request that met a broken connection or 5xx."
    )

    def namespace(self, team: str | None = None) -> str:
        """The Kubernetes namespace of ``team`` (default: this platform's team)."""
        return f"{self.namespace_prefix}{team or self.team}"

    def builds_namespace(self) -> str:
        """Where build Jobs and their contexts go."""
        return self.build_namespace or f"{self.namespace_prefix}builds"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> KubernetesPlatformSettings:
        """Take MLflow, NATS and the team (the agents' namespace) from the settings tree.

        The URLs pods get must be reachable from inside the cluster: they are
        the agents' own when the agents run there too.
        """
        values: dict[str, object] = {
            "tracking_uri": settings.mlflow.tracking_uri,
            "registry_uri": settings.mlflow.registry_uri,
            "nats_url": settings.nats.url,
            "team": settings.namespace,
        }
        values.update(overrides)
        return cls.model_validate(values)
