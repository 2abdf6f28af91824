"""One-shot commands that look: ``agents``, ``describe``, ``history``, ``events``,
``shadow-diff``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import click
import orjson
from scanflow_agents.runtime.commanding import (
    EVENT_COLUMNS,
    Column,
    ago,
    clock,
    duration,
    echo_json,
    echo_unreadable,
    event_line,
    json_option,
    parse_since,
    run_async,
    settings_of,
    table,
)

from scanflow_agents import redaction
from scanflow_agents.messages import (
    ActuatorStatus,
    Description,
    Heartbeat,
    LastRun,
    Parameter,
    RuleStatus,
    SensorStatus,
)

if TYPE_CHECKING:
    from scanflow_agents.clients import Client
    from scanflow_agents.diffs import DecisionDiff

AGENT_COLUMNS: list[Column[Heartbeat]] = [
    ("AGENT", lambda beat: beat.agent),
    ("INSTANCE", lambda beat: beat.instance),
    ("STATE", lambda beat: agent_state(beat)),
    ("READY", lambda beat: beat.ready),
    ("LEADER", lambda beat: beat.leader),  # the replica that runs the sensors and rules
    ("UP", lambda beat: duration(beat.uptime)),
    ("APPROVALS", lambda beat: beat.approvals),
]


def agent_state(heartbeat: Heartbeat) -> str:
    """The state people read: running, paused, dry-run, with paused sensors named."""
    state = heartbeat.state
    if heartbeat.shadow_of:
        state += f",shadow:{heartbeat.shadow_of}"  # always in dry-run: not said twice
    elif heartbeat.dry_run:
        state += ",dry-run"
    if heartbeat.frozen:
        state += ",frozen"  # the namespace's actuators refuse to act
    if heartbeat.unstored:
        state += ",unrecorded"  # the stream cannot store its records now
    if heartbeat.paused_sensors:
        state += f" (paused: {','.join(heartbeat.paused_sensors)})"
    return state


@click.command()
@click.option("--wait", default=0.5, show_default=True, help="Seconds to collect answers.")
@json_option
@click.pass_context
def agents(ctx: click.Context, wait: float, as_json: bool) -> None:
    """List the agents of the namespace, one line per replica.

    Running replicas answer; a replica that is gone shows its last state:
    `stopped` after a clean stop, `stale` if it died without a word.
    """
    from scanflow_agents.clients import Client

    async def go() -> list[Heartbeat]:
        async with Client.connect(settings_of(ctx)) as client:
            return await client.roster(wait=wait, unreadable=echo_unreadable)

    found = run_async(go)
    if as_json:
        echo_json(found)
    elif not found:
        click.echo("no agents answer in this namespace")
    else:
        click.echo(table(found, AGENT_COLUMNS))


@click.command()
@click.argument("agent")
@json_option
@click.pass_context
def describe(ctx: click.Context, agent: str, as_json: bool) -> None:
    """Show an agent's sensors, rules and actuators (with parameter schemas)."""
    from scanflow_agents.clients import Client

    async def go() -> Description:
        async with Client.connect(settings_of(ctx)) as client:
            return await client.describe(agent)

    described = run_async(go)
    if as_json:
        echo_json(described)
        return
    click.echo(describe_text(described))


SENSOR_COLUMNS: list[Column[SensorStatus]] = [
    ("SENSOR", lambda sensor: sensor.id),
    ("TRIGGER", lambda sensor: sensor.trigger),
    ("RUNS", lambda sensor: sensor.runs),
    ("LAST", lambda sensor: ago(sensor.last.time if sensor.last else None)),
    ("VALUE", lambda sensor: last_value(sensor.last)),
]
RULE_COLUMNS: list[Column[RuleStatus]] = [
    ("RULE", lambda rule: rule.id),
    ("WATCHES", lambda rule: ",".join(rule.sensors + rule.topics) or "all sensors"),
    ("DECISIONS", lambda rule: rule.decisions),
    ("LAST DECISION", lambda rule: rule.last_decision.action if rule.last_decision else None),
]
PARAMETER_COLUMNS: list[Column[Parameter]] = [
    ("  PARAM", lambda param: "  " + param.name),
    ("TYPE", lambda param: param.type),
    ("REQUIRED", lambda param: param.required),
    ("DESCRIPTION", lambda param: param.description),
]


