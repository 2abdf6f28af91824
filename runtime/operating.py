"""One-shot control commands: ``pause``, ``resume``, ``run-sensor``, ``dry-run``, ``freeze``,
approvals.

Each sends a control message (see ``scanflow_agents.controls``); what changes
something is recorded in the audit trail with the caller and the reason.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click
from scanflow_agents.runtime.acting import with_progress
from scanflow_agents.runtime.commanding import (
    Column,
    echo_json,
    echo_unreadable,
    json_option,
    run_async,
    settings_of,
    shorten,
    table,
)

if TYPE_CHECKING:
    from scanflow_agents.controls import Controls
    from scanflow_agents.messages import PendingApproval


def operator_name() -> str:
    """Who is at the keyboard, as the audit trail records it."""
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def _control(ctx: click.Context, action: Callable[[Any], Awaitable[Any]]) -> Any:
    from scanflow_agents.clients import Client
    from scanflow_agents.controls import Controls

    async def go() -> Any:
        async with Client.connect(settings_of(ctx)) as client:
            client.name = operator_name()
            return await action(Controls(client))

    return run_async(go)


def _replicas(results: list[dict[str, Any]], as_json: bool, what: str) -> None:
    if as_json:
        echo_json(results)
        return
    instances = ", ".join(str(r["instance"]) for r in results)
    click.echo(f"{what} on {len(results)} replica(s): {instances}")


@click.command()
@click.argument("agent")
@click.argument("sensor", required=False)
@click.option("--reason", help="Why (recorded).")
@json_option
@click.pass_context
def pause(
    ctx: click.Context, agent: str, sensor: str | None, reason: str | None, as_json: bool
) -> None:
    """Pause AGENT (sensors skip, calls are refused) or only its SENSOR."""
    results = _control(ctx, lambda c: c.pause(agent, sensor, reason=reason))
    _replicas(results, as_json, f"paused {agent}{'.' + sensor if sensor else ''}")


@click.command()
@click.argument("agent")
@click.argument("sensor", required=False)
@json_option
@click.pass_context
def resume(ctx: click.Context, agent: str, sensor: str | None, as_json: bool) -> None:
    """Resume a paused AGENT, or its paused SENSOR."""
    results = _control(ctx, lambda c: c.resume(agent, sensor))
    _replicas(results, as_json, f"resumed {agent}{'.' + sensor if sensor else ''}")


@click.command("run-sensor")
@click.argument("agent")
@click.argument("sensor")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the run.")
@json_option
@click.pass_context
def run_sensor(ctx: click.Context, agent: str, sensor: str, timeout: float, as_json: bool) -> None:
    """Run AGENT's SENSOR now (on one replica) and show what it observed."""

    async def action(controls: Any) -> Any:
        return await with_progress(
            controls.run_sensor(agent, sensor, timeout=timeout), f"{agent}.{sensor}"
        )

    result = _control(ctx, action)
    if as_json:
        echo_json(result)
    elif not result["ran"]:
        click.echo(f"{agent}.{sensor} skipped: {result['skipped']}")
    elif result["observation"] is None:
        click.echo(f"{agent}.{sensor} ran and observed nothing new")
    else:
        click.echo(f"{agent}.{sensor} observed (chain {result['correlation_id']}):")
        echo_json(result["observation"])


@click.command("dry-run")
@click.argument("agent")
@click.argument("mode", type=click.Choice(["on", "off"]))
@json_option
@click.pass_context
def dry_run(ctx: click.Context, agent: str, mode: str, as_json: bool) -> None:
    """Switch AGENT's dry-run mode: its actuators validate and record but do not act."""
    results = _control(ctx, lambda c: c.dry_run(agent, mode == "on"))
    _replicas(results, as_json, f"dry-run {mode} for {agent}")


@click.command()
@click.option("--reason", required=True, help="Why (recorded, and shown in every refusal).")
@json_option
@click.pass_context
def freeze(ctx: click.Context, reason: str, as_json: bool) -> None:
    """Freeze every actuator of the namespace: every agent refuses to act until unfrozen.

    Reads and dry runs still answer; sensors and rules go on. Replicas that
    start later start frozen.
    """
    results = _control(ctx, lambda c: c.freeze(True, reason=reason))
    _frozen(results, as_json, "froze")


@click.command()
@json_option
@click.pass_context
def unfreeze(ctx: click.Context, as_json: bool) -> None:
    """Lift a freeze: the namespace's actuators act again."""
    results = _control(ctx, lambda c: c.freeze(False))
    _frozen(results, as_json, "unfroze")


def _frozen(results: list[dict[str, Any]], as_json: bool, what: str) -> None:
    if as_json:
        echo_json(results)
        return
    agents = sorted({str(r["agent"]) for r in results})
    running = f"{len(results)} running replica(s) of {', '.join(agents)}" if agents else "no agent"
    click.echo(f"{what} the namespace's actuators ({running} answered)")


APPROVAL_COLUMNS: list[Column[PendingApproval]] = [
    ("ID", lambda approval: approval.id),
    ("AGENT", lambda approval: approval.agent),
    ("KIND", lambda approval: approval.kind),
    ("WAITING", lambda approval: f"{approval.waiting_s:.0f}s"),
    ("SUMMARY", lambda approval: shorten(approval.summary, 60)),
]


@click.command()
@click.option("--agent", help="Only this agent's approvals.")
@json_option
@click.pass_context
def approvals(ctx: click.Context, agent: str | None, as_json: bool) -> None:
    """Decisions waiting for a person to approve or reject them."""
    found = _control(ctx, lambda c: c.approvals(agent, unreadable=echo_unreadable))
    if as_json:
        echo_json(found)
    elif not found:
        click.echo("nothing waits for approval")
    else:
        click.echo(table(found, APPROVAL_COLUMNS, cut=60))


def _decide(op: str) -> click.Command:
    @click.command(op)
    @click.argument("approval_id", metavar="ID")
    @click.option("--reason", required=True, help="Why (recorded in the audit trail).")
    @click.option("--agent", help="The agent that holds it (default: found by asking every agent).")
    @json_option
    @click.pass_context
    def decide(
        ctx: click.Context, approval_id: str, reason: str, agent: str | None, as_json: bool
    ) -> None:
        async def action(controls: Any) -> Any:
            holder = agent or await _holder(controls, approval_id)
            if op == "approve":
                return await controls.approve(holder, approval_id, reason=reason)
            return await controls.reject(holder, approval_id, reason=reason)

        result = _control(ctx, action)
        if as_json:
            echo_json(result)
        else:
            verb = "approved" if op == "approve" else "rejected"
            click.echo(f"{verb} {approval_id} ({result['kind']}): {result['summary']}")
            click.echo(f"recorded in chain {result['correlation_id']}")

    decide.help = f"{op.capitalize()} the waiting decision ID, with a reason that is recorded."
    return decide


async def _holder(controls: Controls, approval_id: str) -> str:
    from scanflow_agents.errors import NotFound

    for approval in await controls.approvals(unreadable=echo_unreadable):
        if approval.id == approval_id:
            return approval.agent
    raise NotFound(f"no approval {approval_id!r} waits on any running agent")


approve = _decide("approve")
reject = _decide("reject")
