"""One settings tree for every agent, the CLI and the Helm chart.

Settings are read once, at the edge (the CLI or the pod entrypoint), from the
environment and an optional YAML/JSON file, and then injected: nothing below
this module reads the environment. Every field maps to an environment variable
``SCANFLOW_<SECTION>__<FIELD>`` (for example ``SCANFLOW_NATS__URL``) and to the
same path in the Helm chart's ``values.yaml`` under ``settings:``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseModel):
    """How agents reach each other."""

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the first connection."
    )
    stream: str = Field(
        "",
        description="JetStream stream for events; empty means SCANFLOW_<NAMESPACE>.",
    )
    stream_max_age: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds an event is kept in the stream."
    )


class MlflowSettings(BaseModel):
    """Where agents keep their knowledge."""

    tracking_uri: str = Field("http://127.0.0.1:5000", description="MLflow tracking server URI.")
    registry_uri: str | None = Field(
        None, description="Model registry URI if not the tracking one."
    )
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    timeout: float = Field(10.0, gt=0, description="Seconds for one MLflow HTTP request.")
    retries: int = Field(2, ge=0, description="Retries of a failed MLflow request.")
    backoff: float = Field(0.5, ge=0, description="First delay between MLflow retries (doubled).")
    record: bool = Field(
        False, description="Also keep each agent's audit trail in MLflow (an experiment each)."
    )


class HandlerSettings(BaseModel):
    """Defaults for every sensor, rule and actuator that does not set its own."""

    timeout: float = Field(30.0, gt=0, description="Seconds one handler run may take.")
    retries: int = Field(0, ge=0, description="Extra attempts after a temporary failure.")
    backoff: float = Field(1.0, ge=0, description="First retry delay, doubled at each attempt.")
    max_backoff: float = Field(60.0, ge=0, description="Longest delay between retries.")


class AgentSettings(BaseModel):
    """How an agent process behaves."""

    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between heartbeats.")
    call_timeout: float = Field(10.0, gt=0, description="Default seconds to wait for a reply.")
    dry_run: bool = Field(False, description="Record what actuators would do without acting.")
    idempotency_window: float = Field(
        3600.0, gt=0, description="Seconds a reply is kept to answer a redelivered call."
    )
    idempotency_size: int = Field(10_000, gt=0, description="Replies kept for redelivered calls.")
    shutdown_timeout: float = Field(10.0, gt=0, description="Seconds a graceful stop may take.")
    handlers: HandlerSettings = Field(default_factory=HandlerSettings)


class HttpSettings(BaseModel):
    """The HTTP server of ``scanflow run``: probes and Prometheus metrics (what a pod needs)."""

    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /livez, /readyz and /metrics; None: no HTTP server; 0: any free port.",
    )
    host: str = Field("0.0.0.0", description="Address the HTTP server listens on.")


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="SCANFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    namespace: str = Field(
        "default",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="Team namespace: isolates subjects, streams and platform objects.",
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    agents: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Per-agent configuration by agent name (what it supervises, thresholds); each "
            "built-in agent validates its own section, e.g. SCANFLOW_AGENTS__PLANNER__PLATFORM. "
            "'-' and '_' in a name are the same (environment variables cannot hold '-')."
        ),
    )

    @field_validator("agents", mode="before")
    @classmethod
    def _agent_keys(cls, value: Any) -> Any:
        return agent_sections(value) if isinstance(value, dict) else value

    def agent_config(self, name: str) -> dict[str, Any]:
        """The configuration section of the agent called ``name`` (empty if none).

        ``my-agent`` finds a section given as ``my_agent`` (how the environment
        spells it: ``SCANFLOW_AGENTS__MY_AGENT__THRESHOLD``) and vice versa.
        """
        return dict(self.agents.get(agent_key(name), {}))

    @property
    def stream_name(self) -> str:
        """The JetStream stream that holds this namespace's events."""
        return self.nats.stream or f"SCANFLOW_{self.namespace.upper().replace('-', '_')}"

    @classmethod
    def defaults(cls) -> Settings:
        """The built-in defaults, ignoring the environment (for embedding and tests)."""
        return cls.model_construct()

    @classmethod
    def load(cls, path: str | None = None, **overrides: object) -> Settings:
        """Read settings at the edge: a YAML or JSON file, then the environment, then overrides.

        Later sources win: an environment variable beats the file, and an
        explicit override (a CLI option) beats both.
        """
        data: dict[str, object] = {}
        if path:
            data = _read_file(path)
        from_env = cls()  # pydantic-settings reads SCANFLOW_* variables here
        # Agent sections by one spelling of their names, so that a file's
        # "my-agent" and the environment's MY_AGENT merge instead of shadowing.
        layers = [_canonical(data), _canonical(from_env.model_dump(exclude_unset=True))]
        merged = _deep_merge(layers[0], layers[1])
        return cls.model_validate(_deep_merge(merged, _canonical(dict(overrides))))


def agent_key(name: str) -> str:
    """The one spelling of an agent's name in ``Settings.agents``: lower case, ``-`` for ``_``."""
    return name.lower().replace("_", "-")


def agent_sections(sections: dict[str, Any]) -> dict[str, Any]:
    """``sections`` keyed by :func:`agent_key`; two spellings of one name are merged."""
    merged: dict[str, Any] = {}
    for name, section in sections.items():
        key = agent_key(str(name))
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(section, dict):
            merged[key] = _deep_merge(current, section)
        else:
            merged[key] = section
    return merged


def _canonical(data: dict[str, object]) -> dict[str, object]:
    sections = data.get("agents")
    if isinstance(sections, dict):
        return {**data, "agents": agent_sections(sections)}
    return data


def list_from_text(value: Any) -> Any:
    """A list setting given as text (the environment's form): a JSON list, or comma-separated.

    Use it as a ``mode="before"`` field validator; other values pass unchanged.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _read_file(path: str) -> dict[str, object]:
    import json
    from pathlib import Path

    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml  # optional: only needed for YAML settings files

        loaded = yaml.safe_load(text) or {}
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"settings file {path} must hold a mapping at the top level")
    return loaded


def _deep_merge(base: dict[str, object], extra: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged
