"""``scanflow replay``: what an agent, changed or not, would have decided on recorded history."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from scanflow_agents.runtime.commanding import (
    Column,
    clock,
    echo_json,
    json_option,
    parse_since,
    run_async,
    run_coroutine,
    settings_of,
    table,
)
from scanflow_agents.runtime.inspecting import EXPORT_LIMIT
from scanflow_agents.runtime.loading import classes_for_command

from scanflow_agents.replaying import Replay, Row, check_determinism, replay

if TYPE_CHECKING:
    from scanflow_agents.agents import Agent
    from scanflow_agents.clients import Client


@click.command("replay")
@click.argument("reference", metavar="MODULE:CLASS")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the history from this file (`scanflow history --export`), not the stream.",
)
@click.option(
    "--since", help="Only history since a time: 30s, 10m, 2h, 1d, or an ISO time (--file too)."
)
@click.option(
    "--name", "agent_name", help="The name the agent ran under [default: its class's name]."
)
@click.option(
    "--answer",
    "answers",
    multiple=True,
    metavar="AGENT.ACTUATOR=JSON",
    help="What a call not made then returns (default: null). Repeatable.",
)
@click.option(
    "--read-mlflow",
    is_flag=True,
    help="Let the agent read settings.mlflow's server, as it is now; nothing is written.",
)
@click.option("--all", "show_all", is_flag=True, help="Also the causes decided the same.")
@click.option(
    "--check-determinism",
    "determinism",
    is_flag=True,
    help="The agent is the one that recorded the history: name every rule that "
    "decided otherwise on the same input, and why it may have; exit 1 if any did.",
)
@json_option
@click.pass_context
def replay_command(
    ctx: click.Context,
    reference: str,
    path: Path | None,
    since: str | None,
    agent_name: str | None,
    answers: tuple[str, ...],
    read_mlflow: bool,
    show_all: bool,
    determinism: bool,
    as_json: bool,
) -> None:
    """Run MODULE:CLASS's rules on recorded history, acting on nothing.

    Its sensors do not run: their recorded observations, and the events its
    rules watch, are given to its rules in the order they happened, on the
    clock of that time. Its calls are answered from the actions recorded then;
    a call not made then gets --answer's value and is listed. With
    --read-mlflow its rules read MLflow (settings.mlflow) as it is now, and
    every write is refused. The result is
    each cause's decision then and now: same, changed, removed (decided then,
    not now), added; after the first decision that acts otherwise, later rows
    are counterfactual (the world would have moved otherwise).
    """
    (klass,) = _one(classes_for_command([reference]), reference)
    agent = klass(name=agent_name, settings=settings_of(ctx))
    stubs = dict(_answer(text) for text in answers)
    history = _read_file(path, since) if path is not None else _read_stream(ctx, since)
    # What the rules decide is the output; the reactor's line per decision and
    # per refused call would repeat it, out of order.
    logging.getLogger("scanflow_agents.reacting").setLevel(logging.WARNING)
    result = run_coroutine(lambda: _replay(agent, history, stubs, read_mlflow=read_mlflow))
    suspects = check_determinism(agent, result) if determinism else []
    if as_json:
        found = result.as_json()
        if determinism:
            found["nondeterministic"] = [
                {"rule": s.rule, "cause": s.cause, "time": s.time, "suspects": list(s.suspects)}
                for s in suspects
            ]
        echo_json(found, indent=None)
    else:
        _show(result, show_all)
        for suspect in suspects:
            click.echo(f"not deterministic: {suspect}")
    if suspects:
        ctx.exit(1)


async def _replay(
    agent: Agent, history: list[dict[str, Any]], stubs: dict[str, Any], *, read_mlflow: bool
) -> Replay:
    if not read_mlflow:
        return await replay(agent, history, answers=stubs)
    from scanflow_agents.knowledge import KnowledgeClient

    async with KnowledgeClient(agent.settings.mlflow, read_only=True) as knowledge:
        return await replay(agent, history, answers=stubs, knowledge=knowledge)


def _one(classes: list[Any], reference: str) -> list[Any]:
    if len(classes) != 1:
        names = ", ".join(klass.__name__ for klass in classes)
        raise click.BadParameter(
            f"{reference} names {len(classes)} agents ({names}): name one as module:Class",
            param_hint="MODULE:CLASS",
        )
    return classes


def _answer(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or key.count(".") != 1:
        raise click.BadParameter(f"{text!r}: write AGENT.ACTUATOR=JSON", param_hint="--answer")
    try:
        return key, json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: the value is not JSON ({exc})") from exc


def _read_file(path: Path, since: str | None) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise click.ClickException(
            f"cannot read {path}: {exc.strerror or exc} "
            "(write one with `scanflow history --export FILE`)"
        ) from exc
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise click.ClickException(f"{path}:{number}: not a JSON record ({exc})") from exc
        if not isinstance(record, dict) or "kind" not in record or "time" not in record:
            raise click.ClickException(
                f"{path}:{number}: not a history record (write one with "
                "`scanflow history --export FILE`)"
            )
        records.append(record)
    if since is not None:
        moment = parse_since(since)
        records = [r for r in records if datetime.fromisoformat(str(r["time"])) >= moment]
    return records


def _read_stream(ctx: click.Context, since: str | None) -> list[dict[str, Any]]:
    from scanflow_agents.clients import Client

    moment = parse_since(since) if since else None

    async def go() -> list[dict[str, Any]]:
        async with Client.connect(settings_of(ctx)) as client:
            return await recorded(client, moment)

    return run_async(go)


async def recorded(client: Client, since: datetime | None) -> list[dict[str, Any]]:
    """The history a replay reads from the stream (the newest ``EXPORT_LIMIT`` records)."""
    # Every event: the actions that answered the agent's calls are other
    # agents' records, and the events its rules watch have other sources.
    return await client.history(kinds=None, limit=EXPORT_LIMIT, since=since)


COLUMNS: list[Column[Row]] = [
    ("TIME", lambda row: clock(row.difference.time)),
    ("STATUS", lambda row: row.status + (" *" if row.counterfactual else "")),
    ("RULE", lambda row: row.difference.rule),
    ("ON", lambda row: row.difference.on),
    ("THEN", lambda row: row.difference.live.what() if row.difference.live else "-"),
    ("NOW", lambda row: row.difference.shadow.what() if row.difference.shadow else "-"),
]


def _show(result: Replay, show_all: bool) -> None:
    rows = result.rows if show_all else result.differences
    if rows:
        click.echo(table(rows, COLUMNS))
    for line in notes(result):
        click.echo(line)


def notes(result: Replay) -> list[str]:
    """What a replay's table does not show: its counts, then what to know before trusting it."""
    counts = result.counts()
    lines = [
        f"{result.observations} recorded observation(s) and event(s) replayed; "
        f"{len(result.rows)} cause(s) decided on: {counts['same']} same, "
        f"{counts['changed']} changed, {counts['removed']} removed, {counts['added']} added"
    ]
    if result.counterfactual_from is not None:
        lines.append(
            f"* counterfactual: from {result.counterfactual_from} on, the replayed agent "
            "would have acted otherwise, so what was observed after is not what it would "
            "have seen"
        )
    for call in result.new_calls:
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in call.params.items())
        lines.append(
            f"new call, not made then (a stub answered): {call.agent}.{call.actuator}({params})"
        )
    for rule, count in result.failures.items():
        lines.append(
            f"rule '{rule}' failed {count} time(s) in the replay (its error is logged): "
            "its decisions there are missing, not removed"
        )
    for sensor, rules in result.unreplayable.items():
        lines.append(
            f"not replayed: sensor '{sensor}' records no observations (publish=False), "
            f"so rule(s) {', '.join(rules)} got nothing; record it to replay them"
        )
    return lines
