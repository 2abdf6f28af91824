"""Batch workflows on the local platform: real subprocesses in dependency order."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scanflow_agents.platforms import PlatformError, RunStatus
from scanflow_agents.platforms.local import LocalPlatform, LocalPlatformSettings
from scanflow_agents.workflows import load_workflow

# Each step appends "<node> <run id> <params>" to a shared file, then exits
# with the code it was given: the file shows order and environment.
STEP = """
import json, os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
time.sleep(float(args.get("--sleep", "0")))
with open(os.path.join(os.environ["SCANFLOW_RUN_DIR"], "..", "trace"), "a") as trace:
    trace.write(json.dumps([os.environ["SCANFLOW_NODE"], os.environ["SCANFLOW_RUN_ID"],
                            os.environ.get("MLFLOW_TRACKING_URI"), args]) + "\\n")
sys.exit(int(args.get("--exit", "0")))
"""


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[LocalPlatform]:
    finished: list[RunStatus] = []
    settings = LocalPlatformSettings(base_dir=tmp_path / "platform", tracking_uri="sqlite:///x.db")
    async with LocalPlatform(settings, on_run_finished=finished.append) as platform:
        platform.finished = finished  # type: ignore[attr-defined]
        yield platform


def _workflow(tmp_path: Path, second_exit: int = 0) -> str:
    (tmp_path / "step.py").write_text(STEP)
    path = tmp_path / "wf.yaml"
    path.write_text(f"""
name: train
nodes:
  - {{name: prepare, entry_point: step.py, parameters: {{sleep: 0.2}}}}
  - {{name: fit, entry_point: step.py, parameters: {{exit: {second_exit}, alpha: 0.5}}}}
  - {{name: publish, entry_point: step.py}}
edges: [[prepare, fit], [fit, publish]]
""")
    return str(path)


def _trace(platform: LocalPlatform) -> list[list[object]]:
    trace = platform.settings.base_dir / "runs" / "trace"
    return [json.loads(line) for line in trace.read_text().splitlines()]


async def test_steps_run_in_dependency_order_with_their_environment(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    workflow = load_workflow(Path(_workflow(tmp_path)))

    run_id = await platform.run(workflow)
    running = await platform.run_status(run_id)
    status = await platform.wait(run_id, timeout=30)

    assert running.state in ("pending", "running")  # run() returned at once
    assert status.state == "succeeded", status.message
    trace = _trace(platform)
    assert [row[0] for row in trace] == ["prepare", "fit", "publish"]
    assert {row[1] for row in trace} == {run_id}
    assert trace[1][2] == "sqlite:///x.db"
    assert trace[1][3] == {"--exit": "0", "--alpha": "0.5"}
    assert all(n.log_path for n in status.nodes.values())
    assert [s.run_id for s in platform.finished] == [run_id]  # type: ignore[attr-defined]
    # The same run id again starts nothing.
    assert await platform.run(workflow, run_id=run_id) == run_id
    assert len(_trace(platform)) == 3


async def test_a_failing_step_stops_its_dependants_and_is_named(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    workflow = load_workflow(Path(_workflow(tmp_path, second_exit=3)))

    status = await platform.wait(await platform.run(workflow), timeout=30)

    assert status.state == "failed"
    assert (status.failed_node, status.exit_code) == ("fit", 3)
    assert "node 'fit' of workflow 'train' failed with exit code 3" in status.message
    assert status.nodes["publish"].state == "skipped"
    assert status.nodes["publish"].started_at is None
    assert [row[0] for row in _trace(platform)] == ["prepare", "fit"]
    assert platform.finished[0].failed_node == "fit"  # type: ignore[attr-defined]


async def test_independent_steps_run_together_and_functions_get_parameters(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    (tmp_path / "steps_module.py").write_text(
        "import os, pathlib, time\n"
        "def work(name, seconds):\n"
        "    pathlib.Path(os.environ['SCANFLOW_RUN_DIR'], name).write_text(str(time.time()))\n"
        "    time.sleep(seconds)\n"
    )
    workflow = load_workflow(
        {
            "name": "fanout",
            "nodes": [
                {
                    "name": "left",
                    "entry_point": "steps_module:work",
                    "parameters": {"name": "left", "seconds": 1.0},
                    "env": {"PYTHONPATH": str(tmp_path)},
                },
                {
                    "name": "right",
                    "entry_point": "steps_module:work",
                    "parameters": {"name": "right", "seconds": 1.0},
                    "env": {"PYTHONPATH": str(tmp_path)},
                },
            ],
        }
    )

    status = await platform.wait(await platform.run(workflow), timeout=30)

    assert status.state == "succeeded", status.message
    run_dir = Path(status.run_dir or "")
    started = [float((run_dir / n).read_text()) for n in ("left", "right")]
    assert abs(started[0] - started[1]) < 0.9  # the second did not wait for the first


async def test_a_step_over_its_timeout_is_killed(platform: LocalPlatform, tmp_path: Path) -> None:
    (tmp_path / "step.py").write_text(STEP)
    workflow = load_workflow(
        {
            "name": "slow",
            "base_dir": str(tmp_path),
            "nodes": [
                {
                    "name": "nap",
                    "entry_point": "step.py",
                    "parameters": {"sleep": 30},
                    "timeout": 0.5,
                }
            ],
        }
    )

    status = await platform.wait(await platform.run(workflow), timeout=20)

    assert status.state == "failed"
    assert status.failed_node == "nap"
    assert "timed out after 0.5 s" in status.message


async def test_unknown_runs_and_bad_parameters_are_refused(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    workflow = load_workflow(Path(_workflow(tmp_path)))
    with pytest.raises(PlatformError, match="no run 'nope'") as info:
        await platform.run_status("nope")
    assert info.value.code == "not_found"
    with pytest.raises(PlatformError, match=r"unknown executor\(s\) \['nope'\]"):
        await platform.run(workflow, parameters={"nope": {"x": 1}})


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (no build backend, no index needed)."""
    files = {
        "tinydep/__init__.py": b"VALUE = 42\n",
        "tinydep-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 0.1\n",
        "tinydep-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinydep-0.1.dist-info/RECORD,,")
    path = folder / "tinydep-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("tinydep-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


async def test_build_makes_one_cached_venv_per_requirements(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path)
    (tmp_path / "use.py").write_text(
        "import sys, tinydep\nassert tinydep.VALUE == 42\nassert sys.prefix != sys.base_prefix\n"
    )
    workflow = load_workflow(
        {
            "name": "isolated",
            "base_dir": str(tmp_path),
            "nodes": [
                {"name": "use", "entry_point": "use.py", "requirements": [str(wheel)]},
                {"name": "plain", "entry_point": "use.py"},
            ],
        }
    )

    first = await platform.build(workflow)
    second = await platform.build(workflow)

    assert first.outcome == "created"
    assert second.outcome == "unchanged"
    use, plain = first.environments
    assert use.requirements_hash
    assert not use.reused
    assert plain.python == platform.settings.python
    assert plain.requirements_hash is None
    status = await platform.wait(await platform.run(workflow), timeout=30)
    assert status.nodes["use"].state == "succeeded", status.message
    # The platform's own interpreter has no tinydep: "plain" fails, as it should.
    assert status.nodes["plain"].state == "failed"
