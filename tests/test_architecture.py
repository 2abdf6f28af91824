"""The layers of the architecture page (docs/explanation/architecture.md), checked on every import.

Outermost first: built-in agents → runtime and interfaces → framework core →
adapters, with the settings and the private toolkit (``_kit``) below them all.
Each layer may use only the ones below it; the built-in agents use the public
surface only (no private hooks), and the core stays light. The contracts:

- layers: ``test_module_respects_its_layer``;
- adapters use each other only along the edges of ``ADAPTER_USES``;
- a private module (a ``_name`` in its path) is imported only inside its own
  package, or by the modules ``PRIVATE_USERS`` declares; no module imports
  another module's private name;
- tasks are started only by the task kit (``scanflow_agents._kit.tasks``);
- no module reaches through an agent runtime to its parts: beyond
  ``_core/running.py``, a runtime object is used only through
  ``RUNTIME_CONTRACT``;
- ``scanflow_agents/agents.py`` and the ``_core`` modules form no import
  cycle, counting imports under ``TYPE_CHECKING`` and inside functions;
- the operator's switches have one writer: only their module
  (``_core/switches.py``) touches the fields its mutators set, and only the
  Controller (``_core/controlling.py``) calls the mutators.

Each of the last three is also run on synthetic sources that break it
(``test_*_check_fails_on_*``), so a check that can no longer fail shows.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "scanflow_agents": "scanflow_agents",
    "runtime": "scanflow_agents.runtime",
    "agents": "scanflow_agents.builtin",
    "examples/digits": "scanflow_agents.runtime.demo.digits",
    "examples/wine": "scanflow_agents.runtime.demo.wine",
}
ADAPTERS = (
    "scanflow_agents.transports",
    "scanflow_agents.knowledge",
    "scanflow_agents.platforms",
    "scanflow_agents.serving",
    "scanflow_agents.workflows",
)
SHARED = ("scanflow_agents.settings", "scanflow_agents.redaction")
KIT = ("scanflow_agents._kit",)  # the private toolkit below every layer (task guarding)
DEMO = ("scanflow_agents.runtime.demo",)  # the settings tree is read by every layer
OUTER = ("scanflow_agents.runtime", "scanflow_agents.builtin", "scanflow_agents.testing")
# Which adapter may use which: the rest stand alone (a transport knows no MLflow).
ADAPTER_USES = {
    # Models from the registry; NATS connections made by the agents' own code
    # (authentication, TLS), so model servers connect wherever agents can.
    "scanflow_agents.serving": (
        "scanflow_agents.knowledge",
        "scanflow_agents.transports.connecting",
    ),
    "scanflow_agents.platforms": ("scanflow_agents.serving", "scanflow_agents.workflows"),
}
# Private packages and who besides themselves may import them.
PRIVATE_USERS = {
    # The core's machinery: wired by the public core modules, driven by the harness.
    "scanflow_agents._core": (
        "scanflow_agents.agents",
        "scanflow_agents.clients",
        "scanflow_agents.replaying",
        "scanflow_agents.testing",
    ),
    # The toolkit below every layer: anything that ships, but not the built-in
    # agents, which use the public surface only.
    "scanflow_agents._kit": ("scanflow_agents",),
}
HEAVY = ("mlflow", "numpy", "scipy", "sklearn", "pandas", "kubernetes", "fastapi", "uvicorn")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    if _within(module, KIT):
        return "kit"
    if _within(module, ("scanflow_agents.builtin",)):
        return "builtin"
    if _within(module, ("scanflow_agents.runtime", "scanflow_agents.testing")):
        return "runtime"
    if _within(module, ADAPTERS):
        return "adapter"
    if _within(module, SHARED):
        return "shared"
    return "core"


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_respects_its_layer(module: str) -> None:
    layer = _layer(module)
    ours = {n for n in _imports(module, MODULES[module]) if n.startswith("scanflow_agents")}
    if layer == "adapter":
        own = next(p for p in ADAPTERS if _within(module, (p,)))
        # Adapters stand alone: they know the settings and other adapters, never the core.
        allowed = (own, *ADAPTER_USES.get(own, ()), *SHARED, *KIT)
        bad = {n for n in ours if not _within(n, allowed)}
    elif layer == "core":
        bad = {n for n in ours if _within(n, OUTER)}
    elif layer == "builtin":
        bad = {n for n in ours if "._" in n and not _within(n, ("scanflow_agents.builtin",))}
    elif layer == "runtime":
        bad = set()
        if not _within(module, DEMO):  # the demo composes the built-in agents: it sits on top
            bad = {n for n in ours if _within(n, ("scanflow_agents.builtin",))}
        if _within(module, ("scanflow_agents.runtime",)):
            bad |= {n for n in ours if _within(n, ("scanflow_agents._core",))}
    elif layer == "kit":
        bad = {n for n in ours if not _within(n, KIT)}
    else:
        bad = {n for n in ours if n != module}
    assert not bad, f"{module} ({layer} layer) imports {sorted(bad)}"


def _private_package(name: str) -> str | None:
    """The innermost private package or module named in ``name`` (``a._b.c`` → ``a._b``)."""
    parts = name.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_") and part != "__init__"]
    return ".".join(parts[: private[-1] + 1]) if private else None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_private_modules_stay_in_their_package(module: str) -> None:
    bad = set()
    for name in _imports(module, MODULES[module]):
        owner = _private_package(name)
        if owner is None or not name.startswith("scanflow_agents"):
            continue
        users = (owner, *PRIVATE_USERS.get(owner, ()))
        if not _within(module, users) or (
            owner == "scanflow_agents._kit" and _within(module, ("scanflow_agents.builtin",))
        ):
            bad.add(name)
    assert not bad, f"{module} imports private modules {sorted(bad)} of other packages"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_are_imported(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    bad = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scanflow_agents")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not bad, f"{module} imports private names {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_tasks_are_started_by_the_task_kit_only(module: str) -> None:
    if _within(module, KIT):
        return
    tree = ast.parse(MODULES[module].read_text())
    # A TaskGroup's create_task is structured (the group waits for it); these are not.
    bare = [
        f"line {node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and (
            node.func.attr == "ensure_future"
            or (
                node.func.attr == "create_task"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("asyncio", "loop")
            )
        )
    ]
    assert not bare, f"{module} starts unguarded tasks ({', '.join(bare)}): use _kit.tasks"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_bounds_a_wait_with_wait_for(module: str) -> None:
    """Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives as the
    awaited call completes: the task goes on as if never cancelled, and whoever
    awaits its end waits forever (a lease loop hung a CI run that way).
    ``asyncio.timeout`` bounds a wait without that race."""
    tree = ast.parse(MODULES[module].read_text())
    found = [
        f"line {node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]
    assert not found, f"{module} uses asyncio.wait_for ({', '.join(found)}): use asyncio.timeout"


def test_core_import_stays_light() -> None:
    code = (
        "import sys, scanflow_agents, scanflow_agents.testing, scanflow_agents.clients;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert packages == listed, (
        f"missing: {sorted(packages - listed)}, stale: {sorted(listed - packages)}"
    )


def test_private_packages_are_found_in_import_names() -> None:
    assert _private_package("scanflow_agents._core.running") == "scanflow_agents._core"
    assert _private_package("scanflow_agents.serving._tasks") == "scanflow_agents.serving._tasks"
    assert _private_package("scanflow_agents._core._inner.x") == "scanflow_agents._core._inner"
    assert _private_package("scanflow_agents.clients") is None


# -- the runtime is used through its contract ------------------------------------------------

RUNNING = "scanflow_agents._core.running"
# What other modules may use of an AgentRuntime: its lifecycle, the agent's
# own calls and events, and reads that return copies. Its parts (recorder,
# dispatcher, reactor, controller, tasks...) are its own.
RUNTIME_CONTRACT = frozenset(
    {
        "start",
        "stop",
        "state",
        "ready",
        "instance",
        "run_sensor",
        "call",
        "emit",
        "approvals",
        "controls",
        "health",
        "settle",
        "knowledge_client",
        "key_value",
    }
)
# Modules that still reach through, with why; each must still do so (an
# entry that no longer applies fails, so that it is removed).
REACHES_ALLOWED = {
    "scanflow_agents._core.describing": (
        "describe() and heartbeat() read the runtime's parts; they are being "
        "changed to take a narrow snapshot"
    ),
}


def _is_runtime(node: ast.expr) -> bool:
    """Whether ``node`` denotes an agent runtime, by the names the code gives one.

    ``runtime``, ``x_runtime``, ``x.runtime``, ``x._runtime``, and the calls
    that return one: ``h.runtime(name)``, ``agent.running(transport)``.
    """
    if isinstance(node, ast.Name):
        return node.id == "runtime" or node.id.endswith("_runtime")
    if isinstance(node, ast.Attribute):
        return node.attr in ("runtime", "_runtime")
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in ("runtime", "running")
    return False


def reaches_through_runtime(source: str) -> list[str]:
    """``line N: runtime.<attr>`` for each use of a runtime beyond its contract."""
    found = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and _is_runtime(node.value)
        and node.attr not in RUNTIME_CONTRACT
    ]
    return [f"line {n.lineno}: runtime.{n.attr}" for n in sorted(found, key=_position)]


def _position(node: ast.expr) -> tuple[int, int]:
    return node.lineno, node.col_offset


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != RUNNING))
def test_no_module_reaches_through_the_runtime(module: str) -> None:
    reaches = reaches_through_runtime(MODULES[module].read_text())
    if module in REACHES_ALLOWED:
        assert reaches, f"{module} no longer reaches through the runtime: remove its exception"
        return
    assert not reaches, (
        f"{module} reaches through an agent runtime ({', '.join(reaches)}): use its "
        f"public contract ({', '.join(sorted(RUNTIME_CONTRACT))}) or give the part a port"
    )


def test_the_reach_check_fails_on_a_reach_through() -> None:
    source = """
async def settle(agent, h):
    await agent.runtime.recorder.flush(5.0)
    h.runtime("planner").tasks.spawn(job(), name="x")
    runtime.reactor.paused_sensors["load"] = "noisy"
    await agent.running(transport).dispatcher.on_call(message)
    self._runtime.controller.approvals.take("id")
"""
    assert reaches_through_runtime(source) == [
        "line 3: runtime.recorder",
        "line 4: runtime.tasks",
        "line 5: runtime.reactor",
        "line 6: runtime.dispatcher",
        "line 7: runtime.controller",
    ]
    contract = "await agent.runtime.settle()\nh.runtime('x').health().backlog\nruntime.state"
    assert reaches_through_runtime(contract) == []


# -- no import cycle through the core ----------------------------------------------------------

CORE = ("scanflow_agents.agents", "scanflow_agents._core")
# Import edges that close a cycle, with why; each must still exist.
EDGES_ALLOWED: dict[tuple[str, str], str] = {}


def import_edges(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module → the modules it imports, from ``{module: (source, is_package)}``.

    Every import statement counts: at the top, under ``TYPE_CHECKING``, or
    inside a function. ``from package import name`` imports the submodule
    ``package.name`` when there is one, and the package otherwise.
    """
    edges: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        package = module if is_package else module.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - node.level + 1], *base.split(".")])
                    base = base.rstrip(".")
                for alias in node.names:
                    name = f"{base}.{alias.name}"
                    found.add(name if name in sources else base)
        edges[module] = {name for name in found if name in sources and name != module}
    return edges


def cycles(edges: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                yield from visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(edges):
        if node not in index:
            yield from visit(node)


def _package_sources() -> dict[str, tuple[str, bool]]:
    return {m: (p.read_text(), p.name == "__init__.py") for m, p in MODULES.items()}


def test_the_core_and_the_agent_class_form_no_import_cycle() -> None:
    edges = import_edges(_package_sources())
    for importer, imported in EDGES_ALLOWED:
        assert imported in edges[importer], f"{importer} no longer imports {imported}: remove it"
        edges[importer].discard(imported)
    found = [c for c in cycles(edges) if any(_within(m, CORE) for m in c)]
    assert not found, (
        f"import cycles through the core (TYPE_CHECKING and local imports count): {found}"
    )


def test_the_cycle_check_fails_on_hidden_cycles() -> None:
    sources = {
        "pkg": ("from pkg import chains\nfrom pkg.agents import Agent\n", True),
        "pkg.chains": ("", False),
        "pkg.agents": ("def running():\n    from pkg._core.running import Runtime\n", False),
        "pkg._core": ("", True),
        "pkg._core.running": ("from pkg import chains\nfrom . import ports\n", False),
        "pkg._core.ports": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.agents import Agent\n",
            False,
        ),
    }
    edges = import_edges(sources)
    assert edges["pkg._core.running"] == {"pkg.chains", "pkg._core.ports"}
    # A function-local import one way, a TYPE_CHECKING one back: one cycle.
    assert list(cycles(edges)) == [["pkg._core.ports", "pkg._core.running", "pkg.agents"]]
    sources["pkg._core.ports"] = ("from typing import Protocol\n", False)
    assert list(cycles(import_edges(sources))) == []


