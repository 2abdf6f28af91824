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
- tasks are started only by the task kit (``scanflow_agents._kit.tasks``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
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
    "scanflow_agents.serving": ("scanflow_agents.knowledge",),  # models from the registry
    "scanflow_agents.platforms": ("scanflow_agents.serving", "scanflow_agents.workflows"),
}
# Private packages and who besides themselves may import them.
PRIVATE_USERS = {
    # The core's machinery: wired by the public core modules, driven by the harness.
    "scanflow_agents._core": (
        "scanflow_agents.agents",
        "scanflow_agents.clients",
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
