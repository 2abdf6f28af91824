"""Registered model versions and aliases, as the planner uses them."""

from __future__ import annotations

import pytest

from scanflow_agents.knowledge import KnowledgeClient, ModelRef, ModelRegistry


async def test_versions_and_aliases(knowledge: KnowledgeClient, unique: str) -> None:
    registry = ModelRegistry(knowledge)
    name = f"mnist-{unique}"
    assert await registry.versions(name) == []
    assert await registry.version_by_alias(name, "champion") is None
    experiment_id = await knowledge.experiment_id(f"models-{unique}", create=True)
    assert experiment_id is not None
    run_id = await knowledge.create_run(experiment_id)
    first = await registry.create_version(name, f"runs:/{run_id}/model", run_id=run_id)
    second = await registry.create_version(
        name, f"runs:/{run_id}/retrained", run_id=run_id, tags={"origin": "retrain"}
    )
    assert (first.version, second.version) == ("1", "2")
    assert first.run_id == run_id
    assert [v.version for v in await registry.versions(name)] == ["2", "1"]
    assert await registry.version_by_alias(name, "champion") is None

    await registry.set_alias(name, "champion", first.version)
    champion = await registry.version_by_alias(name, "champion")
    assert champion is not None
    assert (champion.version, champion.aliases) == ("1", ("champion",))

    await registry.set_alias(name, "champion", 2)  # promotion moves the alias
    champion = await registry.version_by_alias(name, "champion")
    assert champion is not None
    assert (champion.version, champion.tags) == ("2", {"origin": "retrain"})
    versions = {v.version: v.aliases for v in await registry.versions(name)}
    assert versions == {"1": (), "2": ("champion",)}

    await registry.delete_alias(name, "champion")
    assert await registry.version_by_alias(name, "champion") is None


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("models:/digits/3", ("digits", "3", None)),
        ("models:/digits@production", ("digits", None, "production")),
        ("models:/digits", None),
        ("models:/digits/latest", None),
        ("runs:/abc/model", None),
        ("models:/a/b@c", None),
    ],
)
def test_model_uris_are_taken_apart(uri: str, parts: tuple[str, ...] | None) -> None:
    ref = ModelRef.parse(uri)

    assert (None if ref is None else (ref.name, ref.version, ref.alias)) == parts
    if ref is not None:
        assert str(ref) == uri  # and put back together
        assert ref.at(7) == "models:/digits/7"
