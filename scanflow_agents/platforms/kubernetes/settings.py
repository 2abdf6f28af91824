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

    # Builds.
    registry: str | None = Field(
        default=None, description="Where built images are pushed, e.g. registry.example.com/ml."
    )
    registry_secret: str | None = Field(
        default=None,
        description="Secret of type dockerconfigjson with push credentials for Kaniko.",
    )
    base_image: str = Field(
        default=_DEFAULT_IMAGE,
        description="Base of built images: the framework's image (the project's Containerfile), "
        "so built images only add a node's requirements and code.",
    )
    package: str = Field(
        default="",
        description="pip requirement that puts this framework into built images; only for a "
        "base image without it (the framework is not on a public package index).",
    )
    kaniko_image: str = "gcr.io/kaniko-project/executor:v1.23.2"
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

    # Batch runs.
    argo: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Run batch workflows as one Argo Workflow: 'auto' when the cluster "
        "serves argoproj.io/v1alpha1, else Jobs in dependency order.",
    )
    job_backoff_limit: int = Field(default=0, ge=0, description="Retries of a failed step's pod.")
    poll_interval: float = Field(default=2.0, gt=0, description="Seconds between run status reads.")
    kept_runs: int = Field(default=100, ge=1, description="Finished runs remembered for status.")

    # What pods are told.
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI for pods.")
    registry_uri: str | None = None
    nats_url: str | None = Field(default=None, description="NATS URL for pods.")

    def namespace(self, team: str | None = None) -> str:
        """The Kubernetes namespace of ``team`` (default: this platform's team)."""
        return f"{self.namespace_prefix}{team or self.team}"

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
