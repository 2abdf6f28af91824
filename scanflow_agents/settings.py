"""One settings tree for every agent, the CLI and the Helm chart.

Settings are read once, at the edge (the CLI or the pod entrypoint), from the
environment and an optional YAML/JSON file, and then injected: nothing below
this module reads the environment. Every field maps to an environment variable
``SCANFLOW_<SECTION>__<FIELD>`` (for example ``SCANFLOW_NATS__URL``) and to the
same path in the Helm chart's ``values.yaml`` under ``settings:``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseModel):
    """The telemetry stream: what model servers report, kept short and bounded.

    Apart from the audit trail on purpose: when reports from a fleet of
    replicas fill it, the oldest are dropped and audit records go on being
    stored (the audit stream has no size limit unless ``nats.stream_max_bytes``).
    """

    model_config = ConfigDict(extra="forbid")

    max_age: float = Field(3600.0, gt=0, description="Seconds a report is kept.")
    max_bytes: int = Field(
        2**30, gt=0, description="Bytes kept at most; beyond it the oldest reports are dropped."
    )
    replicas: int | None = Field(
        None, ge=1, le=5, description="Servers keeping a copy; empty means nats.replicas."
    )


class NatsSettings(BaseModel):
    """How agents reach each other."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds: str | None = Field(
        None, description="Path of a credentials file (user JWT and nkeys seed), for JWT auth."
    )
    nkeys_seed: str | None = Field(None, description="Path of an nkeys seed file (SU...).")
    tls_ca: str | None = Field(
        None, description="Path of the CA bundle that signed the server's certificate."
    )
    tls_cert: str | None = Field(
        None, description="Path of this client's certificate (mutual TLS); needs tls_key."
    )
    tls_key: str | None = Field(None, description="Path of the private key of tls_cert.")
    tls_hostname: str | None = Field(
        None, description="Name to check the server's certificate against, if not the URL's host."
    )
    inbox_prefix: str = Field(
        "_INBOX",
        description=(
            "Prefix of reply subjects; give each agent its own (e.g. _INBOX.planner) so NATS "
            "permissions can keep others from reading its replies."
        ),
    )
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the first connection."
    )
    stream: str = Field(
        "",
        description=(
            "JetStream stream for the audit trail (observations, decisions, actions, chains); "
            "empty means SCANFLOW_<NAMESPACE>. Telemetry goes to <stream>_TELEMETRY."
        ),
    )
    stream_max_age: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds an audit record is kept in the stream."
    )
    stream_max_bytes: int | None = Field(
        None,
        gt=0,
        description=(
            "Bytes of audit records kept at most, the oldest dropped beyond it; empty: no "
            "limit (the records go when they are stream_max_age old)."
        ),
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="The telemetry stream (model-server reports).",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description=(
            "Servers that keep a copy of every stream and key-value bucket (events, leases, "
            "call store, approvals, planner runs). 1: losing that server loses them; "
            "3 on a three-server JetStream cluster survives the loss of one."
        ),
    )

    @model_validator(mode="after")
    def _key_needs_certificate(self) -> NatsSettings:
        if self.tls_key and not self.tls_cert:
            raise ValueError("nats.tls_key is set without nats.tls_cert: give both for mutual TLS")
        return self


class MlflowSettings(BaseModel):
    """Where agents keep their knowledge."""

    model_config = ConfigDict(extra="forbid")

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

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(30.0, gt=0, description="Seconds one handler run may take.")
    retries: int = Field(0, ge=0, description="Extra attempts after a temporary failure.")
    backoff: float = Field(1.0, ge=0, description="First retry delay, doubled at each attempt.")
    max_backoff: float = Field(60.0, ge=0, description="Longest delay between retries.")


