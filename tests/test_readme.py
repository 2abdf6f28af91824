"""The README's Python snippets are tests: they run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_quickstart_matches_the_example_file() -> None:
    agents = _block("class LoadWatch")
    example = (ROOT / "examples" / "quickstart.py").read_text()
    for name in ("class LoadWatch(Agent):", "class Scaler(Agent):", "@actuator(cooldown=3.0)"):
        assert name in agents
        assert name in example


def _block(marker: str) -> str:
    return next(block for block in _blocks() if marker in block)


def test_every_other_snippet_defines_valid_agents() -> None:
    # Definitions are checked when classes are created: a wrong trigger or a bad
    # signature in a README example would raise here.
    for block in _blocks():
        if "class LoadWatch" in block or "async def test_" in block:
            continue
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


async def test_readme_snippets_run(bus: str | None) -> None:
    agents, harness_test = _block("class LoadWatch"), _block("async def test_quickstart_agents")
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(agents, "README.md", "exec"), namespace)
    exec(compile(harness_test, "README.md", "exec"), namespace)
    await namespace["test_quickstart_agents"]()
