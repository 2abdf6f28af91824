"""Registered models: versions and aliases.

The planner promotes a model by moving an alias (``champion``, ``production``)
to a new version; a model server resolves ``models:/<name>@<alias>``. MLflow's
deprecated stages are not used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scanflow_agents.knowledge.clients import KnowledgeClient
from scanflow_agents.knowledge.records import ModelVersionRecord

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))$")


@dataclass(frozen=True)
class ModelRef:
    """A registry model URI taken apart: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.

    Exactly one of ``version`` and ``alias`` is set.
    """

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef | None:
        """The parts of ``uri``; None when it names no registered version or alias."""
        match = _MODEL_URI.match(uri)
        if match is None:
            return None
        return cls(match["name"], match["version"], match["alias"])

    def at(self, version: str | int) -> str:
        """The URI of ``version`` of this model."""
        return f"models:/{self.name}/{version}"

    def __str__(self) -> str:
        return self.at(self.version) if self.version else f"models:/{self.name}@{self.alias}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


class ModelRegistry:
    """The model registry of one MLflow server.

    Args:
        client: The MLflow client (its registry URI is used).
    """

    def __init__(self, client: KnowledgeClient) -> None:
        self.client = client

    async def ensure_model(self, name: str, *, description: str | None = None) -> None:
        """Create the registered model ``name`` unless it exists."""

        def create(store: Any) -> None:
            from mlflow.exceptions import MlflowException

            try:
                store.create_registered_model(name, None, description)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        await self.client.registry(f"creating registered model '{name}'", create)

    async def create_version(
        self,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersionRecord:
        """Register a new version of ``name`` (created if missing) from ``source``."""
        await self.ensure_model(name)

        def create(store: Any) -> Any:
            from mlflow.entities.model_registry import ModelVersionTag

            version_tags = [ModelVersionTag(k, v) for k, v in (tags or {}).items()]  # type: ignore[no-untyped-call]
            return store.create_model_version(name, source, run_id, version_tags)

        version = await self.client.registry(f"registering a version of model '{name}'", create)
        return ModelVersionRecord.from_version(version)

    async def versions(self, name: str) -> list[ModelVersionRecord]:
        """Every version of ``name``, newest first (empty if the model is unknown)."""

        def search(store: Any) -> tuple[list[Any], dict[str, list[str]]]:
            found: list[Any] = []
            token = None
            while True:
                page = store.search_model_versions(
                    f"name = {_quote(name)}", 1000, ["version_number DESC"], token
                )
                found.extend(page)
                token = page.token
                if not token:
                    break
            # Search results leave aliases out; the registered model lists them.
            aliases: dict[str, list[str]] = {}
            if found:
                for alias, version in store.get_registered_model(name).aliases.items():
                    aliases.setdefault(str(version), []).append(alias)
            return found, aliases

        versions, aliases = await self.client.registry(
            f"listing versions of model '{name}'", search
        )
        return [
            replace(record, aliases=tuple(sorted(aliases.get(record.version, ()))))
            for record in map(ModelVersionRecord.from_version, versions)
        ]

    async def version_by_alias(self, name: str, alias: str) -> ModelVersionRecord | None:
        """The version ``alias`` points at, or None if the alias (or model) is unset."""

        def get(store: Any) -> Any:
            from mlflow.exceptions import MlflowException

            try:
                return store.get_model_version_by_alias(name, alias)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

        version = await self.client.registry(f"resolving alias '{alias}' of model '{name}'", get)
        return ModelVersionRecord.from_version(version) if version is not None else None

    async def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point ``alias`` at ``version`` (moving it from any other version)."""
        await self.client.registry(
            f"setting alias '{alias}' of model '{name}' to version {version}",
            lambda store: store.set_registered_model_alias(name, alias, str(version)),
        )

    async def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from model ``name``."""
        await self.client.registry(
            f"deleting alias '{alias}' of model '{name}'",
            lambda store: store.delete_registered_model_alias(name, alias),
        )