class AgentSettings(BaseModel):
    """How an agent process behaves."""

    model_config = ConfigDict(extra="forbid")

    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between heartbeats.")
    call_timeout: float = Field(10.0, gt=0, description="Default seconds to wait for a reply.")
    dry_run: bool = Field(False, description="Record what actuators would do without acting.")
    shadow: bool = Field(
        False,
        description="Run as a shadow of a changed policy, beside the live agent under its own "
        "name (`scanflow run --name <agent>-shadow`): it sees the same events, every call it "
        "makes is a dry run (the callee validates, guards and records it without acting), "
        "its decisions are recorded with 'shadow': true, and what it emits goes under "
        "'shadow.<name>.' so that no live rule acts on it. It cannot leave dry-run. Its "
        "timed sensors do not run: its rules on them follow the live agent's recorded "
        "observations.",
    )
    shadow_of: str | None = Field(
        None,
        description="The live agent a shadow follows (whose observations its rules get); "
        "empty: the shadow's name without its '-shadow' ending (`scanflow run --shadow "
        "--name X` sets it to the agent class's name).",
    )
    record_reads: bool = Field(
        False, description="Record calls of read-only actuators too (as actions marked read_only)."
    )
    idempotency_window: float = Field(
        3600.0, gt=0, description="Seconds a reply is kept to answer a redelivered call."
    )
    idempotency_bytes: int = Field(
        64 * 2**20, gt=0, description="Bytes of replies kept in the process for redelivered calls."
    )
    max_inflight: int = Field(
        256, gt=0, description="Calls one agent process runs at once; more are answered 'busy'."
    )
    record_backlog: int = Field(
        10_000,
        gt=0,
        description="Events waiting to be stored; beyond it calls are answered 'busy' and "
        "sensors and rules wait.",
    )
    record_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one attempt to store records may take; a reply whose record was "
        "not stored by then says so (the record stays queued).",
    )
    reply_after: Literal["stored", "sent"] = Field(
        "stored",
        description="When a call's reply goes out: 'stored', once the stream acknowledged its "
        "action record; 'sent', once the record is on its way to the server, ahead of the "
        "reply (lower latency; the record is still confirmed and resent until stored, but a "
        "caller is not told if the stream refuses it).",
    )
    unrecorded: Literal["refuse", "act"] = Field(
        "refuse",
        description="What a call gets while the stream cannot store records (NATS down, no "
        "stream leader): 'refuse' answers 'unavailable' and acts on nothing it cannot record; "
        "'act' acts anyway and its reply says the record is not stored yet (it stays queued).",
    )
    action_budget: int | None = Field(
        None,
        gt=0,
        description="Actions at most per action_budget_period across every agent of the "
        "namespace (counted in a shared key-value bucket); beyond it calls are refused until "
        "the next window. Set the same in every agent. Empty: no budget.",
    )
    action_budget_period: float = Field(
        3600.0, gt=0, description="Seconds of one window of the action budget."
    )
    shutdown_timeout: float = Field(10.0, gt=0, description="Seconds a graceful stop may take.")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="The event loop of `scanflow run`: 'auto' (uvloop when installed, the "
        "'fast' extra), 'asyncio' or 'uvloop'.",
    )
    events_max_age: float = Field(
        3600.0,
        gt=0,
        description=(
            "Seconds an event may be old and still reach rules and event sensors; older "
            "ones stay in the stream but are skipped (an agent back after a long outage "
            "does not replay them)."
        ),
    )
    events_ack_wait: float = Field(
        10.0,
        gt=0,
        description=(
            "Seconds before an event that a replica took and never acknowledged (it died) "
            "is delivered again."
        ),
    )
    lease_ttl: float = Field(
        10.0,
        ge=1,
        description=(
            "Seconds a leader's lease lasts without renewal: another replica takes over "
            "within about this long after the leader dies (the longest lease_ttl of the "
            "namespace's agents, which share one lease bucket)."
        ),
    )
    last_state_ttl: float = Field(
        3600.0,
        gt=0,
        description=(
            "Seconds the namespace keeps a replica's last state after it is gone: how long "
            "`scanflow agents` and the console show it as stopped (a clean stop) or stale "
            "(it died without a word)."
        ),
    )
    handlers: HandlerSettings = Field(default_factory=HandlerSettings)
    allow: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Which callers may call which actuators: actuator (or agent.actuator, agent.*, *) "
            "to caller names ('client' for people and scripts, '*' for anyone). Actuators "
            "without an entry take calls from anyone; refused calls are rejected and recorded."
        ),
    )

    @field_validator("allow", mode="before")
    @classmethod
    def _callers_from_text(cls, value: Any) -> Any:
        # SCANFLOW_AGENT__ALLOW__SCALE=improver,client gives the callers as text.
        if isinstance(value, dict):
            return {key: list_from_text(callers) for key, callers in value.items()}
        return value


