"""The Containerfile: hadolint-clean and built the way the chart relies on.

Building and running the image is CI's job (``.ci/pods.sh``: podman needs
root and minutes); these checks are the fast part.
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(CONTAINERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_final_stage_is_unprivileged_and_labelled() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a build stage and a final stage"
    final = stages[-1]
    # Only the finished environment reaches the final stage: no pip, no compiler.
    assert "COPY --from=build /opt/venv /opt/venv" in final
    instructions = [line for line in final.splitlines() if not line.startswith("#")]
    assert not [line for line in instructions if line.startswith("RUN")]
    assert re.search(r"^USER 10001:10001$", final, flags=re.M)
    for label in ("title", "version", "revision", "source", "licenses", "description"):
        assert f"org.opencontainers.image.{label}=" in final
    assert "HOME=/tmp" in final  # the only writable place in a pod
    assert 'ENTRYPOINT ["scanflow"]' in final


def test_the_build_context_holds_what_the_package_needs() -> None:
    kept = [
        line[1:].rstrip("/")
        for line in (ROOT / ".containerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", CONTAINERFILE.read_text(), flags=re.M)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in kept, f"{source} is copied but ignored by the context"
    # Every folder the wheel is built from (pyproject's package-dir) is in the context
    # and copied into the build stage: read from pyproject, so a new one is not missed.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    copied_folders = {source.rstrip("/") for sources in copied for source in sources.split()}
    for folder in folders:
        assert folder in kept, f"{folder} (a package folder) is ignored by the context"
        assert folder in copied_folders, f"{folder} (a package folder) is not copied"
