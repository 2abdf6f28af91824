"""The README's and the documentation's Python snippets are tests: they run as written.

Every ```python block of README.md and of the pages under docs/ is executed
(so its imports resolve and its agents pass the definition checks made when a
class is created); a line ``--8<-- "path"`` stands for that file, as on the
site. The first agents run under the test harness, and the tutorial's YAML
files are validated by the models that read them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    path.relative_to(ROOT) for path in (ROOT / "docs").rglob("*.md") if "_hooks" not in path.parts
)
SOURCES = [Path("README.md"), *PAGES]


def _blocks(source: Path, language: str = "python") -> list[str]:
    text = (ROOT / source).read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    return [_included(block) for block in blocks]


def _included(block: str) -> str:
    # The site's snippet lines: the file they name, as the built page shows it.
    return re.sub(
        r'^--8<-- "([^"]+)"$', lambda m: (ROOT / m.group(1)).read_text(), block, flags=re.M
    )


def _block(source: Path, marker: str, language: str = "python") -> str:
    return next(block for block in _blocks(source, language) if marker in block)


def _run(block: str, source: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "snippet"}
    exec(compile(block, str(source), "exec"), namespace)
    return namespace


def test_the_pages_have_snippets() -> None:
    assert len(PAGES) >= 10
    assert sum(len(_blocks(page)) for page in PAGES) >= 6


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_every_snippet_defines_valid_agents(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Definitions are checked when classes are created: a wrong trigger or a bad
    # signature in an example would raise here. Tests are run below, not here.
    # An example imports its neighbours (`import quickstart`), as `scanflow run
    # examples/x.py` lets it: the file's folder is on the path.
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    for block in _blocks(source):
        if "async def test_" not in block:
            _run(block, source)


async def test_the_readme_agents_run(bus: str | None) -> None:
    from scanflow_agents.testing import AgentHarness

    agents = _run(_block(Path("README.md"), "class LoadWatch"), Path("README.md"))
    async with AgentHarness(agents["LoadWatch"](), agents["Scaler"](), nats_url=bus) as h:
        assert (await h.call("scaler", "scale", replicas=4))["replicas"] == 4
        observation = await h.run_sensor("load-watch", "request_rate")
        assert observation is not None
        assert 20 <= observation.value["rps"] <= 180


async def test_the_harness_test_of_the_docs_runs(bus: str | None) -> None:
    # The quickstart's agents (the file the getting-started page shows) under
    # the test written on the testing page, as a reader would put them together.
    namespace = _run(_block(Path("docs/getting-started.md"), "class LoadWatch"), Path("x"))
    testing = Path("docs/guides/testing.md")
    exec(
        compile(_block(testing, "async def test_quickstart_agents"), str(testing), "exec"),
        namespace,
    )
    await namespace["test_quickstart_agents"]()


def test_the_tutorials_yaml_is_what_the_agents_accept() -> None:
    from scanflow_agents.builtin.reference import SECTIONS

    from scanflow_agents.settings import Settings
    from scanflow_agents.workflows.loading import load_application

    for source in (Path("docs/tutorials/own-model.md"), Path("docs/reference/configuration.md")):
        for block in _blocks(source, "yaml"):
            data = yaml.safe_load(block)
            if "workflows" in data:
                load_application(data)
            elif "nats" in data and "agents" in data and "config" not in str(data["agents"]):
                settings = Settings.model_validate(data)
                for agent, section in settings.agents.items():
                    SECTIONS[agent].model_validate(section)
    tutorial = Path("docs/tutorials/own-model.md")
    application = load_application(yaml.safe_load(_block(tutorial, "name: churn", "yaml")))
    assert [w.name for w in application.workflows] == ["train", "serve"]
    settings = yaml.safe_load(_block(tutorial, "training_experiments", "yaml"))
    improver = SECTIONS["improver"].model_validate(settings["agents"]["improver"])
    supervised = improver.workflows["serve"]  # type: ignore[attr-defined]
    assert (supervised.model, supervised.experiment) == ("churn", "churn")


def test_the_tutorials_helm_values_pass_the_charts_schema() -> None:
    import json

    import jsonschema  # type: ignore[import-untyped]  # (kubernetes-validate brings it)

    from scanflow_agents.workflows.loading import load_application

    chart = ROOT / "helm" / "scanflow-agents"
    values = yaml.safe_load(_block(Path("docs/tutorials/own-model.md"), "trackingUri", "yaml"))
    merged = _merged(yaml.safe_load((chart / "values.yaml").read_text()), values)
    jsonschema.validate(merged, json.loads((chart / "values.schema.json").read_text()))
    assert load_application(values["application"]).name == "churn"


def _merged(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    # What helm does with -f: maps merge key by key, anything else replaces.
    out = dict(defaults)
    for key, value in override.items():
        inner = defaults.get(key)
        out[key] = (
            _merged(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
        )
    return out


def _commands() -> list[str]:
    """Every ``scanflow`` command line of the README's and the pages' shell blocks."""
    found = []
    for source in SOURCES:
        for block in _blocks(source, "bash") + _blocks(source, "console"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if re.match(r"(\.venv/bin/)?scanflow\s", line):
                    found.append(line)
    return found


@pytest.mark.parametrize("line", _commands())
def test_every_command_of_the_pages_is_one_the_cli_takes(line: str) -> None:
    # Parsed by the real command group, as the shell would pass it: a renamed
    # command or option, or a missing argument, fails here. Placeholders
    # (<id>) stand for a value; the tutorial's files are the example's.
    import click
    from scanflow_agents.runtime.cli import main

    line = re.sub(r"<[^>]*>", "x", line.replace("$S", "--settings churn/settings.yaml"))
    args = [
        re.sub(r"^churn/", "examples/churn/", arg) for arg in shlex.split(line, comments=True)[1:]
    ]

    def parse() -> None:
        with main.make_context("scanflow", args) as context:
            rest = [*getattr(context, "_protected_args", []), *context.args]
            name, command, arguments = main.resolve_command(context, rest)
            assert command is not None, line
            command.make_context(str(name), arguments, parent=context).close()

    if "--help" in args:
        with pytest.raises(click.exceptions.Exit):
            parse()
    else:
        parse()
