"""What the one-shot commands share: settings, a connection, errors, tables and JSON.

Commands print a readable table by default and the raw data with ``--json``.
Errors become one line on stderr and exit status 1 (the ``scanflow`` group's
own error handling, in :mod:`.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from pydantic_core import to_jsonable_python

from scanflow_agents import BadMessage, CallError, Settings, redaction
from scanflow_agents._kit import loops
from scanflow_agents.transports import TransportError

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def settings_of(ctx: click.Context) -> Settings:
    """The settings of this invocation: built-in defaults, file, environment, options."""
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


def run_coroutine(
    coro_fn: Callable[[], Coroutine[Any, Any, T]], loop: loops.EventLoop = "asyncio"
) -> T:
    """Run a coroutine; call errors and connection problems become clean CLI errors."""
    try:
        return loops.run(coro_fn, loop)
    except loops.LoopUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except CallError as exc:
        field = f" (field: {exc.field})" if exc.field else ""
        raise click.ClickException(redaction.redact(f"{exc.code}: {exc.message}{field}")) from exc
    except (OSError, TimeoutError, TransportError) as exc:
        raise click.ClickException(redaction.redact(str(exc))) from exc


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """:func:`run_coroutine` for what will be shown: the result comes back masked.

    What agents send (descriptions, results, records) may quote URLs with
    credentials or secrets this process knows; they never reach the terminal.
    """
    shown: T = redaction.mask(run_coroutine(coro_fn))
    return shown


def echo_json(value: Any, *, indent: int | None = 2) -> None:
    # Models (heartbeats, descriptions, approvals) are written as they travel on the wire.
    data = to_jsonable_python(value, by_alias=True, fallback=str)
    click.echo(json.dumps(redaction.mask(data), indent=indent))


def echo_unreadable(error: BadMessage) -> None:
    """One line on stderr: whose answer is skipped, and why (the others are shown)."""
    click.echo(redaction.redact(f"skipped: {error.code}: {error.message}"), err=True)


R = TypeVar("R")
Column = tuple[str, Callable[[R], Any]]


def table(rows: Iterable[R], columns: Sequence[Column[R]], *, cut: int = 48) -> str:
    """A plain text table: one header line, columns padded, no cell longer than ``cut``."""
    cells = [[shorten(_cell(fn(row)), cut) for _, fn in columns] for row in rows]
    headers = [header for header, _ in columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = []
    for line in [headers, *cells]:
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
        lines.append(text.rstrip())
    return "\n".join(lines)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def ago(moment: datetime | str | None, now: datetime | None = None) -> str:
    """``12s``, ``5m``, ``3h`` since a time or an ISO time (``-`` if none)."""
    if not moment:
        return "-"
    seconds = ((now or datetime.now(UTC)) - _time(moment)).total_seconds()
    return duration(max(seconds, 0.0))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def clock(moment: datetime | str) -> str:
    """The time of day of a time or an ISO time, in UTC (``HH:MM:SS``)."""
    return _time(moment).astimezone(UTC).strftime("%H:%M:%S")


def _time(moment: datetime | str) -> datetime:
    return moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> datetime:
    """``30s``, ``10m``, ``2h``, ``1d`` ago, or an ISO time (UTC if it has no zone)."""
    unit = text[-1:].lower()
    if unit in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30s, 10m, 2h, 1d) nor an ISO time",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def summary(record: dict[str, Any]) -> str:
    """One line about what an event says (value, decision, call outcome...)."""
    payload = record.get("payload")
    kind = record.get("kind")
    if not isinstance(payload, dict):
        return _cell(payload)
    if kind == "observation":
        return _cell(payload.get("value"))
    if kind == "decision":
        return f"{payload.get('action')}: {payload.get('reason')}"
    if kind == "action":
        outcome = "ok" if payload.get("ok") else (payload.get("error") or {}).get("code", "failed")
        dry = " (dry-run)" if payload.get("dry_run") else ""
        return f"{outcome}{dry} {_cell(payload.get('params'))}"
    if kind == "failed":  # a decision's call, as its caller saw it fail
        error = payload.get("error") or {}
        return f"{payload.get('agent')}.{payload.get('actuator')}: {error.get('code')}"
    if kind == "control":
        bits = [f"{k}={_cell(v)}" for k, v in payload.items() if k not in ("instance", "details")]
        return " ".join(bits)
    return _cell(payload)


EVENT_COLUMNS: list[Column[dict[str, Any]]] = [
    ("TIME", lambda r: clock(r["time"])),
    ("KIND", lambda r: r["kind"]),
    ("AGENT", lambda r: r["agent"]),
    ("NAME", lambda r: r["name"]),
    ("WHAT", summary),
    ("CHAIN", lambda r: r["correlation_id"]),
]


def event_line(record: dict[str, Any]) -> str:
    """One event in fixed columns, for output that grows line by line (``events -f``)."""
    return (
        f"{clock(record['time'])}  {record['kind']:<11.11}  {record['agent']:<12.12}  "
        f"{record['name']:<16.16}  {shorten(summary(record), 48):<48}  {record['correlation_id']}"
    )
