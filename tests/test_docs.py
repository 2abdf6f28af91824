"""The documentation site builds strictly: no broken link or anchor, no warning.

The same build as ``make docs``, into a temporary folder and without the
network: the reference pages are generated from the code during the build, so
a passing build also means they are current.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    # The generated parts are there: the CLI from click, the tables from the models.
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "scanflow run" in cli
    assert "--embedded-nats" in cli
    assert "Sentinel" not in cli  # click's unset defaults, shown by the table style
    api = (site / "reference" / "api" / "index.html").read_text()
    assert ":func:" not in api  # the docstrings' Sphinx roles, made plain code
    configuration = (site / "reference" / "configuration" / "index.html").read_text()
    for generated in ("agent.lease_ttl", "nodes[].latency_p95_ms", "agents.improver.workflows"):
        assert generated in configuration, generated
    assert "<!-- reference:" not in configuration
