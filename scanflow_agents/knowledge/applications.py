"""Applications stored in MLflow, per team, readable by every team.

Layout. Each team has an experiment ``scanflow/<team>``. Each saved version of
an application is one run in it, named after the application and tagged
``scanflow.kind=application``, ``scanflow.application=<name>`` and
``scanflow.team=<team>``. The application itself is JSON in the run's tags
(``scanflow.application.json.000``, ``.001``, ...): tag values are limited
to 8,000 characters, so the text is cut in chunks, and the chunk count is
written last, in ``scanflow.application.chunks``, which marks the version as
complete.

Why tags and not a JSON artifact: tags travel through the same REST calls,
credentials and retry policy as everything else (artifact uploads go through a
different MLflow code path that reads credentials from the environment only),
a listing is a single search, and nothing depends on the artifact store being
up. The limit is about 700 kB of JSON per application (100 tags per request,
up to a few requests), far beyond an application description.

A save writes a new version and only then deletes the older ones, so a
reader never sees a half-written application: it takes the newest complete
version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from scanflow_agents.knowledge.clients import KnowledgeClient
from scanflow_agents.knowledge.records import TEAM_TAG

KIND_TAG = "scanflow.kind"
APPLICATION_TAG = "scanflow.application"
CHUNKS_TAG = "scanflow.application.chunks"
JSON_TAG = "scanflow.application.json"

_CHUNK = 7000  # characters per tag, under MLflow's 8,000 limit
_TAGS_PER_CALL = 100  # MLflow's log_batch limit


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _decode(tags: Mapping[str, str]) -> dict[str, Any]:
    count = int(tags[CHUNKS_TAG])
    text = "".join(tags[f"{JSON_TAG}.{i:03d}"] for i in range(count))
    loaded: dict[str, Any] = json.loads(text)
    return loaded


class ApplicationStore:
    """Save, list, get and delete applications by team.

    Applications are plain dicts with at least ``name``; ``team``,
    ``workflows`` and ``agents`` are kept as given.

    Args:
        client: The MLflow client.
        prefix: Experiment name prefix; teams live in ``<prefix>/<team>``.
    """

    def __init__(self, client: KnowledgeClient, *, prefix: str = "scanflow") -> None:
        self.client = client
        self.prefix = prefix

    def experiment_name(self, team: str) -> str:
        """The experiment holding ``team``'s applications."""
        return f"{self.prefix}/{team}"

    async def save(self, application: Mapping[str, Any], *, team: str | None = None) -> None:
        """Store a new version of an application, replacing the previous one.

        Args:
            application: The application; must have a ``name``.
            team: Owning team; default ``application["team"]``.

        Raises:
            ValueError: No name or no team.
        """
        name = application.get("name")
        owner = team or application.get("team")
        if not name or not owner:
            raise ValueError(f"an application needs a name and a team, got {name!r}/{owner!r}")
        text = json.dumps({**application, "team": owner}, sort_keys=True)
        chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
        old = await self._versions(str(owner), str(name))
        experiment_id = await self.client.experiment_id(self.experiment_name(owner), create=True)
        assert experiment_id is not None  # created above
        # Strictly after every older version, even within one millisecond.
        start = max([int(time.time() * 1000), *(v.info.start_time + 1 for v in old)])
        run_id = await self.client.create_run(
            experiment_id,
            run_name=str(name),
            start_time=start,
            tags={KIND_TAG: "application", APPLICATION_TAG: str(name), TEAM_TAG: str(owner)},
        )
        tags = {f"{JSON_TAG}.{i:03d}": chunk for i, chunk in enumerate(chunks)}
        items = list(tags.items())
        for at in range(0, len(items), _TAGS_PER_CALL):
            await self.client.log_batch(run_id, tags=dict(items[at : at + _TAGS_PER_CALL]))
        await self.client.log_batch(run_id, tags={CHUNKS_TAG: str(len(chunks))})
        await self.client.end_run(run_id)
        for version in old:
            await self.client.delete_run(version.info.run_id)

    async def get(self, name: str, *, team: str) -> dict[str, Any] | None:
        """The newest complete version of application ``name`` of ``team``, or None."""
        versions = await self._versions(team, name)
        return _decode(versions[0].data.tags) if versions else None

    async def delete(self, name: str, *, team: str) -> bool:
        """Delete every version of an application; False if there was none."""
        versions = await self._versions(team, name, complete_only=False)
        for version in versions:
            await self.client.delete_run(version.info.run_id)
        return bool(versions)

    async def _versions(self, team: str, name: str, *, complete_only: bool = True) -> list[Any]:
        return await self._search(
            team, f"tags.`{APPLICATION_TAG}` = {_quote(name)}", complete_only=complete_only
        )

    async def _search(self, team: str, clause: str, *, complete_only: bool = True) -> list[Any]:
        experiment_id = await self.client.experiment_id(self.experiment_name(team))
        if experiment_id is None:
            return []
        clauses = [f"tags.`{KIND_TAG}` = 'application'", clause]
        found: list[Any] = []
        token: str | None = None
        while True:
            runs, token = await self.client.search_runs(
                [experiment_id],
                " AND ".join(c for c in clauses if c),
                order_by=["attributes.start_time DESC"],
                page_token=token,
                operation=f"reading applications of team '{team}'",
            )
            found.extend(r for r in runs if not complete_only or CHUNKS_TAG in r.data.tags)
            if not token:
                return found

    # Last in the class: below this method, ``list`` names it, not the builtin.
    async def list(self, team: str) -> list[dict[str, Any]]:
        """Every application of ``team``, sorted by name."""
        latest: dict[str, dict[str, Any]] = {}
        for run in await self._search(team, ""):
            latest.setdefault(run.data.tags[APPLICATION_TAG], _decode(run.data.tags))
        return [latest[name] for name in sorted(latest)]
