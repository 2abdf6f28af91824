"""The ``scanflow`` command: run agents, and talk to running ones.

Settings come from (later wins) built-in defaults, ``--settings FILE``, the
``SCANFLOW_*`` environment, and the command-line options.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import click
from scanflow_agents.runtime.commanding import run_coroutine, settings_of
from scanflow_agents.runtime.loading import BUILTIN_AGENTS, classes_for_command

from scanflow_agents import DefinitionError, logs


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


embedded_nats_option = click.option(
    "--embedded-nats",
    is_flag=True,
    help="Start a private nats-server (JetStream) for these agents.",
)
http_port_option = click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /livez, /readyz and /metrics on this port (default from settings: none).",
)


@main.command()
@click.argument("references", nargs=-1, required=True)
@embedded_nats_option
@http_port_option
@click.option(
    "--name",
    "agent_name",
    metavar="NAME",
    help="Run the (one) agent under this name instead of its class's; it reads its "
    "configuration from settings.agents[NAME].",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="Run as a shadow beside the live agents (settings.agent.shadow): every call a "
    "dry run, decisions marked, emits kept apart. Named <name>-shadow unless --name says.",
)
@click.pass_context
def run(
    ctx: click.Context,
    references: tuple[str, ...],
    embedded_nats: bool,
    http_port: int | None,
    agent_name: str | None,
    shadow: bool,
) -> None:
    """Run agents until Ctrl-C or SIGTERM.

    REFERENCES are `module:Class`, `path/file.py:Class`, or `path/file.py`
    (every Agent subclass defined in the file). All agents share one NATS
    connection. On SIGTERM the process turns unready, drains and exits 0.
    """
    _serve(ctx, references, embedded_nats, http_port, agent_name, shadow=shadow)


@main.command()
@click.argument("names", nargs=-1, type=click.Choice(list(BUILTIN_AGENTS)), metavar="[AGENT]...")
@embedded_nats_option
@http_port_option
@click.pass_context
def up(
    ctx: click.Context, names: tuple[str, ...], embedded_nats: bool, http_port: int | None
) -> None:
    """Run the built-in agents together until Ctrl-C or SIGTERM.

    The four agents of the loop (tracker, checker, improver, planner), or only
    the AGENTs named, in one process on one NATS connection: `scanflow run`
    with their references. Each reads its section of the settings
    (`agents.<name>`): what it supervises, and the applications the planner
    registers at start. NATS and MLflow are the ones the settings name.
    """
    chosen = [name for name in BUILTIN_AGENTS if not names or name in names]
    _serve(ctx, [BUILTIN_AGENTS[name] for name in chosen], embedded_nats, http_port, None)


def _serve(
    ctx: click.Context,
    references: Sequence[str],
    embedded_nats: bool,
    http_port: int | None,
    agent_name: str | None,
    *,
    shadow: bool = False,
) -> None:
    """Load the agents ``references`` name and serve them until told to stop."""
    from scanflow_agents.runtime.serving import serve

    settings = settings_of(ctx)
    if shadow:
        settings = settings.model_copy(
            update={"agent": settings.agent.model_copy(update={"shadow": True})}
        )
    if http_port is not None:
        settings = settings.model_copy(
            update={"http": settings.http.model_copy(update={"port": http_port})}
        )
    if settings.http.port is not None:
        import importlib.util

        missing = [m for m in ("aiohttp", "prometheus_client") if not importlib.util.find_spec(m)]
        if missing:
            raise click.ClickException(
                f"probes and metrics (--http-port) need {', '.join(missing)}: "
                "pip install 'scanflow-agents[pod]'"
            )
    classes = classes_for_command(references)
    if agent_name is not None and len(classes) != 1:
        raise click.UsageError(
            f"--name needs exactly one agent; the references name {len(classes)}"
        )
    if settings.agent.shadow:
        # Under the live agent's name a shadow would share its durable consumers
        # (each event handled by one of the two) and its lease.
        if agent_name is not None and agent_name in {klass.name for klass in classes}:
            raise click.BadParameter(
                f"a shadow needs a name of its own, not the live agent's {agent_name!r} "
                f"(leave --name out for {agent_name}-shadow)",
                param_hint="--name",
            )
        names: list[str | None] = [agent_name or f"{klass.name}-shadow" for klass in classes]
        if agent_name is not None and settings.agent.shadow_of is None:
            # Named freely, it still follows the agent its class runs as.
            (klass,) = classes
            settings = settings.model_copy(
                update={"agent": settings.agent.model_copy(update={"shadow_of": klass.name})}
            )
    else:
        names = [agent_name] * len(classes)
    try:
        agents = [
            klass(name=name, settings=settings) for klass, name in zip(classes, names, strict=True)
        ]
    except DefinitionError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from exc

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

    run_coroutine(go, settings.agent.event_loop)


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
    from scanflow_agents.transports.servers import NatsServer, PortTaken

    try:
        server = NatsServer(port=port, store_dir=store_dir, config=config).start()
    except PortTaken as exc:
        raise click.ClickException(str(exc)) from None
    with server:
        click.echo(server.url)
        assert server.process is not None
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


def _register_demo() -> None:
    # The demo composes the built-in agents; its command module imports only
    # click and the scenario's part names, so `scanflow --help` stays fast.
    from scanflow_agents.runtime.demo.command import demo

    main.add_command(demo)


_register_demo()


def _register_commands() -> None:
    # The commands that talk to running agents live in their own modules; the
    # console's module imports Textual only when `scanflow console` runs.
    from scanflow_agents.runtime import acting, checking, inspecting, operating, replaying
    from scanflow_agents.runtime.console.command import console

    for command in (
        inspecting.agents,
        inspecting.describe,
        acting.call,
        inspecting.history,
        inspecting.events,
        inspecting.shadow_diff,
        replaying.replay_command,
        acting.apply,
        operating.approvals,
        operating.approve,
        operating.reject,
        operating.pause,
        operating.resume,
        operating.run_sensor,
        operating.dry_run,
        operating.freeze,
        operating.unfreeze,
        console,
        checking.check,
    ):
        main.add_command(command)


_register_commands()
