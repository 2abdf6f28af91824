"""Online services on the local platform: replica processes sharing one port."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scanflow_agents.platforms import PlatformError
from scanflow_agents.platforms.local import LocalPlatform, LocalPlatformSettings
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_workflow


@pytest.fixture
async def platform(tmp_path: Path, digits: dict[str, Any]) -> AsyncIterator[LocalPlatform]:
    settings = LocalPlatformSettings(
        base_dir=tmp_path / "platform", tracking_uri=digits["tracking_uri"], report_interval=60
    )
    async with LocalPlatform(settings) as platform:
        yield platform


def _online(digits: dict[str, Any], replicas: int, uri: str = "v1") -> Workflow:
    return load_workflow(
        {
            "name": "serve",
            "kind": "online",
            "nodes": [{"name": "model", "model_uri": digits["uris"][uri], "replicas": replicas}],
        }
    )


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid or 0, 0)
    except ProcessLookupError:
        return False
    return bool(pid)


async def _spread(http: ModuleType, port: int, rows: list[Any], count: int) -> Counter[str]:
    def send() -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(count):
            status, body = http.request(port, "POST", "/predict", {"instances": rows[:1]})
            assert status == 200, body
            seen[body["replica"]] += 1
        return seen

    return await asyncio.to_thread(send)


async def test_two_replicas_share_one_port_and_deploy_is_idempotent(
    platform: LocalPlatform, digits: dict[str, Any], http: ModuleType
) -> None:
    workflow = _online(digits, replicas=2)

    first = await platform.deploy(workflow)
    again = await platform.deploy(workflow)

    assert first.outcome == "created"
    assert again.outcome == "unchanged"
    status = (await platform.status("serve")).services[0]
    assert (status.desired_replicas, status.ready_replicas) == (2, 2)
    port = int(status.url.rsplit(":", 1)[1])
    seen = await _spread(http, port, digits["rows"], 60)
    # The kernel spread 60 new connections over both replicas.
    assert set(seen) == {r.replica for r in status.replicas}
    assert min(seen.values()) >= 5
    # The same (stable) answers whichever replica served them.
    status_code, body = await asyncio.to_thread(
        http.request, port, "POST", "/predict", {"instances": digits["rows"]}
    )
    assert status_code == 200
    assert len(body["predictions"]) == len(digits["rows"])


async def test_scale_up_and_down_changes_processes(
    platform: LocalPlatform, digits: dict[str, Any], http: ModuleType
) -> None:
    await platform.deploy(_online(digits, replicas=1))

    same = await platform.scale("serve", "model", 1)
    up = await platform.scale("serve", "model", 3)
    at_three = (await platform.status("serve")).services[0]
    alive_at_three = [_alive(r.pid) for r in at_three.replicas]
    down = await platform.scale("serve", "model", 1)
    at_one = (await platform.status("serve")).services[0]

    assert (same.outcome, same.message) == ("unchanged", "already 1 replica(s)")
    assert up.outcome == "updated"
    assert up.details == {"before": 1, "replicas": 3}
    assert at_three.ready_replicas == 3
    assert alive_at_three == [True, True, True]
    assert down.outcome == "updated"
    assert at_one.ready_replicas == 1
    stopped = [r.pid for r in at_three.replicas if r.replica != at_one.replicas[0].replica]
    assert len(stopped) == 2
    assert not any(_alive(pid) for pid in stopped)
    port = int(at_one.url.rsplit(":", 1)[1])
    assert set(await _spread(http, port, digits["rows"], 10)) == {at_one.replicas[0].replica}
    with pytest.raises(PlatformError, match="no service 'nope'"):
        await platform.scale("serve", "nope", 2)


# Two replicas rolled one by one under three client loops: about 20 s alone,
# 35 s on a loaded 2-core machine, 110 s beside the demo's tests on a slow day.
@pytest.mark.timeout(300)
async def test_redeploy_under_load_fails_no_request(
    platform: LocalPlatform, digits: dict[str, Any], http: ModuleType
) -> None:
    await platform.deploy(_online(digits, replicas=2, uri="v1"))
    port = int((await platform.status("serve")).services[0].url.rsplit(":", 1)[1])
    stop = threading.Event()
    served: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def load() -> None:
        # A bounded client loop: one request at a time, a new connection each.
        # It runs for the whole rollout however slow the machine (the test's
        # timeout bounds it), not for a fixed time that a slow day outlasts.
        while not stop.is_set():
            try:
                status, body = http.request(
                    port, "POST", "/predict", {"instances": digits["rows"][:1]}
                )
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if status != 200:
                failures.append(f"{status}: {body}")
            else:
                with lock:
                    served[body["model_uri"]] += 1

    # Three clients at once, so connections are queued on the stopping
    # replica's listener while it closes (the case the drain exists for).
    clients = [asyncio.create_task(asyncio.to_thread(load)) for _ in range(3)]
    try:
        await eventually(lambda: served[digits["uris"]["v1"]] > 0, timeout=60)
        result = await platform.redeploy("serve", "model", digits["uris"]["v2"])
        # The load goes on until the new model has answered a few requests.
        await eventually(lambda: served[digits["uris"]["v2"]] >= 3, timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    again = await platform.redeploy("serve", "model", digits["uris"]["v2"])

    assert result.outcome == "updated"
    assert result.details["replaced"] == 2
    assert failures == []
    assert served[digits["uris"]["v1"]] > 0
    assert served[digits["uris"]["v2"]] > 0
    assert again.outcome == "unchanged"
    status = (await platform.status("serve")).services[0]
    assert {r.model_uri for r in status.replicas} == {digits["uris"]["v2"]}
    assert status.ready_replicas == 2
    print(f"redeploy under load: {sum(served.values())} requests, {dict(served)}, 0 failures")


async def test_delete_stops_everything_and_is_idempotent(
    platform: LocalPlatform, digits: dict[str, Any]
) -> None:
    await platform.deploy(_online(digits, replicas=1))
    pid = (await platform.status("serve")).services[0].replicas[0].pid

    deleted = await platform.delete("serve")
    absent = await platform.delete("serve")

    assert deleted.outcome == "deleted"
    assert absent.outcome == "absent"
    assert not _alive(pid)
    assert (await platform.status("serve")).services == []


# Five model-server starts (the first replica, three standbys, the redeployed
# replica): 40 s alone, over 120 s beside the demo's tests on a slow day.
@pytest.mark.timeout(300)
async def test_a_standby_replica_makes_a_scale_out_take_no_process_start(
    tmp_path: Path, digits: dict[str, Any], http: ModuleType
) -> None:
    settings = LocalPlatformSettings(
        base_dir=tmp_path / "platform",
        tracking_uri=digits["tracking_uri"],
        report_interval=60,
        standby_replicas=1,
    )
    async with LocalPlatform(settings) as platform:
        await platform.deploy(_online(digits, replicas=1))
        service = platform._services[("serve", "model")]

        async def standby_ready(uri: str) -> None:
            await eventually(lambda: [r.model_uri for r in service.standby] == [uri], timeout=90)

        await standby_ready(digits["uris"]["v1"])
        warm = service.standby[0]
        serving = {r.process.pid for r in service.replicas}
        await platform.scale("serve", "model", 2)
        status = (await platform.status("serve")).services[0]
        assert (status.desired_replicas, status.ready_replicas) == (2, 2)
        # The scale-out activated the warm process and started none: an HTTP
        # call instead of a process loading MLflow and a model (how long it
        # takes is measured by the demo, docs/explanation/benchmarks.md).
        assert {r.pid for r in status.replicas} == serving | {warm.process.pid}
        port = int(status.url.rsplit(":", 1)[1])
        assert set(await _spread(http, port, digits["rows"], 60)) == {
            r.replica for r in status.replicas
        }
        await standby_ready(digits["uris"]["v1"])  # a new one replaces it
        # A redeploy replaces the standby too: it must serve the new model when activated.
        await platform.redeploy("serve", "model", digits["uris"]["v2"])
        await standby_ready(digits["uris"]["v2"])