def describe_text(described: Description) -> str:
    """An agent's description as sections of tables."""
    head = (
        f"{described.agent}  ({described.agent_class})  instance {described.instance}, "
        f"{agent_state(described)}, up {duration(described.uptime)}"
    )
    parts = [
        head,
        "",
        table(described.sensors, SENSOR_COLUMNS) if described.sensors else "sensors: none",
        "",
        table(described.rules, RULE_COLUMNS) if described.rules else "rules: none",
        "",
    ]
    for spec in described.actuators:
        parts.append(f"actuator {spec.id}: {spec.description}".rstrip())
        if limits(spec) != "-":
            parts.append(f"  limits: {limits(spec)}")
        params = spec.parameters()
        if params:
            parts.append(table(params, PARAMETER_COLUMNS, cut=60))
    return "\n".join(parts)


def limits(spec: ActuatorStatus) -> str:
    """An actuator's guards in a few words: ``cooldown 30s, rate 5/60s`` (``-`` if none)."""
    bits = []
    if spec.cooldown:
        bits.append(f"cooldown {spec.cooldown:g}s")
    if spec.rate:
        bits.append(f"rate {spec.rate}")
    return ", ".join(bits) or "-"


def last_value(last: LastRun | None) -> Any:
    """What a sensor's last run returned, or its error (``None`` if it has not run)."""
    if last is None:
        return None
    return last.value if last.ok else f"error: {last.error}"


@click.command()
@click.option("--agent", help="Only this agent's records.")
@click.option("--correlation", help="Only one chain, by correlation id (read from the index).")
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (observation, decision...).")
@click.option("--since", help="Only records since a time: 30s, 10m, 2h, 1d, or an ISO time.")
@click.option(
    "--limit",
    type=int,
    help="Newest records to show [default: 100; with --export, all].",
)
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write the records to this file, one JSON object a line, oldest first "
    "(every event, custom topics too, unless --kind names some): "
    "what `scanflow replay --file` reads. '-' writes to standard output.",
)
@json_option
@click.pass_context
def history(
    ctx: click.Context,
    agent: str | None,
    correlation: str | None,
    kinds: tuple[str, ...],
    since: str | None,
    limit: int | None,
    export: str | None,
    as_json: bool,
) -> None:
    """The audit trail, newest first: observations, decisions, actions and control ops.

    Filtering happens on the server, by subject; --limit counts what is left.
    With --correlation, the whole chain, custom events included. With --export,
    a span of history goes to a file, for a replay or for the record; secrets in
    it are masked as everywhere else.
    """
    from scanflow_agents.clients import RECORD_KINDS

    if export is not None:
        # Every event: a replay needs the events its rules watch, and the actions
        # (of other agents) that answered its calls, not only its own records.
        records = _read(ctx, agent, correlation, kinds or None, since, limit or EXPORT_LIMIT)
        _export(records, export)
        return
    # One chain is shown whole (custom events too), unless kinds are named.
    wanted = kinds or (None if correlation else RECORD_KINDS)
    records = _read(ctx, agent, correlation, wanted, since, limit or 100)
    _print_events(list(reversed(records)), as_json)


#: The most records ``history --export`` reads without a ``--limit``.
EXPORT_LIMIT = 10_000_000


def _export(records: list[dict[str, Any]], path: str) -> None:
    with click.open_file(path, "w") as out:
        written = write_history(records, out)
    if path != "-":
        click.echo(f"{written} record(s) written to {path}", err=True)


def write_history(records: list[dict[str, Any]], out: IO[str]) -> int:
    """History as ``scanflow replay --file`` reads it: a JSON record a line, secrets masked."""
    lines = [orjson.dumps(record).decode() for record in redaction.mask(records)]
    for line in lines:
        out.write(line + "\n")
    return len(lines)


@click.command()
@click.option("--agent", help="Only this agent's events.")
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (first topic token).")
@click.option("--correlation", help="Only one chain, by correlation id.")
@click.option("--since", help="Start at a time: 30s, 10m, 2h, 1d ago, or an ISO time.")
@click.option("--limit", default=20, show_default=True, help="Stored events to show first.")
@click.option("--follow", "-f", is_flag=True, help="Then keep printing new events until Ctrl-C.")
@json_option
@click.pass_context
def events(
    ctx: click.Context,
    agent: str | None,
    kinds: tuple[str, ...],
    correlation: str | None,
    since: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
) -> None:
    """Every event (custom topics too), oldest first; --follow tails the stream."""
    records = _read(ctx, agent, correlation, kinds or None, since, limit)
    _print_events(records, as_json, header=True)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            run_async(lambda: _follow(ctx, agent, kinds, correlation, as_json))


