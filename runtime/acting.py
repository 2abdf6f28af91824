"""One-shot commands that act: ``call`` an actuator, ``apply`` an application file.

A call waits as long as the actuator may take (its published timeout plus a
margin) unless ``--timeout`` says otherwise, and shows progress while it
waits, so ``call planner wait`` or ``apply --build`` need no guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from scanflow_agents.runtime.arguments import checked, parse_arguments
from scanflow_agents.runtime.commanding import echo_json, json_option, run_async, settings_of

if TYPE_CHECKING:
    from scanflow_agents.clients import Client

T = TypeVar("T")

MARGIN = 10.0  # seconds a reply may take beyond the actuator's own timeout


async def with_progress(work: Awaitable[T], label: str, *, after: float = 2.0) -> T:
    """Await ``work``; past ``after`` seconds, say on stderr that it still runs.

    On a terminal one line is rewritten every second; otherwise (CI logs) a
    line is written at ``after`` seconds and every 10 s after that.
    """
    finished = asyncio.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []
    async with asyncio.TaskGroup() as group:
        group.create_task(_report(finished, label, after))
        try:
            outcome.append(await work)
        except BaseException as exc:  # raised below, outside the group
            failure.append(exc)
        finally:
            finished.set()
    if failure:
        raise failure[0]
    return outcome[0]


async def _report(finished: asyncio.Event, label: str, after: float) -> None:
    started = time.monotonic()
    tty = sys.stderr.isatty()
    shown = False
    next_line = after
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(1.0, after)):
                await finished.wait()
        if finished.is_set():
            break
        elapsed = time.monotonic() - started
        if tty and elapsed >= after:
            click.echo(f"\r{label} … {elapsed:.0f} s", nl=False, err=True)
            shown = True
        elif not tty and elapsed >= next_line:
            click.echo(f"{label}: still waiting ({elapsed:.0f} s)", err=True)
            next_line += 10
    if shown:
        click.echo("\r\033[K", nl=False, err=True)


async def reply_timeout(client: Client, agent: str, actuator: str) -> float:
    """How long to wait for a reply: the actuator's published timeout plus a margin."""
    try:
        described = await client.describe(agent)
    except Exception:
        return 30.0  # the call itself will say what is wrong
    spec = described.actuator(actuator)
    if spec is not None and spec.timeout:
        return spec.timeout + MARGIN
    return 30.0


@click.command()
@click.argument("agent")
@click.argument("actuator")
@click.argument("params", nargs=-1)
@click.option(
    "--params", "raw_params", metavar="JSON", help="Arguments as one JSON object (PARAMS win)."
)
@json_option
@click.option("--dry-run", is_flag=True, help="Validate and record, but do not act.")
@click.option(
    "--timeout",
    type=float,
    help="Seconds to wait for the reply (default: the actuator's own timeout + 10 s).",
)
@click.pass_context
def call(
    ctx: click.Context,
    agent: str,
    actuator: str,
    params: tuple[str, ...],
    raw_params: str | None,
    as_json: bool,
    dry_run: bool,
    timeout: float | None,
) -> None:
    """Call AGENT's ACTUATOR with PARAMS as key=value (values read as JSON where they can be).

    The arguments are checked against the actuator's published schema before
    the call is sent, with the console's grammar and words. The reply is
    printed as JSON (``--json`` is accepted, as on every command).
    """
    from scanflow_agents.clients import Client

    async def go() -> Any:
        arguments = parse_arguments(params, raw_params)
        async with Client.connect(settings_of(ctx)) as client:
            spec = checked(await client.describe(agent), actuator, arguments)
            wait = timeout or (spec.timeout or 30) + MARGIN
            work = client.call(agent, actuator, arguments, timeout=wait, dry_run=dry_run)
            return await with_progress(work, f"{agent}.{actuator}")

    echo_json(run_async(go))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--build", is_flag=True, help="Then build every workflow (waits for the builds).")
@click.option("--deploy", is_flag=True, help="Then deploy every online workflow.")
@click.option("--planner", default="planner", show_default=True, help="The planner agent's name.")
@json_option
@click.pass_context
def apply(
    ctx: click.Context, file: Path, build: bool, deploy: bool, planner: str, as_json: bool
) -> None:
    """Apply an application file through the planner (script paths relative to the file)."""
    import yaml

    from scanflow_agents.clients import Client

    try:
        application = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{file} is not valid YAML: {exc}") from exc
    if not isinstance(application, dict):
        raise click.ClickException(f"{file} does not hold an application (a mapping)")
    base_dir = str(file.resolve().parent)

    async def go() -> dict[str, Any]:
        async with Client.connect(settings_of(ctx)) as client:

            async def step(actuator: str, params: dict[str, Any], label: str) -> Any:
                wait = await reply_timeout(client, planner, actuator)
                work = client.call(planner, actuator, params, timeout=wait)
                return await with_progress(work, label, after=1.0)

            applied = await step(
                "apply", {"application": application, "base_dir": base_dir}, f"applying {file}"
            )
            done: dict[str, Any] = {"applied": applied, "built": {}, "deployed": {}}
            for workflow in _workflows(application):
                name = workflow["name"]
                if build:
                    done["built"][name] = await step("build", {"workflow": name}, f"build {name}")
                    if not as_json:
                        click.echo(f"built {name}", err=True)
                if deploy and _online(workflow):
                    deployed = await step("deploy", {"workflow": name}, f"deploy {name}")
                    done["deployed"][name] = deployed
                    if not as_json:
                        click.echo(f"deployed {name}", err=True)
            return done

    result = run_async(go)
    if as_json:
        echo_json(result)
        return
    applied = result["applied"]
    click.echo(f"applied {applied.get('application', application.get('name'))}", err=False)
    click.echo(json.dumps(applied, indent=2, default=str))


def _workflows(application: dict[str, Any]) -> list[dict[str, Any]]:
    workflows = application.get("workflows") or []
    return [w for w in workflows if isinstance(w, dict) and "name" in w]


def _online(workflow: dict[str, Any]) -> bool:
    return workflow.get("kind") == "online" or any(
        isinstance(n, dict) and n.get("kind") == "service" for n in workflow.get("nodes", [])
    )
