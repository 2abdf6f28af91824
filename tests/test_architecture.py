"""The layers of DESIGN.md section 4, checked on every import statement of the tree.

Outermost first: built-in agents → runtime and interfaces → framework core →
adapters. Each layer may use only the ones below it; the built-in agents use
the public surface only (no private hooks), and the core stays light.
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
SHARED = ("scanflow_agents.settings",)
DEMO = ("scanflow_agents.runtime.demo",)  # the settings tree is read by every layer
OUTER = ("scanflow_agents.runtime", "scanflow_agents.builtin", "scanflow_agents.testing")
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
        bad = {n for n in ours if not _within(n, (own, *ADAPTERS, *SHARED))}
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
    else:
        bad = {n for n in ours if n != module}
    assert not bad, f"{module} ({layer} layer) imports {sorted(bad)}"


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
