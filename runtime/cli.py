"""The ``scanflow`` command: run agents, and talk to running ones.

Settings come from (later wins) built-in defaults, ``--settings FILE``, the
``SCANFLOW_*`` environment, and the command-line options.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from scanflow_agents import CallError, Settings, logs, redaction
from scanflow_agents.transports import TransportError

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    options = ctx.find_root().params
    overrides: dict[str, Any] = {}
    if options.get("namespace"):
        overrides["namespace"] = options["namespace"]
    if options.get("nats"):
        overrides["nats"] = {"url": options["nats"]}
    try:
        settings = Settings.load(options.get("settings"), **overrides)
    except Exception as exc:
        raise click.ClickException(redaction.redact(f"bad settings: {exc}")) from exc
    # From here on, these secrets are masked wherever they would be printed or logged.
    redaction.remember_model(settings)
    return settings


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except CallError as exc:
        field = f" (field: {exc.field})" if exc.field else ""
        raise click.ClickException(redaction.redact(f"{exc.code}: {exc.message}{field}")) from exc
    except (OSError, TimeoutError, TransportError) as exc:
        raise click.ClickException(redaction.redact(str(exc))) from exc


def _echo_json(value: Any, *, indent: int | None = 2) -> None:
    # What agents send back (descriptions, results, records) is shown masked:
    # a URL with credentials or a remembered secret never reaches the terminal.
    click.echo(json.dumps(redaction.mask(value), indent=indent, default=str))


@click.group()
@click.option(
    "--nats", metavar="URL", help="NATS server URL (default from settings: nats://127.0.0.1:4222)."
)
@click.option("--namespace", "-n", metavar="NS", help="Team namespace (default: 'default').")
@click.option(
    "--settings", type=click.Path(exists=True, dir_okay=False), help="Settings file (YAML or JSON)."
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.option(
    "--warn-every",
    default=logs.DEFAULT_INTERVAL,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between two warnings of the same kind (the rest are counted; 0: no limit).",
)
@click.version_option(package_name="scanflow-agents")
def main(
    nats: str | None, namespace: str | None, settings: str | None, log_level: str, warn_every: float
) -> None:
    """Scanflow Agents: supervise machine-learning workflows with agents."""
    logs.configure(log_level, interval=warn_every)
    # APScheduler logs every job run at INFO; our own records say what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))


@main.command()
@click.argument("references", nargs=-1, required=True)
@click.option(
    "--embedded-nats",
    is_flag=True,
    help="Start a private nats-server (JetStream) for these agents.",
)
@click.pass_context
def run(ctx: click.Context, references: tuple[str, ...], embedded_nats: bool) -> None:
    """Run agents until Ctrl-C or SIGTERM.

    REFERENCES are `module:Class`, `path/file.py:Class`, or `path/file.py`
    (every Agent subclass defined in the file). All agents share one NATS
    connection.
    """
    from scanflow_agents.runtime.loading import LoadError, load_agent_classes
    from scanflow_agents.runtime.serving import serve

    settings = _settings(ctx)
    try:
        classes = [klass for ref in references for klass in load_agent_classes(ref)]
    except LoadError as exc:
        logging.getLogger("scanflow_agents.runtime").debug("load failed", exc_info=exc)
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, ModuleNotFoundError):
            import traceback

            traceback.print_exception(cause, file=sys.stderr)
        raise click.ClickException(str(exc)) from exc
    agents = [klass(settings=settings) for klass in classes]

    async def go() -> None:
        if not embedded_nats:
            await serve(agents, settings)
            return
        from scanflow_agents.transports.servers import NatsServer

        async with NatsServer() as server:
            click.echo(f"embedded NATS at {server.url}", err=True)
            embedded = settings.model_copy(
                update={"nats": settings.nats.model_copy(update={"url": server.url})}
            )
            await serve(agents, embedded)

    _run(go)


@main.command()
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
@click.option("--store-dir", type=click.Path(file_okay=False), help="JetStream storage folder.")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    help="A nats-server configuration file (authorization, TLS).",
)
def nats(port: int | None, store_dir: str | None, config: str | None) -> None:
    """Run a local nats-server with JetStream until Ctrl-C (for development)."""
    from scanflow_agents.transports.servers import NatsServer

    with NatsServer(port=port, store_dir=store_dir, config=config) as server:
        click.echo(server.url)
        assert server.process is not None
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


@main.command()
@click.option("--wait", default=0.5, show_default=True, help="Seconds to collect answers.")
@click.pass_context
def agents(ctx: click.Context, wait: float) -> None:
    """List the running agents of the namespace."""
    from scanflow_agents.clients import Client

    async def go() -> list[dict[str, Any]]:
        async with Client.connect(_settings(ctx)) as client:
            return await client.discover(wait=wait)

    found = _run(go)
    if not found:
        click.echo("no agents answer in this namespace")
    for item in found:
        item = redaction.mask(item)
        agent, instance, state = item["agent"], item["instance"], item["state"]
        leads = "  leader" if item.get("leader") else ""  # runs the sensors and rules
        click.echo(f"{agent:<20} {instance:<14} {state:<9} up {item['uptime']:.0f}s{leads}")


@main.command()
@click.argument("agent")
@click.pass_context
def describe(ctx: click.Context, agent: str) -> None:
    """Show an agent's sensors, rules and actuators (with parameter schemas)."""
    from scanflow_agents.clients import Client

    async def go() -> dict[str, Any]:
        async with Client.connect(_settings(ctx)) as client:
            return await client.describe(agent)

    _echo_json(_run(go))


def _parse_params(pairs: tuple[str, ...], raw_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(raw_json) if raw_json else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="PARAMS")
        try:
            params[key] = json.loads(value)  # numbers, booleans, lists, objects
        except json.JSONDecodeError:
            params[key] = value  # anything else is a string
    return params


@main.command()
@click.argument("agent")
@click.argument("actuator")
@click.argument("params", nargs=-1)
@click.option("--json", "raw_json", help="Parameters as one JSON object.")
@click.option("--dry-run", is_flag=True, help="Validate and record, but do not act.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the reply.")
@click.pass_context
def call(
    ctx: click.Context,
    agent: str,
    actuator: str,
    params: tuple[str, ...],
    raw_json: str | None,
    dry_run: bool,
    timeout: float,
) -> None:
    """Call AGENT's ACTUATOR with PARAMS as key=value (values parsed as JSON where they can be)."""
    from scanflow_agents.clients import Client

    arguments = _parse_params(params, raw_json)

    async def go() -> Any:
        async with Client.connect(_settings(ctx)) as client:
            return await client.call(agent, actuator, arguments, timeout=timeout, dry_run=dry_run)

    _echo_json(_run(go))


@main.command()
@click.option("--agent", help="Only this agent's records.")
@click.option("--correlation", help="Only one chain, by correlation id.")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
def history(ctx: click.Context, agent: str | None, correlation: str | None, limit: int) -> None:
    """Print recorded observations, decisions and actions from the event stream."""
    from scanflow_agents.clients import Client

    async def go() -> list[dict[str, Any]]:
        async with Client.connect(_settings(ctx)) as client:
            return await client.history(agent=agent, correlation_id=correlation, limit=limit)

    for record in _run(go):
        _echo_json(record, indent=None)


def _register_demo() -> None:
    # The demo composes the built-in agents; its command module imports only
    # click and the scenario's part names, so `scanflow --help` stays fast.
    from scanflow_agents.runtime.demo.command import demo

    main.add_command(demo)


_register_demo()