# -- one writer of the operator's switches ------------------------------------------------------

SWITCHES = "scanflow_agents._core.switches"
CONTROLLER = "scanflow_agents._core.controlling"


def switch_members(source: str) -> tuple[set[str], set[str]]:
    """The fields that ``ControlState``'s mutators set, and the mutators' names."""
    (cls,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == "ControlState"
    ]
    fields: set[str] = set()
    mutators: set[str] = set()
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef) or method.name.startswith("_"):
            continue
        assigned = {
            target.attr
            for node in ast.walk(method)
            for target in _stored(node)
            if isinstance(target.value, ast.Name) and target.value.id == "self"
        }
        if assigned:
            fields |= assigned
            mutators.add(method.name)
    return fields, mutators


def _stored(node: ast.AST) -> Iterator[ast.Attribute]:
    """The attributes that ``node`` assigns or deletes (also through a subscript)."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign | ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    for target in targets:
        while isinstance(target, ast.Subscript):
            target = target.value
        if isinstance(target, ast.Attribute):
            yield target


def switch_writes(
    source: str, fields: set[str], mutators: set[str], *, controller: bool
) -> list[str]:
    """Where ``source`` touches the switches' fields, or (unless the Controller) calls a mutator."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in fields:
            found.append((_position(node), f".{node.attr}"))
        elif (
            not controller
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in mutators
        ):
            found.append((_position(node), f".{node.func.attr}()"))
    return [f"line {line}: {what}" for (line, _), what in sorted(found)]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != SWITCHES))
def test_only_the_controller_changes_the_switches(module: str) -> None:
    fields, mutators = switch_members(MODULES[SWITCHES].read_text())
    assert {"_agent_pause", "_sensor_pauses", "_dry_run_switch"} <= fields  # the check sees them
    writes = switch_writes(
        MODULES[module].read_text(), fields, mutators, controller=module == CONTROLLER
    )
    assert not writes, (
        f"{module} changes the operator's switches ({', '.join(writes)}): only the "
        "Controller does, through ControlState's methods"
    )


def test_the_writer_check_fails_on_a_second_writer() -> None:
    fields, mutators = switch_members(MODULES[SWITCHES].read_text())
    assert {"pause_agent", "pause_sensor", "set_dry_run"} <= mutators
    assert not {"refusal", "sensor_refusal", "dry_run", "snapshot"} & mutators  # reads
    source = """
def meddle(state, runtime):
    state.pause_agent("because", by="me")
    state._sensor_pauses["load"] = None
    del state._dry_run_switch
    runtime.control_state.set_dry_run(True, by="me")
    return state.refusal(), state.snapshot()
"""
    assert switch_writes(source, fields, mutators, controller=False) == [
        "line 3: .pause_agent()",
        "line 4: ._sensor_pauses",
        "line 5: ._dry_run_switch",
        "line 6: .set_dry_run()",
    ]
    assert switch_writes(source, fields, mutators, controller=True) == [
        "line 4: ._sensor_pauses",
        "line 5: ._dry_run_switch",
    ]
