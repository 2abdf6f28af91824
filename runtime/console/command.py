"""The ``scanflow console`` command (Textual is imported only when it runs)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from scanflow_agents.runtime.commanding import settings_of


@click.command()
@click.option("--read-only", is_flag=True, help="Look, but refuse every command that acts.")
@click.option(
    "--history-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where typed commands are kept (default: $XDG_STATE_HOME/scanflow/console-history).",
)
@click.option(
    "--error-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the console's own failures are logged with their tracebacks "
    "(default: $XDG_STATE_HOME/scanflow/console-errors.log).",
)
@click.pass_context
def console(
    ctx: click.Context, read_only: bool, history_file: Path | None, error_log: Path | None
) -> None:
    """The interactive agent console: agents, events, calls, control (? for keys).

    A failure inside the console is one line on the screen and a traceback in
    the error log; if the console has to stop, it exits with status 1.
    """
    try:
        from scanflow_agents.runtime.console.app import ConsoleApp
    except ImportError as exc:
        raise click.ClickException(
            f"the console needs Textual ({exc}): pip install 'scanflow-agents[console]'"
        ) from exc
    from scanflow_agents.runtime.operating import operator_name
    from textual.logging import TextualHandler

    # Log lines written to the terminal would tear the screen: they go to
    # Textual's log instead (`textual console` shows them), warnings and up.
    root = logging.getLogger()
    root.handlers[:] = [TextualHandler()]
    root.setLevel(max(root.level, logging.WARNING))

    app = ConsoleApp(
        settings_of(ctx),
        read_only=read_only,
        history_path=history_file,
        error_log=error_log,
        caller=operator_name(),
    )
    app.run()
    if app.return_code:
        ctx.exit(app.return_code)
