"""Take the console screenshots of the docs: real agents on a private NATS, the console headless.

Runs the quickstart agents and an approval gate, drives the console with
Textual's Pilot and saves the main view at 80x24 and at 160x45 as SVG
(``docs/console-80x24.svg``, ``docs/console-160x45.svg``); with ``cairosvg``
installed it also writes the README's PNGs (``docs/console*.png``).
Usage: ``python docs/screenshots.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from scanflow_agents.runtime.console.app import ConsoleApp
from scanflow_agents.runtime.console.widgets import AgentsTable
from textual.pilot import Pilot

from scanflow_agents import Settings
from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports.servers import NatsServer

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def main() -> None:
    quickstart = _module(ROOT / "examples" / "quickstart.py")
    gate = _module(ROOT / "examples" / "approval_gate.py")
    async with NatsServer() as server:
        base = Settings.defaults()
        settings = base.model_copy(
            update={
                "namespace": "demo",
                "nats": base.nats.model_copy(update={"url": server.url}),
                "agent": base.agent.model_copy(update={"heartbeat_interval": 1.0}),
            }
        )
        agents = [quickstart.LoadWatch(), quickstart.Scaler(), gate.Gate()]
        async with AgentHarness(
            *agents, nats_url=server.url, namespace="demo", schedule=True, settings=settings
        ):
            for size in ((80, 24), (160, 45)):
                await main_view(settings, size)
            if importlib.util.find_spec("cairosvg") is not None:
                await readme_pngs(settings)


def _console(settings: Settings) -> ConsoleApp:
    return ConsoleApp(settings, history_path=Path("/dev/null"), caller="operator")


async def _busy(app: ConsoleApp, pilot: Pilot[None]) -> None:
    """A few rounds of decisions, an approval held and a call refused before sending."""
    table = app.screen.query_one(AgentsTable)
    await eventually(lambda: table.row_count == 3, timeout=20)
    await pilot.press("colon", *"run-sensor gate candidate", "enter")
    await asyncio.sleep(6)  # a few rounds of load-watch → scaler decisions
    await pilot.press("colon", *"call scaler scale replicas=lots", "enter")
    await asyncio.sleep(1)


async def main_view(settings: Settings, size: tuple[int, int]) -> None:
    """The main view of a busy namespace, as SVG."""
    app = _console(settings)
    async with app.run_test(size=size) as pilot:
        await _busy(app, pilot)
        name = f"console-{size[0]}x{size[1]}.svg"
        app.save_screenshot(name, path=str(ROOT / "docs"))
        print(f"docs/{name}", file=sys.stderr)


async def readme_pngs(settings: Settings) -> None:
    app = _console(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await _busy(app, pilot)
        save(app, "console")
        await pilot.press("colon", *"describe load-watch", "enter")
        await asyncio.sleep(2)
        save(app, "console-agent")


def save(app: ConsoleApp, name: str) -> None:
    import cairosvg

    svg = app.export_screenshot(title="scanflow console")
    cairosvg.svg2png(bytestring=svg.encode(), write_to=str(ROOT / "docs" / f"{name}.png"))
    print(f"docs/{name}.png", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
