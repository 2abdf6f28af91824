"""The nodes of a workflow: batch executors and online services.

Both kinds share what a platform needs to give them a place to run (an image,
requirements, environment variables, resources); they differ in what runs: an
executor is a program that ends, a service is a model server that does not.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from scanflow_agents.workflows.quantities import parse_quantity

# Names end up in Kubernetes object names, NATS subjects and MLflow tags, so
# they follow the strictest of the three: a DNS-1123 label.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="A DNS-1123 label.")]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Resources(BaseModel):
    """CPU and memory for one process or container (requests equal limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str | None = Field(default=None, description="Kubernetes quantity, e.g. '500m' or '2'.")
    memory: str | None = Field(
        default=None, description="Kubernetes quantity, e.g. '256Mi' or '1Gi'."
    )

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        # Numbers are accepted as YAML writes them (cpu: 2) but kept as text,
        # the form the Kubernetes API takes.
        if value is None:
            return None
        parse_quantity(value)
        return str(value)

    @property
    def cpu_cores(self) -> float | None:
        """CPU as a number of cores, or None when not set."""
        return None if self.cpu is None else float(parse_quantity(self.cpu))

    @property
    def memory_bytes(self) -> int | None:
        """Memory in bytes, or None when not set."""
        return None if self.memory is None else int(parse_quantity(self.memory))


class _NodeBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    image: str | None = Field(default=None, description="Container image (Kubernetes only).")
    requirements: tuple[str, ...] = Field(
        (), description="pip requirement lines; empty means the platform's default environment."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    resources: Resources = Field(default_factory=Resources)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"invalid environment variable name(s): {', '.join(bad)}")
        return value


class ExecutorNode(_NodeBase):
    """A batch step: a program that runs to completion.

    The entry point is one of ``path/to/script.py`` (run as a file, relative to
    the workflow's directory), ``package.module`` (run with ``python -m``) or
    ``package.module:function`` (imported and called with the parameters as
    keyword arguments). Parameters are always passed as ``--name value`` options.
    """

    kind: Literal["executor"] = "executor"
    entry_point: str = Field(min_length=1)
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    workdir: str | None = Field(
        default=None, description="Working directory; default the workflow's."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds before the step is killed."
    )

    @field_validator("entry_point")
    @classmethod
    def _entry_point(cls, value: str) -> str:
        value = value.strip()
        if value.endswith(".py"):
            return value
        module, _, function = value.partition(":")
        dotted = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
        if not re.match(dotted, module) or (function and not function.isidentifier()):
            raise ValueError(f"{value!r} is neither a .py file, a module, nor 'module:function'")
        return value


class ServiceNode(_NodeBase):
    """An online model server with one or more replicas."""

    kind: Literal["service"] = "service"
    model_uri: str = Field(
        min_length=1, description="MLflow model URI, e.g. models:/digits@production."
    )
    replicas: int = Field(default=1, ge=0)
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Fixed port; default a free one."
    )
    latency_p95_ms: float | None = Field(
        default=None, gt=0, description="Latency objective, p95 in ms."
    )


def _node_kind(value: Any) -> str:
    # An explicit kind wins; otherwise a model URI makes a service. This keeps
    # YAML short without making a typo in "kind" silently pick the other type.
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind is not None:
            return str(kind)
        return "service" if "model_uri" in value else "executor"
    return str(getattr(value, "kind", "executor"))


Node = Annotated[
    Annotated[ExecutorNode, Tag("executor")] | Annotated[ServiceNode, Tag("service")],
    Discriminator(_node_kind),
]
