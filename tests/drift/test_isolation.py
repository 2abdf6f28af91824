"""The drift package stands alone, and the framework does not load it (nor numpy)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "scanflow_agents" / "drift"
# Not scipy: the checker runs in the agent image, which has none (tails.py).
ALLOWED = {"numpy"} | set(sys.stdlib_module_names)


def test_drift_imports_only_numpy_and_the_standard_library() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


def test_importing_the_framework_leaves_drift_unloaded() -> None:
    code = "import sys, scanflow_agents; print('scanflow_agents.drift' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
