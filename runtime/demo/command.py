"""``scanflow demo``: the click command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from scanflow_agents.runtime.demo.examples import EXAMPLES
from scanflow_agents.runtime.demo.scenario import PARTS


def _parts(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise click.BadParameter(f"choose among {', '.join(PARTS)} (got {value!r})")
    return parts


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """The agents' log goes to ``path``; the terminal keeps the live view and warnings.

    Every decision is in the view already; the log lines interleaved with it
    would only repeat them, but they stay in the file for whoever digs deeper.
    """
    root = logging.getLogger()
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, mode="w")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    terminal = [
        (h, h.level)
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for handler, _ in terminal:
        handler.setLevel(max(handler.level, logging.WARNING))
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler, level in terminal:
            handler.setLevel(level)


@click.command()
@click.option(
    "--example",
    default="digits",
    show_default=True,
    type=click.Choice(sorted(EXAMPLES)),
    help="The application supervised: "
    + "; ".join(f"{name}, {e.title}" for name, e in sorted(EXAMPLES.items())),
)
@click.option("--seed", default=0, show_default=True, help="Seed of the data and the traffic.")
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1, max=20),
    help="Time factor: 2 halves the phases' fixed durations (the agents' reactions keep theirs).",
)
@click.option(
    "--parts",
    default=",".join(PARTS),
    show_default=True,
    callback=_parts,
    help="Which scenario parts to play: drift (retraining), load (autoscaling), or both.",
)
@click.option(
    "--report-dir",
    default="scanflow-demo-report",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where summary.json, the plots and report.html go.",
)
@click.option("--nats", "nats_url", metavar="URL", help="Use this NATS (JetStream) server.")
@click.option("--mlflow", "mlflow_uri", metavar="URI", help="Use this MLflow tracking server.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the stack's files (MLflow store, run folders, logs) here; default: a "
    "temporary folder removed at the end.",
)
@click.option(
    "--shadow",
    "shadows",
    multiple=True,
    metavar="AGENT=JSON",
    callback=lambda ctx, param, value: _shadows(value),
    help="Also run a built-in agent as a shadow with its settings changed, e.g. "
    """checker='{"consecutive": 3}'; the summary pairs its decisions with the live one's.""",
)
def demo(**options: Any) -> None:
    """Run the whole supervised loop on this machine and show it.

    Starts NATS, MLflow and the four built-in agents, trains and serves an
    example application (digits by default), then sends real traffic: clean,
    drifted (the loop should detect it, retrain and redeploy), and a load spike
    (the loop should scale out). Ends with a summary table and a report with plots.
    """
    from scanflow_agents.runtime.demo.running import DemoOptions, run_demo
    from scanflow_agents.runtime.demo.summary import table

    chosen = DemoOptions(**options)

    async def go() -> dict[str, Any]:
        # SIGTERM ends the demo as Ctrl-C does: the stack stops what it started.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(chosen)

    log = chosen.report_dir / "demo.log"
    click.echo(f"scanflow demo: live view below, the agents' full log in {log}")
    try:
        with _log_to_file(log):
            result = asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise click.ClickException("demo interrupted; everything it started is stopped") from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n" + table(result))
    click.echo(f"\nreport: {chosen.report_dir / 'report.html'} (summary.json, *.png next to it)")


def _shadows(given: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    shadows: dict[str, dict[str, Any]] = {}
    for text in given:
        name, sep, changes = text.partition("=")
        try:
            parsed = json.loads(changes) if sep else None
        except ValueError as exc:
            raise click.BadParameter(f"{text!r}: the changes are not JSON ({exc})") from None
        if not name or not isinstance(parsed, dict):
            raise click.BadParameter(
                f"""{text!r}: write AGENT='{{"setting": value}}' (a JSON object)""",
                param_hint="--shadow",
            )
        shadows[name] = parsed
    return shadows
