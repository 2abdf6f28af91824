"""Node environments on this machine: one venv per distinct set of requirements.

A venv is keyed by a hash of its requirement lines, the interpreter version and
whether it sees the platform's own packages, so nodes with the same
requirements share one and a rebuild with unchanged requirements is free.
Nodes without requirements run in the platform's own interpreter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from scanflow_agents.platforms.local.processes import spawn
from scanflow_agents.platforms.results import NodeEnvironment, PlatformError

logger = logging.getLogger(__name__)

_READY = ".scanflow-ready"  # Written last: a venv without it is half-built.


class Environments:
    """Builds and caches venvs under ``root``."""

    def __init__(self, root: Path, default_python: str) -> None:
        self.root = root
        self.default_python = default_python
        self._locks: dict[str, asyncio.Lock] = {}

    async def prepare(
        self, node: str, requirements: Sequence[str], *, inherit: bool = False
    ) -> NodeEnvironment:
        """The environment for a node, built if it does not exist yet.

        Args:
            node: The node's name (for messages and the result).
            requirements: pip requirement lines.
            inherit: Let the venv see the platform's packages (services need
                the model server; executors get an isolated venv).

        Raises:
            PlatformError: ``failed``, naming the node and the log, if pip fails.
        """
        lines = sorted({line.strip() for line in requirements if line.strip()})
        if not lines:
            return NodeEnvironment(node=node, python=self.default_python, reused=True)
        digest = hashlib.sha256(
            "\n".join([sys.version, f"inherit={inherit}", *lines]).encode()
        ).hexdigest()[:16]
        target = self.root / digest
        python = target / "bin" / "python"
        async with self._locks.setdefault(digest, asyncio.Lock()):
            if (target / _READY).exists():
                return NodeEnvironment(
                    node=node, python=str(python), requirements_hash=digest, reused=True
                )
            await self._create(node, target, lines, inherit)
        return NodeEnvironment(
            node=node, python=str(python), requirements_hash=digest, reused=False
        )

    async def _create(self, node: str, target: Path, lines: list[str], inherit: bool) -> None:
        await asyncio.to_thread(_reset, target, lines)
        log = target / "build.log"
        # No pip inside the venv: the platform's pip installs into it with
        # --python, which saves the seconds ensurepip takes per venv.
        venv = [self.default_python, "-m", "venv", "--without-pip", str(target)]
        if inherit:
            venv.insert(3, "--system-site-packages")
        pip = [
            self.default_python,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "-r",
            str(target / "requirements.txt"),
        ]
        for argv in (venv, pip):
            process = await spawn(argv, env=_clean_env(), cwd=target, log_path=log)
            code = await process.wait()
            if code != 0:
                raise PlatformError(
                    "failed",
                    f"building the environment of node {node!r} "
                    f"failed (exit code {code}); see {log}",
                )
        await asyncio.to_thread((target / _READY).write_text, "\n".join(lines) + "\n")
        logger.info("built environment %s for node %r", target.name, node)


def _reset(target: Path, lines: list[str]) -> None:
    if target.exists():
        shutil.rmtree(target)  # A build that died half-way; start over.
    target.mkdir(parents=True)
    (target / "requirements.txt").write_text("\n".join(lines) + "\n")


def _clean_env() -> dict[str, str]:
    import os

    # PYTHONPATH would leak the platform's packages into an isolated venv build.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
