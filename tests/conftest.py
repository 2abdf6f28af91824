"""Shared fixtures: every contract test runs on the in-memory bus and on a real NATS."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.testing import NatsCluster

# ---------------------------------------------------------------------------
# A run leaves no process behind. Every server a fixture starts is tied to its
# test process (a tether or a parent-death signal), so killing pytest, even
# with SIGKILL, ends them; and at the end of a run, a process that pytest
# started and that still runs fails the run, named with its command line.
# Under pytest-xdist each worker checks its own descendants and writes what it
# found where the controller reads it; a worker whose controller is gone exits.

LEFTOVERS = "SCANFLOW_TEST_LEFTOVERS"
#: Seconds a process that is on its way out gets before it counts as left behind.
LEFTOVER_GRACE = 5.0


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):
        os.environ[LEFTOVERS] = tempfile.mkdtemp(prefix="scanflow-leftovers-")
        os.environ[HANGS] = tempfile.mkdtemp(prefix="scanflow-hangs-")
        return
    parent = os.getppid()

    def exit_with_the_controller() -> None:
        # execnet notices a dead controller only when it next talks to it; a
        # test that hangs would keep this worker (and its servers) alive.
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=exit_with_the_controller, name="orphan-guard", daemon=True).start()


def _left_behind() -> list[str]:
    """Command lines of our descendants still running after a grace period (then killed)."""
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + LEFTOVER_GRACE
    while True:
        alive = []
        for child in me.children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    found = []
    for child in alive:
        try:
            found.append(f"pid {child.pid}: {' '.join(child.cmdline())[:300]}")
            child.kill()
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = os.environ.get(LEFTOVERS)
    if not folder:
        return
    found = _left_behind()
    if _is_worker(session.config):
        if found:
            name = session.config.workerinput["workerid"]  # type: ignore[attr-defined]
            with open(os.path.join(folder, name), "a") as out:
                out.write("\n".join(found) + "\n")
        return
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as worker_found:
            found += worker_found.read().splitlines()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(f"  {line}" for line in found)
        message = f"processes left running at the end of the run (now killed):\n{lines}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            sys.stderr.write(message + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------------
# A hung test tells where it hung. The hang guard (pytest-timeout's thread
# method) ends the worker, and under xdist what it prints is lost: the run only
# says the worker "crashed". So a second timer, a second before the guard's,
# writes the stacks of every thread and pending asyncio task to a file of the
# worker's, and the controller adds that file to the crash report.

HANGS = "SCANFLOW_TEST_HANGS"
_HANG_TIMER = pytest.StashKey[threading.Timer]()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    folder = os.environ.get(HANGS)
    if not folder or not _is_worker(item.config):
        return
    worker = item.config.workerinput["workerid"]  # type: ignore[attr-defined]
    timer = threading.Timer(
        max(settings.timeout - 1.0, 0.5), _write_stacks, (Path(folder) / worker, item.nodeid)
    )
    timer.daemon = True
    timer.start()
    item.stash[_HANG_TIMER] = timer


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_HANG_TIMER, None)
    if timer is not None:
        timer.cancel()


def _write_stacks(path: Path, nodeid: str) -> None:
    out = io.StringIO()
    out.write(f"{nodeid} hung: its stacks a second before the hang guard ended it\n")
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {ident}\n{''.join(traceback.format_stack(frame))}")
    # Tasks of whichever loop runs (the timer's thread has none of its own).
    tasks = [t for t in gc.get_objects() if isinstance(t, asyncio.Task) and not t.done()]
    for task in tasks:
        out.write(f"--- task {task.get_name()}\n")
        task.print_stack(file=out)
    path.write_text(out.getvalue())


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: object) -> None:
    folder = os.environ.get(HANGS)
    stacks = Path(folder or ".") / report.node.gateway.id
    if folder and stacks.exists():
        report.longrepr = f"{report.longrepr}\n{stacks.read_text()}"
        stacks.unlink()


@pytest.fixture(autouse=True)
def process_logging_restored() -> Iterator[None]:
    """Give every test the root logger as it found it.

    A test that runs ``scanflow run`` in-process configures logging for the whole
    process: its rate limit lands on pytest's capture handlers, which live for the
    session, and later tests that read ``caplog`` then miss repeated warnings.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    filters = {handler: list(handler.filters) for handler in handlers}
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler in filters:
            handler.filters[:] = filters[handler]
        elif type(handler).__module__ != "_pytest.logging":
            root.removeHandler(handler)


# ---------------------------------------------------------------------------
# Two tiers. `make test-quick` (the edit loop) leaves out the tests marked slow:
# every test that needs a real MLflow server (directly, or through the stores of
# trained models built with one) and the modules whose tests start processes of
# their own (agents, model servers, MLflow servers they stop and start, a probe
# suite). They run in `make test`.