@click.command("shadow-diff")
@click.argument("agent")
@click.option(
    "--shadow", "shadow", metavar="NAME", help="The shadow's name [default: AGENT-shadow]."
)
@click.option("--since", help="Only decisions since a time: 30s, 10m, 2h, 1d, or an ISO time.")
@click.option("--all", "show_all", is_flag=True, help="Also the causes both decided the same on.")
@click.option(
    "--limit", default=10_000, show_default=True, help="Newest decisions read of each agent."
)
@json_option
@click.pass_context
def shadow_diff(
    ctx: click.Context,
    agent: str,
    shadow: str | None,
    since: str | None,
    show_all: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Where a shadow decided otherwise than its live AGENT, cause by cause.

    A shadow (`scanflow run --shadow`) decides on the live agent's events and
    observations, so each decision pairs with the live one on the same cause:
    changed, only live, only shadow (--all: same too). The last line counts each.
    """
    from scanflow_agents.clients import Client

    shadow = shadow or f"{agent}-shadow"
    moment = parse_since(since) if since else None

    async def go() -> tuple[DecisionDiff, bool]:
        async with Client.connect(settings_of(ctx)) as client:
            return await read_shadow_diff(client, agent, shadow, since=moment, limit=limit)

    diff, heard = run_async(go)
    if not heard:
        click.echo(no_shadow_decision(shadow, since), err=True)
    rows = diff.rows if show_all else diff.disagreements
    counts = diff.counts()
    if as_json:
        echo_json(
            {
                "agent": agent,
                "shadow": shadow,
                "counts": counts,
                "rows": [row.as_json() for row in rows],
            },
            indent=None,
        )
        return
    columns: list[Column[Any]] = [
        ("TIME", lambda row: clock(row.time)),
        ("STATUS", lambda row: row.status.replace("_", " ")),
        ("RULE", lambda row: row.rule),
        ("ON", lambda row: row.on),
        ("LIVE", lambda row: row.live.what() if row.live else "-"),
        ("SHADOW", lambda row: row.shadow.what() if row.shadow else "-"),
    ]
    if rows:
        click.echo(table(rows, columns))
    click.echo(shadow_counts(diff))


async def read_shadow_diff(
    client: Client, agent: str, shadow: str, *, since: datetime | None, limit: int = 10_000
) -> tuple[DecisionDiff, bool]:
    """A live agent's and its shadow's newest decisions, paired; and whether the shadow decided."""
    from scanflow_agents.diffs import diff_decisions

    live, trial = [
        await client.history(agent=name, kinds=("decision",), limit=limit, newest=True, since=since)
        for name in (agent, shadow)
    ]
    return diff_decisions(live, trial), bool(trial)


def no_shadow_decision(shadow: str, since: str | None) -> str:
    return (
        f"no decision of {shadow!r} is recorded{f' since {since}' if since else ''}: "
        f"is it running (scanflow run --shadow, named {shadow!r})?"
    )


def shadow_counts(diff: DecisionDiff) -> str:
    counts = diff.counts()
    return (
        f"{len(diff.rows)} cause(s) decided on: {counts['same']} same, {counts['changed']} "
        f"changed, {counts['only_live']} only live, {counts['only_shadow']} only shadow"
    )


def _read(
    ctx: click.Context,
    agent: str | None,
    correlation: str | None,
    kinds: Any,
    since: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    from scanflow_agents.clients import Client

    moment = parse_since(since) if since else None

    async def go() -> list[dict[str, Any]]:
        async with Client.connect(settings_of(ctx)) as client:
            return await client.history(
                agent=agent,
                correlation_id=correlation,
                kinds=kinds,
                limit=limit,
                newest=True,
                since=moment,
            )

    return run_async(go)


def _print_events(records: list[dict[str, Any]], as_json: bool, *, header: bool = True) -> None:
    records = redaction.mask(records)
    if as_json:
        for record in records:
            echo_json(record, indent=None)
    elif not header:
        for record in records:
            click.echo(event_line(record))
    elif records:
        click.echo(table(records, EVENT_COLUMNS))
    else:
        click.echo("no records match", err=True)


async def _follow(
    ctx: click.Context,
    agent: str | None,
    kinds: tuple[str, ...],
    correlation: str | None,
    as_json: bool,
) -> None:
    from scanflow_agents.runtime.feeds import EventFilter, record_of

    from scanflow_agents.clients import Client

    wanted = EventFilter(agent=agent, kinds=kinds, correlation=correlation)
    async with Client.connect(settings_of(ctx)) as client:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_event(message: Any) -> None:
            record = record_of(client.subjects, message.subject, message.data)
            if record is not None and wanted.matches(record):
                queue.put_nowait(record)

        await client.transport.subscribe(client.subjects.all_events, on_event)
        while True:
            record = await queue.get()
            _print_events([record], as_json, header=False)