class HttpSettings(BaseModel):
    """The HTTP server of ``scanflow run``: probes and Prometheus metrics (what a pod needs)."""

    model_config = ConfigDict(extra="forbid")

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
        """The JetStream stream that holds this namespace's audit trail."""
        return self.nats.stream or f"SCANFLOW_{self.namespace.upper().replace('-', '_')}"

    @property
    def telemetry_stream_name(self) -> str:
        """The JetStream stream that holds this namespace's telemetry."""
        return f"{self.stream_name}_TELEMETRY"

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
            check_known(cls, data, source=f"the settings file {path}")
        check_environment(cls, os.environ)
        check_known(cls, overrides, source="the command line")
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


class UnknownSetting(ValueError):
    """A settings source names a key that no section has (most often a typo).

    Attributes:
        path: the dotted path of the key, e.g. ``nats.passwrod``.
        source: where it came from, e.g. ``the environment variable SCANFLOW_NATS__PASSWROD``.
    """

    def __init__(self, path: str, source: str, suggestion: str | None = None) -> None:
        self.path = path
        self.source = source
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"unknown setting {path} (from {source}){hint}")


ENV_PREFIX = "SCANFLOW_"
ENV_DELIMITER = "__"


def check_known(model: type[BaseModel], data: Mapping[str, Any], *, source: str) -> None:
    """Refuse keys of ``data`` that ``model``'s tree does not have, naming the key and ``source``.

    Sections are walked down to their fields; a free mapping (``agents``, whose
    sections each agent validates itself) is not looked into.

    Raises:
        UnknownSetting: for the first unknown key.
    """
    for path in _unknown_paths(model, data, ()):
        raise UnknownSetting(".".join(path), source, _suggest(model, path))


def check_environment(model: type[BaseModel], environ: Mapping[str, str]) -> None:
    """Refuse ``SCANFLOW_<SECTION>__<FIELD>`` variables that name no setting.

    Only variables with the nested delimiter are settings by form: other
    ``SCANFLOW_*`` variables (``SCANFLOW_RUN_DIR`` for workflow steps, ...) are
    left alone. Names are case-insensitive, as pydantic-settings reads them.
    """
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or ENV_DELIMITER not in name:
            continue
        parts = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
        nested: dict[str, Any] = {}
        for part in reversed(parts):
            nested = {part: nested} if nested else {part: environ[name]}
        for path in _unknown_paths(model, nested, ()):
            # The whole name, also below an unknown section (nat.url, not nat).
            rest = parts[len(path) :]
            suggestion = _suggest(model, path)
            raise UnknownSetting(
                ".".join(parts),
                f"the environment variable {name}",
                ".".join((suggestion, *rest)) if suggestion else None,
            )


def _unknown_paths(
    model: type[BaseModel], data: Mapping[str, Any], where: tuple[str, ...]
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append((*where, str(key)))
            continue
        section = _section_model(field.annotation)
        if section is not None and isinstance(value, Mapping):
            found += _unknown_paths(section, value, (*where, key))
    return found


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (also through ``X | None``), or ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _suggest(model: type[BaseModel], path: tuple[str, ...]) -> str | None:
    section: type[BaseModel] | None = model
    for part in path[:-1]:
        field = section.model_fields.get(part) if section else None
        section = _section_model(field.annotation) if field else None
    if section is None:
        return None
    close = difflib.get_close_matches(path[-1], list(section.model_fields), n=1, cutoff=0.7)
    return ".".join((*path[:-1], close[0])) if close else None


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
