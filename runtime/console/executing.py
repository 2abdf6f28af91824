"""The typed commands that talk to agents: describe, chain, call, control, approvals,
and the two that compare policies (replay, shadow).

No Textual here: an :class:`Executor` runs one parsed command against the
namespace through the console's :class:`~scanflow_agents.runtime.console.link.Link`
and returns the line to show (or opens a view through the callbacks it was
given). The app runs it in a worker and shows what it returns or raises.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click
from scanflow_agents.runtime.arguments import checked
from scanflow_agents.runtime.commanding import parse_since, shorten
from scanflow_agents.runtime.console.commands import Command, CommandError, need
from scanflow_agents.runtime.console.comparing import (
    Comparison,
    replay_comparison,
    shadow_comparison,
)
from scanflow_agents.runtime.console.link import Link
from scanflow_agents.runtime.console.widgets import CommandSuggester

from scanflow_agents import Settings


class Executor:
    """Runs the remote commands of one console.

    Args:
        link: the console's connection and what it hears.
        suggester: completion's descriptions, filled by ``describe`` and ``call``.
        say: shows a line of progress (a call may take long).
        open_agent: opens the agent view of a name that answered ``describe``.
        open_chain: opens the chain view of a recorded correlation id.
        open_comparison: opens the view of a replay or of a shadow's differences.
        settings: what a replayed agent is built with (the console's own).
        refresh: asks every replica for its state again (after a control op).
        dry_run: whether calls are sent as dry runs now (the console's toggle).
    """

    def __init__(
        self,
        link: Link,
        suggester: CommandSuggester,
        *,
        say: Callable[[str], None],
        open_agent: Callable[[str], None],
        open_chain: Callable[[str], None],
        open_comparison: Callable[[Comparison], None],
        settings: Settings,
        refresh: Callable[[], Awaitable[None]],
        dry_run: Callable[[], bool],
    ) -> None:
        self.link = link
        self.suggester = suggester
        self.say = say
        self.open_agent = open_agent
        self.open_chain = open_chain
        self.open_comparison = open_comparison
        self.settings = settings
        self.refresh = refresh
        self.dry_run = dry_run

    async def run(self, command: Command) -> str | None:
        """Run ``command``; the line that says how it went (``None``: a view opened).

        Raises:
            CommandError: the line is wrong (a missing word, an unknown approval).
            CallError: the agent refused or failed (its code and field are shown).
        """
        words = command.words
        if command.verb == "describe":
            # Asked first, so a name nobody answers to is an error, not an empty view.
            agent = need(command, "AGENT")[0]
            self.suggester.descriptions[agent] = await self.link.require().describe(agent)
            self.open_agent(agent)
            return None
        if command.verb == "chain":
            correlation_id = need(command, "CORRELATION_ID")[0]
            await self._check_chain(correlation_id)
            self.open_chain(correlation_id)
            return None
        if command.verb in ("replay", "shadow"):
            self.open_comparison(await self._compare(command))
            return None
        if command.verb == "call":
            agent, actuator = need(command, "AGENT", "ACTUATOR")[:2]
            return await self._call(agent, actuator, command.params)
        controls = self.link.controls
        if command.verb in ("pause", "resume"):
            agent = need(command, "AGENT", "SENSOR", optional=1)[0]
            sensor = words[1] if len(words) > 1 else None
            if command.verb == "pause":
                done = await controls.pause(agent, sensor, reason=f"paused by {self.link.name}")
            else:
                done = await controls.resume(agent, sensor)
            what = f"{agent}.{sensor}" if sensor else agent
            await self.refresh()
            return f"{command.verb}d {what} on {len(done)} replica(s)"
        if command.verb == "run-sensor":
            agent, sensor = need(command, "AGENT", "SENSOR")[:2]
            result = await controls.run_sensor(agent, sensor)
            if not result["ran"]:
                return f"{agent}.{sensor} skipped: {result['skipped']}"
            return f"{agent}.{sensor} observed {_short(result['observation'])}"
        if command.verb == "dry-run":
            agent, mode = need(command, "AGENT", "on|off")[:2]
            if mode not in ("on", "off"):
                raise CommandError("dry-run takes on or off", field="mode")
            done = await controls.dry_run(agent, mode == "on")
            await self.refresh()
            return f"dry-run {mode} for {agent} on {len(done)} replica(s)"
        if command.verb in ("freeze", "unfreeze"):
            on = command.verb == "freeze"
            reason = " ".join(need(command, "REASON")) if on else None
            done = await controls.freeze(on, reason=reason)
            await self.refresh()
            said = "froze" if on else "unfroze"
            return f"{said} the namespace's actuators ({len(done)} replica(s) answered)"
        if command.verb in ("approve", "reject"):
            approval_id = need(command, "ID", "REASON")[0]
            reason = " ".join(words[1:])
            holder = next(
                (a.agent for a in await controls.approvals() if a.id == approval_id), None
            )
            if holder is None:
                raise CommandError(f"no approval {approval_id!r} is waiting", field="id")
            decide = controls.approve if command.verb == "approve" else controls.reject
            decided = await decide(holder, approval_id, reason=reason)
            past = "approved" if command.verb == "approve" else "rejected"
            return f"{past} {approval_id} ({decided['kind']}); recorded with its chain"
        raise CommandError(f"{command.verb} is not a remote command")

    async def _check_chain(self, correlation_id: str) -> None:
        client = self.link.require()
        if not await client.history(correlation_id=correlation_id, kinds=None, limit=1):
            raise CommandError(
                f"no event is recorded in chain {correlation_id!r}; select an event "
                "and press enter, or copy its CHAIN from `scanflow history`",
                field="correlation_id",
            )

    async def _compare(self, command: Command) -> Comparison:
        first = need(
            command, "MODULE:CLASS" if command.verb == "replay" else "AGENT", "SINCE", optional=1
        )[0]
        since = None
        if len(command.words) > 1:
            try:
                since = parse_since(command.words[1])
            except click.BadParameter as exc:
                raise CommandError(exc.format_message(), field="since") from None
        client = self.link.require()
        self.say(f"reading the history for {command.verb} {first}…")
        if command.verb == "replay":
            return await replay_comparison(client, self.settings, first, since)
        return await shadow_comparison(client, first, since)

    async def _call(self, agent: str, actuator: str, params: dict[str, Any]) -> str:
        client = self.link.require()
        described = self.suggester.descriptions.get(agent) or await client.describe(agent)
        self.suggester.descriptions[agent] = described
        spec = checked(described, actuator, params)  # before sending: the field is named
        timeout = (spec.timeout or 30) + 10
        self.say(f"calling {agent}.{actuator}…")
        dry_run = self.dry_run()
        result = await client.call(agent, actuator, params, timeout=timeout, dry_run=dry_run)
        dry = " (dry run)" if dry_run else ""
        return f"{agent}.{actuator}{dry} → {_short(result)}"


def error_text(verb: str | None, error: Exception) -> str:
    """One line for a failed command: its verb once, the error's code and field if any."""
    code = getattr(error, "code", None)
    field = getattr(error, "field", None)
    text = f"{code}: {error}" if code else str(error)
    text = f"{verb}: {text}" if verb else text
    return f"{text} (field: {field})" if field else text


def _short(value: Any) -> str:
    return shorten(json.dumps(value, default=str), 300)