SERVER_FIXTURES = {"mlflow_server", "second_mlflow_server", "digits", "knowledge"}
PROCESS_MODULES = {
    "tests/bench/test_bench_smoke.py",
    "tests/bench/test_chains_smoke.py",
    "tests/bench/test_fleet_smoke.py",
    "tests/bench/test_serving_smoke.py",
    "tests/console/test_console.py",
    "tests/knowledge/test_agent_knowledge.py",
    "tests/knowledge/test_recorders.py",
    "tests/platforms/test_local_runs.py",
    "tests/platforms/test_local_services.py",
    "tests/platforms/test_rundirs.py",
    "tests/runtime/test_cli.py",
    "tests/runtime/test_commands.py",
    "tests/runtime/test_pod_entrypoint.py",
    "tests/security/test_secrets.py",
    "tests/security/test_storm.py",
    "tests/serving/test_model_server.py",
    "tests/test_hygiene.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        path = Path(str(item.path)).relative_to(root).as_posix()
        fixtures = set(getattr(item, "fixturenames", ()))
        if path in PROCESS_MODULES or fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.slow)
    # The longest first (end-to-end, then slow, then the rest; in file order within
    # each): xdist's workers then fill the time around them with short tests,
    # instead of one worker running a two-minute test alone at the end. The
    # end-to-end tests that name their length (``e2e(seconds=...)``) go first,
    # longest first: with `make test-e2e`'s load scheduling the two workers take
    # them about as the longest-first rule would (an even share of the time).
    items.sort(key=_weight)


def _weight(item: pytest.Item) -> tuple[int, float]:
    e2e = item.get_closest_marker("e2e")
    if e2e is not None:
        return 0, -float(e2e.kwargs.get("seconds", 0))
    return (1 if item.get_closest_marker("slow") else 2), 0.0


FAKE_CLOCK = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Run a test that asked for it (see ``bus``) on looptime's fake loop clock.

    looptime's own pytest plugin is off (``-p no:looptime``): for every sync test
    it makes an event loop it never closes. Here only the test's running loop is
    patched, at its current time, so the clock goes on from where the fixtures
    left it.
    """
    if not pyfuncitem.stash.get(FAKE_CLOCK, False):
        return (yield)
    import looptime

    loop = asyncio.get_event_loop_policy().get_event_loop()
    assert isinstance(loop, asyncio.BaseEventLoop)
    fake = looptime.patch_event_loop(loop, start=loop.time(), _enabled=False)
    with fake.looptime_enabled():
        return (yield)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Each test that takes ``bus`` runs once per bus: in memory and on one real
    # nats-server, and on a three-server cluster where its module's BUSES says so.
    if "bus" in metafunc.fixturenames:
        buses = getattr(metafunc.module, "BUSES", ("memory", "nats"))
        metafunc.parametrize("bus", buses, indirect=True)


@pytest.fixture
def bus(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-memory bus, or the URL of the session's real nats-server
    (``cluster``: the URLs of the session's three-server cluster).

    A test marked ``fake_clock`` runs its memory-bus case on a fake event-loop
    clock (looptime): a sleep past a cooldown takes no time. Its NATS case keeps
    the real clock, since a fake one would also fast-forward the waits for the
    server's replies.
    """
    if request.param == "memory":
        if request.node.get_closest_marker("fake_clock"):
            request.node.stash[FAKE_CLOCK] = True
        return None
    if request.param == "cluster":  # the transport contract runs on one once
        cluster: NatsCluster = request.getfixturevalue("nats_cluster")
        return cluster.url
    url: str = request.getfixturevalue("nats_url")
    return url


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """The session's three-server JetStream cluster: for tests that kill none of it.

    A failover test starts its own (``async with NatsCluster()``): a killed
    member would change the ground under every later test.
    """
    cluster = NatsCluster()
    try:
        asyncio.run(cluster.start())
        yield cluster
    finally:
        cluster.stop()


# A real MLflow server per test session, on the backend chosen by the environment:
# SCANFLOW_TEST_MLFLOW_BACKEND (default: sqlite in a temporary directory), e.g.
# postgresql+psycopg2://postgres@127.0.0.1:5432/db; SCANFLOW_TEST_MLFLOW_ARTIFACTS
# (default: a temporary directory), e.g. s3://bucket/artifacts with
# MLFLOW_S3_ENDPOINT_URL and AWS credentials in the environment, which the server inherits.


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """The session's MLflow server, on the configured backend and artifact store."""
    backend = os.environ.get("SCANFLOW_TEST_MLFLOW_BACKEND") or None
    artifacts = os.environ.get("SCANFLOW_TEST_MLFLOW_ARTIFACTS") or None
    with MlflowServer(backend, artifacts, startup_timeout=180) as server:
        yield server


@pytest.fixture(scope="session")
def second_mlflow_server() -> Iterator[MlflowServer]:
    """Another MLflow server with its own sqlite store, for isolation tests."""
    with MlflowServer(startup_timeout=180) as server:
        yield server


# A local MLflow store (SQLite) holding two digits classifiers, for the model
# server and platform tests (built once per session, in a subprocess).
SUPPORT = Path(__file__).parent / "support"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"scanflow_test_support_{name}", SUPPORT / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def http() -> ModuleType:
    """The blocking HTTP helper module (``http.request(port, method, path, body)``)."""
    return _load("loopback")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tracking URI with models ``models:/digits/1`` and ``/2``, test rows and labels."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, str(SUPPORT / "digits_models.py"), uri],
        capture_output=True,
        text=True,
        # A bound for a hang: at a run's start every worker starts its servers at once.
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    data["tracking_uri"] = uri
    return data
