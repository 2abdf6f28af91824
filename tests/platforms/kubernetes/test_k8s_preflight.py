"""The preflight on the emulator: each thing the cluster lacks is named, with its fix.

The emulator answers as an API server would (``emulator.AdmittingEmulator``):
a dry run in a missing namespace is refused, access reviews are answered from
the Role the chart grants, less what a test denies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from scanflow_agents.builtin.planner import Planner
from scanflow_agents.runtime.cli import main

from scanflow_agents import Settings
from scanflow_agents.platforms.kubernetes import (
    KubernetesPlatform,
    KubernetesPlatformSettings,
    permissions,
)
from scanflow_agents.testing import AgentHarness

from .conftest import BUILDS, NAMESPACE, TEAM, Cluster

EVERY_GRANT = [
    (scope, rule.group, rule.resource, verb)
    for scope in ("team", "argo", "builds")
    for rule in permissions.rules(scope)
    for verb in rule.verbs
]


async def _missing(settings: KubernetesPlatformSettings, **update: Any) -> list[str]:
    async with KubernetesPlatform(settings.model_copy(update=update)) as platform:
        return await platform.preflight()


async def test_a_cluster_with_all_it_needs_has_nothing_missing(
    settings: KubernetesPlatformSettings,
) -> None:
    assert await _missing(settings, teams=(TEAM,), argo="never") == []


async def test_a_missing_namespace_is_named_with_the_command_that_makes_it(
    cluster: Cluster, settings: KubernetesPlatformSettings
) -> None:
    missing = await _missing(settings, teams=(TEAM, "audio"), argo="never")
    assert missing == [
        "namespace scanflow-audio does not exist; fix: kubectl create namespace scanflow-audio "
        "(the chart makes it with kubernetes.createNamespaces=true)"
    ]
    cluster.emulator.namespaces.discard(BUILDS)
    missing = await _missing(settings, teams=(TEAM,), argo="never")
    assert [m.split(";")[0] for m in missing] == [f"namespace {BUILDS} does not exist"]
    # The dry runs stored nothing.
    assert cluster.objects("services") == {}
    assert cluster.objects("configmaps", BUILDS) == {}


@pytest.mark.parametrize(("scope", "group", "resource", "verb"), EVERY_GRANT)
async def test_each_missing_permission_is_named(
    cluster: Cluster,
    settings: KubernetesPlatformSettings,
    scope: str,
    group: str,
    resource: str,
    verb: str,
) -> None:
    namespace = BUILDS if scope == "builds" else NAMESPACE
    cluster.emulator.denied.add((namespace, group, resource, verb))
    cluster.serve("serviceaccounts")
    await cluster.add(
        "serviceaccounts", {"metadata": {"name": "scanflow-argo-executor"}}, NAMESPACE
    )
    missing = await _missing(settings, teams=(TEAM,), argo="always")
    what = f"{verb} {resource}" + (f" ({group})" if group else "")
    assert len(missing) == 1, missing
    assert missing[0].startswith(f"the planner may not {what} in namespace {namespace}; fix: ")
    assert "rbac.create=true" in missing[0]


async def test_argos_executor_account_is_checked_only_with_argo(
    cluster: Cluster, settings: KubernetesPlatformSettings
) -> None:
    cluster.serve("serviceaccounts")
    assert await _missing(settings, teams=(TEAM,), argo="never") == []
    missing = await _missing(settings, teams=(TEAM,), argo="auto")
    assert missing == [
        f"service account scanflow-argo-executor (Argo's executor) does not exist in namespace "
        f"{NAMESPACE}; fix: kubectl -n {NAMESPACE} create serviceaccount scanflow-argo-executor, "
        "with a Role to create and patch workflowtaskresults (the chart makes both when "
        "kubernetes.argo is not never)"
    ]
    await cluster.add(
        "serviceaccounts", {"metadata": {"name": "scanflow-argo-executor"}}, NAMESPACE
    )
    assert await _missing(settings, teams=(TEAM,), argo="auto") == []


async def test_the_planner_is_not_ready_until_the_cluster_has_what_it_needs(
    cluster: Cluster, settings: KubernetesPlatformSettings, tmp_path: Path
) -> None:
    cluster.emulator.namespaces.discard(NAMESPACE)
    section: dict[str, Any] = {
        "platform": "kubernetes",
        "store": False,
        "kubernetes": {
            "host": settings.host,
            "teams": [TEAM],
            "team": TEAM,
            "argo": "never",
            "poll_interval": 0.02,
        },
    }
    configured = Settings.defaults().model_copy(update={"agents": {"planner": section}})
    planner = Planner()
    async with AgentHarness(planner, settings=configured):
        assert not planner.runtime.health().ready
        assert planner.unready() == [
            f"kubernetes platform: namespace {NAMESPACE} does not exist; fix: kubectl create "
            f"namespace {NAMESPACE} (the chart makes it with kubernetes.createNamespaces=true)"
        ]
        cluster.emulator.namespaces.add(NAMESPACE)
        assert await planner.preflight() == {"missing": []}
        assert planner.runtime.health().ready
        assert planner.unready() == []


def _settings_file(tmp_path: Path, cluster: Cluster) -> Path:
    # What the chart writes for the planner, pointed at the emulator.
    planner = {
        "platform": "kubernetes",
        "kubernetes": {"host": str(cluster.emulator.url).rstrip("/"), "teams": [TEAM, "audio"],
                       "team": TEAM, "argo": "never"},
    }  # fmt: skip
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"agents": {"planner": planner}}))
    return path


async def test_scanflow_check_runs_the_preflight_and_says_what_is_missing(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = _settings_file(tmp_path, cluster)
    account = "system:serviceaccount:mlops:agents-scanflow-agents"
    args = ["--settings", str(path), "check", "--as", account]
    # The emulator runs in the test's event loop: the command runs in a thread beside it.
    done = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert done.exit_code == 1, done.output
    assert done.output.splitlines() == [
        "missing: namespace scanflow-audio does not exist; fix: kubectl create namespace "
        "scanflow-audio (the chart makes it with kubernetes.createNamespaces=true)"
    ]
    # Asked as the planner's account, not as whoever runs the command.
    asked = [r for r in cluster.emulator if r.url.path.endswith("selfsubjectaccessreviews")]
    assert asked
    assert {r.headers.get("Impersonate-User") for r in asked} == {account}
    cluster.emulator.namespaces.add("scanflow-audio")
    done = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert done.exit_code == 0, done.output
    assert done.output == "ok: the planner has what it needs (teams: vision, audio)\n"
