"""The console application: screens, keys, and the commands typed at its prompt.

Local commands (help, filter, the approvals view) run here; the ones that
talk to agents run in ``executing.py``. All NATS I/O runs in workers
(``@work``) on the app's event loop, so the
screen never waits for the network; a lost connection shows a banner while
the client reconnects by itself, and a failing command is a line of output,
never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from scanflow_agents.runtime.console.agent_screen import AgentScreen
from scanflow_agents.runtime.console.approvals_screen import ApprovalsScreen
from scanflow_agents.runtime.console.chain_screen import ChainScreen
from scanflow_agents.runtime.console.commands import (
    ACTING,
    Command,
    CommandError,
    TypedHistory,
    parse,
)
from scanflow_agents.runtime.console.comparing import Comparison
from scanflow_agents.runtime.console.comparison_screen import ComparisonScreen
from scanflow_agents.runtime.console.executing import Executor, error_text
from scanflow_agents.runtime.console.failures import ErrorLog
from scanflow_agents.runtime.console.help_screen import HelpScreen
from scanflow_agents.runtime.console.link import Link
from scanflow_agents.runtime.console.main_screen import MainScreen
from scanflow_agents.runtime.console.widgets import CommandPrompt, CommandSuggester, EventsTable
from scanflow_agents.runtime.feeds import EventFilter
from textual import work
from textual.actions import ActionParseResult
from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.worker import WorkerFailed

from scanflow_agents import CallError, Settings, redaction


class ConsoleApp(App[None]):
    """``scanflow console``: agents, events, calls and control of one namespace."""

    TITLE = "scanflow console"
    CSS_PATH = "console.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help"),
        Binding("colon", "prompt", "Command"),
        Binding("slash", "filter", "Filter"),
        Binding("a", "approvals", "Approvals"),
        Binding("D", "toggle_dry_run", "Dry-run calls", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        read_only: bool = False,
        history_path: Path | None = None,
        error_log: Path | None = None,
        caller: str = "console",
    ) -> None:
        super().__init__()
        self.settings = settings
        self.read_only = read_only
        self.dry_run_calls = False
        self.typed = TypedHistory(history_path)
        self.errors = ErrorLog(error_log)
        self.suggester = CommandSuggester({})
        self.link = Link(settings, name=caller, on_change=self._changed)
        self.executor = Executor(
            self.link,
            self.suggester,
            say=self.say,
            open_agent=self.open_agent,
            open_chain=self.open_chain,
            open_comparison=self.open_comparison,
            settings=settings,
            refresh=self._refresh,
            dry_run=lambda: self.dry_run_calls,
        )
        self._dirty: set[str] = {"agents", "events", "connection"}
        self._rebuild_events = False
        self._last_refresh = 0.0
        self._outage_error = False  # the error shown came from a call made while disconnected

    # -- lifecycle -----------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        self.set_interval(0.5, self._tick)
        self.start_link()

    @work(exclusive=True, group="link")
    async def start_link(self) -> None:
        """Connect (retrying while NATS is unreachable), then fill the panes."""
        await self.link.connect()
        await self._refresh()
        try:
            await self.link.backfill()
        except Exception as exc:  # an empty or missing stream is not an error to show
            self.log.warning(f"backfill failed: {exc}")
        # Live events may have been shown before the stored ones arrived: in time order.
        self._rebuild_events = True

    async def _refresh(self) -> None:
        self.link.forget_stale()
        try:
            await self.link.refresh()
        except Exception as exc:
            self.log.warning(f"discovery failed: {exc}")
        for row in self.link.agents():
            if row.replicas and not self.suggester.descriptions.get(row.name):
                await self._describe_for_completion(row.name)
        self._last_refresh = time.monotonic()

    async def _describe_for_completion(self, agent: str) -> None:
        # Completion needs each agent's sensors and actuators before anyone opens it.
        try:
            self.suggester.descriptions[agent] = await self.link.require().describe(agent)
        except Exception as exc:
            self.suggester.descriptions.setdefault(agent, None)  # its name still completes
            self.log.warning(f"describe {agent} for completion failed: {exc}")

    async def on_unmount(self) -> None:
        await self.link.close()

    def _changed(self, what: str) -> None:
        self._dirty.add(what)

    def _tick(self) -> None:
        # Panes are redrawn at most twice a second, however fast events arrive.
        self.link.check()
        main = self._main()
        if main is None:
            return
        try:
            self._redraw(main)
        except NoMatches:
            # The tick can fire while the app is shutting down: the main screen is
            # still on the stack but its panes are already removed. Nothing to draw.
            return
        if self.link.connected and time.monotonic() - self._last_refresh > 5:
            self._last_refresh = time.monotonic()
            self.refresh_agents()

    def _redraw(self, main: MainScreen) -> None:
        if "connection" in self._dirty or self.link.down_since is not None:
            main.show_banner(self._banner())
            if self.link.connected and self._outage_error:
                # What failed while NATS was away may work now; any other error
                # (a bad line, a failing key) stays until the next output.
                main.clear_error()
                self._outage_error = False
        problem = self.link.latest_problem()
        if "unreadable" in self._dirty and problem is not None:
            self.say(problem, error=True)  # once per new problem; the agent stays listed
        main.show_status(self._status())
        main.show_agents(self.link.agents())
        if "events" in self._dirty or self._rebuild_events:
            main.query_one(EventsTable).show(list(self.link.events), rebuild=self._rebuild_events)
            self._rebuild_events = False
        self._dirty.clear()

    @work(exclusive=True, group="discover")
    async def refresh_agents(self) -> None:
        await self._refresh()

    def _main(self) -> MainScreen | None:
        screens = [s for s in self.screen_stack if isinstance(s, MainScreen)]
        return screens[0] if screens else None

    def _banner(self) -> str | None:
        if self.link.down_since is None:
            return None
        since = time.monotonic() - self.link.down_since
        return f"NATS unreachable ({self.link.error}); reconnecting… {since:.0f} s"

    def _status(self) -> str:
        rows = self.link.agents()
        stale = sum(1 for r in rows if r.stale)
        parts = [
            f"ns {self.link.namespace}",
            self.link.url if self.link.connected else f"{self.link.url} (down)",
            f"{len(rows)} agents" + (f", {stale} silent" if stale else ""),
        ]
        if self.dry_run_calls:
            parts.append("calls: DRY-RUN")
        if self.read_only:
            parts.append("READ-ONLY")
        return "  ·  ".join(parts)

    # -- keys ----------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.read_only))

    def action_prompt(self, text: str = "") -> None:
        prompts = self.screen.query(CommandPrompt)
        if prompts:
            prompts.first().open(text)

    def action_filter(self) -> None:
        main = self._main()
        if main is not None and self.screen is main:
            self.action_prompt(f"filter {main.query_one(EventsTable).filter}".rstrip() + " ")

    def action_approvals(self) -> None:
        if not isinstance(self.screen, ApprovalsScreen):
            self.push_screen(ApprovalsScreen())

    def action_toggle_dry_run(self) -> None:
        self.dry_run_calls = not self.dry_run_calls
        self.say(f"calls from the prompt are {'dry runs' if self.dry_run_calls else 'real'}")

    def open_agent(self, agent: str) -> None:
        self.push_screen(AgentScreen(agent))

    def open_chain(self, correlation_id: str) -> None:
        self.push_screen(ChainScreen(correlation_id))

    def open_comparison(self, comparison: Comparison) -> None:
        self.push_screen(ComparisonScreen(comparison))

    def on_input_submitted(self, event: CommandPrompt.Submitted) -> None:
        if not isinstance(event.input, CommandPrompt):
            return
        event.stop()
        line = event.value.strip()
        event.input.action_close()
        # A line that broke something is not offered again by the up arrow.
        if line and self.run_line(line):
            self.typed.add(line)

    # -- the guard: no key and no typed line ends the console ------------------------------

    async def run_action(
        self,
        action: str | ActionParseResult,
        default_namespace: DOMNode | None = None,
        namespaces: Mapping[str, DOMNode] | None = None,
    ) -> bool:
        """Every key's action (bindings come through here), guarded."""
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except Exception as exc:
            self.failed(f"key action {action!r}", exc)
            return True

    def _handle_exception(self, error: Exception) -> None:
        # Textual ends the app on any unhandled error. A view's background I/O
        # (a worker) failing is not worth that: it is shown and the view stays.
        if isinstance(error, WorkerFailed) and self.is_running:
            self.failed("a background task", error.error)
            return
        # Anything else does end the console: the traceback goes to the log,
        # the terminal gets one line, and the exit status is non-zero.
        self.errors.write("the console stopped", error)
        super()._handle_exception(error)
        self._exit_renderables[:] = [
            Text(f"scanflow console stopped: {error!r}; traceback in {self.errors.path}")
        ]

    def failed(self, what: str, error: BaseException) -> None:
        """An unexpected failure: one line on the screen, the traceback in the log."""
        self.errors.write(what, error)
        self.say(f"{what} failed: {error!r} (traceback in {self.errors.path})", error=True)

    # -- commands ------------------------------------------------------------------------

    def say(self, text: str, *, error: bool = False) -> None:
        """Show a command's outcome on the current screen (or as a notification)."""
        if not self.is_running or not self.screen_stack:
            return  # a command that ends while the console closes has no one to tell
        text = redaction.redact(text)  # replies and errors may quote what agents hold
        self._outage_error = False  # this output replaces any earlier one
        show = getattr(self.screen, "show_output", None)
        if show is not None:
            show(text, error=error)
        else:
            self.notify(text, severity="error" if error else "information")

    def run_line(self, line: str, *, then: Callable[[], Any] | None = None) -> bool:
        """Run a typed command: local ones at once, the others in a worker.

        A mistake in the line is shown as an error. Returns ``False`` only if
        running it failed unexpectedly (shown, and logged with its traceback).
        """
        verb = None
        try:
            command = parse(line)
            verb = command.verb
            self._dispatch(command, then)
        except (CommandError, CallError) as exc:  # the line's mistake, not a failure
            self.say(error_text(verb, exc), error=True)
        except Exception as exc:
            self.failed(repr(line), exc)
            return False
        return True

    def _dispatch(self, command: Command, then: Callable[[], Any] | None) -> None:
        if command.verb in ACTING and self.read_only:
            raise CommandError("refused, the console is read-only")
        if command.verb == "quit":
            self.exit()
        elif command.verb == "help":
            self.action_help()
        elif command.verb == "approvals" or (
            command.verb in ("approve", "reject") and not command.words
        ):
            self.action_approvals()  # pick one there; y or n asks for the reason
        elif command.verb == "filter":
            self._filter(" ".join(command.words))
        else:
            self.remote(command, then)

    def _filter(self, text: str) -> None:
        main = self._main()
        try:
            wanted = EventFilter.parse(text)
        except ValueError as exc:
            self.say(str(exc), error=True)
            return
        if main is not None:
            main.query_one(EventsTable).filter = wanted
            main.show_filter(str(wanted))
            self._rebuild_events = True
        # Says so, which also replaces an error a wrong filter left on the line.
        self.say(f"events filtered by {wanted}" if str(wanted) else "events no longer filtered")

    @work(group="commands")
    async def remote(self, command: Command, then: Callable[[], Any] | None = None) -> None:
        """A command that talks to agents; its outcome (or error) goes to the output line."""
        try:
            text = await self.executor.run(command)
        except Exception as exc:
            self.say(error_text(command.verb, exc), error=True)
            self._outage_error = not self.link.connected
            return
        if text:
            self.say(text)
        self._dirty.add("agents")
        if then is not None:
            then()
