"""What one model-server process is told at start: its model, address and reporting."""

from __future__ import annotations

import argparse
import os
import socket

from pydantic import BaseModel, Field


class ServingConfig(BaseModel):
    """The options of ``python -m scanflow_agents.serving``."""

    model_uri: str = Field(min_length=1, description="MLflow model URI to serve.")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    reuse_port: bool = Field(default=False, description="Share the port with other replicas.")
    admin_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="A private port of this replica (health, metrics).",
    )
    load_before_listen: bool = Field(
        default=True,
        description="Load the model before listening: replicas sharing a port must not "
        "get traffic before they can answer. False serves /health (503) while loading.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server the model loads from (a models:/ URI is looked "
        "up in its registry). Reports go to MLflow only with --report-tracking-uri.",
    )
    registry_uri: str | None = Field(
        default=None, description="MLflow model registry, if not the tracking server."
    )
    report_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server that keeps each serving report as metrics of a "
        "run of this replica; none: reports go to NATS only.",
    )
    nats_url: str | None = None
    namespace: str = "default"
    workflow: str = "default"
    node: str = "model"
    replica: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    report_interval: float = Field(
        default=10.0, gt=0, description="Seconds between serving reports."
    )
    experiment: str = Field(
        default="scanflow-serving", description="MLflow experiment for reports."
    )
    graceful_timeout: float = Field(
        default=10.0, gt=0, description="Seconds in-flight requests get."
    )
    drain_seconds: float = Field(
        default=0.2, ge=0, description="Seconds a stopping replica keeps accepting what is queued."
    )
    latency_p95_ms: float | None = Field(
        default=None,
        gt=0,
        description="The service's latency objective (p95, ms), reported for the checker.",
    )
    inline_rows: int = Field(
        default=4,
        ge=0,
        description="Requests of at most this many rows are predicted on the event loop, "
        "larger ones in a thread: for a small model the hand-off costs more than the "
        "prediction. 0: always in a thread (a slow model, even for one row).",
    )
    standby: bool = Field(
        default=False,
        description="Load the model and answer on the admin port only, outside the rotation; "
        "join the shared port on POST /activate (a warm replica for a fast scale-out).",
    )
    probe: bool = Field(
        default=True,
        description="Before each report, time back-to-back requests on one kept-alive "
        "connection to this replica: the latency clients feel beyond the handler.",
    )

    def to_args(self) -> list[str]:
        """The command-line options that reproduce this config."""
        args: list[str] = []
        for name, value in self.model_dump(exclude_none=True).items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        return args

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> ServingConfig:
        """Parse command-line options (the fields, dashed: ``--model-uri``)."""
        parser = argparse.ArgumentParser(
            prog="python -m scanflow_agents.serving", description="Serve an MLflow model."
        )
        for name, field in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            if field.annotation is bool:
                parser.add_argument(
                    flag,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=field.description,
                )
            else:
                parser.add_argument(
                    flag, default=None, help=field.description, required=field.is_required()
                )
        given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
        return cls.model_validate(given)
