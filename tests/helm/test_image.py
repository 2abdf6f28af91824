"""The Containerfile: hadolint-clean and built the way the chart relies on.

Building and running the image is CI's job (``.ci/pods.sh``: podman needs
root and minutes); these checks are the fast part.
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

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


def _image_extras() -> list[str]:
    """The extras the Containerfile installs, checked to be those the lock is made from."""
    installed = re.search(r'pip install --no-deps "\.\[([\w,]+)\]"', CONTAINERFILE.read_text())
    assert installed, "the Containerfile installs the project with its extras"
    extras = installed.group(1).split(",")
    made = re.search(r"^IMAGE_EXTRAS := (.+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert made, "the Makefile names the extras the lock is made from"
    assert sorted(made.group(1).split()) == sorted(extras), "`make image-lock` locks other extras"
    return extras


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


def test_the_image_lock_holds_what_its_extras_ask_for() -> None:
    # The image installs the lock without resolving (--no-deps): a dependency added
    # to pyproject but not to the lock would be missing from every pod.
    pinned: dict[str, list[tuple[str, str]]] = {}
    for line in (ROOT / "requirements-image.txt").read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\$", line)
        if pin:
            name, version, marker = pin.groups()
            pinned.setdefault(canonicalize_name(name), []).append((version, marker or ""))
    image = {"python_full_version": "3.11.2", "python_version": "3.11", "sys_platform": "linux"}
    for requirement in _requirements(_image_extras()):
        if requirement.marker and not requirement.marker.evaluate(image):
            continue
        versions = [
            version
            for version, marker in pinned.get(canonicalize_name(requirement.name), [])
            if not marker or Marker(marker).evaluate(image)
        ]
        assert versions, f"{requirement} is not in requirements-image.txt: run `make image-lock`"
        assert requirement.specifier.contains(versions[0], prereleases=True), (
            f"requirements-image.txt pins {requirement.name}=={versions[0]}, "
            f"outside {requirement}: run `make image-lock`"
        )
