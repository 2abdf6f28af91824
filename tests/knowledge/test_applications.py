"""Applications saved by one team and read by any team."""

from __future__ import annotations

from scanflow_agents.knowledge import ApplicationStore, KnowledgeClient


def application(name: str, team: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "team": team,
        "workflows": [{"name": "train", "nodes": [{"name": "fit", "kind": "executor"}]}],
        "agents": [{"name": "tracker"}],
        **extra,
    }


async def test_round_trip_list_update_delete(knowledge: KnowledgeClient, unique: str) -> None:
    store = ApplicationStore(knowledge)
    team = f"team-{unique}"
    assert await store.get("mnist", team=team) is None
    assert await store.list(team) == []
    await store.save(application("mnist", team))
    await store.save(application("iris", team))
    assert await store.get("mnist", team=team) == application("mnist", team)
    assert [a["name"] for a in await store.list(team)] == ["iris", "mnist"]

    await store.save(application("mnist", team, version=2))
    assert (await store.get("mnist", team=team) or {}).get("version") == 2
    assert len(await store.list(team)) == 2

    assert await store.delete("mnist", team=team) is True
    assert await store.delete("mnist", team=team) is False
    assert await store.get("mnist", team=team) is None
    assert [a["name"] for a in await store.list(team)] == ["iris"]


async def test_one_team_fetches_another_teams_application(
    knowledge: KnowledgeClient, unique: str
) -> None:
    owner = ApplicationStore(knowledge)
    await owner.save(application("shared", f"data-{unique}"))
    other_team_view = ApplicationStore(knowledge)
    fetched = await other_team_view.get("shared", team=f"data-{unique}")
    assert fetched == application("shared", f"data-{unique}")
    assert await other_team_view.get("shared", team=f"ml-{unique}") is None


async def test_large_application_spans_many_tags(knowledge: KnowledgeClient, unique: str) -> None:
    store = ApplicationStore(knowledge)
    nodes = [{"name": f"node-{i}", "image": "x" * 200, "text": "é'\"\\"} for i in range(1000)]
    big = application("big", f"team-{unique}", workflows=[{"name": "w", "nodes": nodes}])
    await store.save(big)
    assert await store.get("big", team=f"team-{unique}") == big
