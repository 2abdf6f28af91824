"""The operator's switches of one agent replica: agent pause, sensor pauses, dry-run.

:class:`ControlState` holds all three, each with who set it, when and why. It
has one writer and several readers:

- the :class:`~scanflow_agents._core.controlling.Controller` changes it, and
  only on an operator's control message (``pause``, ``resume``, ``dry-run``);
- the Reactor reads :meth:`ControlState.sensor_refusal` before every sensor
  run, the Dispatcher :meth:`ControlState.refusal` and
  :meth:`ControlState.dry_run` on every call: function ports (``ports.py``),
  so neither can change what it reads;
- heartbeats and descriptions read :meth:`ControlState.snapshot`, a frozen copy.

Why one object: the three used to live in three places (the runtime, the
reactor, the dispatcher's settings) and the Controller changed them through
the runtime; each had two writers, and nothing said which change won or who
made it. ``tests/test_architecture.py`` fails if a module other than this one
assigns these fields, or one other than the Controller calls the mutators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from scanflow_agents.messages import utcnow

SETTINGS = "settings"
"""Who set a switch that no operator has changed since start: the settings tree."""


@dataclass(frozen=True)
class Switch:
    """One switch: on or off, who set it (a control message's caller), when, and why."""

    on: bool
    by: str
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class ControlSnapshot:
    """The switches at one moment; a copy, so reading it changes nothing.

    Attributes:
        paused: the agent's pause (sensors skip, calls are refused while on).
        sensors: the sensors an operator paused or resumed, by id.
        dry_run: actuators validate, guard and record without acting while on.
    """

    paused: Switch
    sensors: Mapping[str, Switch]
    dry_run: Switch

    @property
    def paused_sensors(self) -> list[str]:
        """The ids of the sensors paused now, sorted."""
        return sorted(sid for sid, switch in self.sensors.items() if switch.on)


class ControlState:
    """The operator's switches of one agent replica (see the module's docstring).

    Args:
        agent: the agent's name, in refusals.
        dry_run: dry-run at start (``settings.agent.dry_run``).
    """

    def __init__(self, agent: str, *, dry_run: bool = False) -> None:
        started = utcnow()
        self._agent = agent
        self._agent_pause = Switch(False, SETTINGS, started)
        self._sensor_pauses: dict[str, Switch] = {}
        self._dry_run_switch = Switch(dry_run, SETTINGS, started)

    # -- read (the ports of the Reactor and the Dispatcher) -------------------------------

    @property
    def paused(self) -> bool:
        """Whether the agent is paused."""
        return self._agent_pause.on

    def refusal(self) -> str | None:
        """Why the agent refuses calls and sensor runs now (paused), or ``None``."""
        pause = self._agent_pause
        return f"agent '{self._agent}' is paused: {pause.reason}" if pause.on else None

    def sensor_refusal(self, sensor: str) -> str | None:
        """Why sensor ``sensor`` does not run now (the agent or the sensor is paused)."""
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        pause = self._sensor_pauses.get(sensor)
        return f"sensor '{sensor}' is paused: {pause.reason}" if pause and pause.on else None

    def dry_run(self) -> bool:
        """Whether actuators only validate, guard and record now."""
        return self._dry_run_switch.on

    def snapshot(self) -> ControlSnapshot:
        """The switches now, as a frozen copy (for heartbeats and descriptions)."""
        return ControlSnapshot(
            paused=self._agent_pause,
            sensors=MappingProxyType(dict(self._sensor_pauses)),
            dry_run=self._dry_run_switch,
        )

    # -- write (the Controller only) ------------------------------------------------------

    def pause_agent(self, reason: str, *, by: str) -> None:
        """Pause the agent: sensors skip and calls are refused until :meth:`resume_agent`."""
        self._agent_pause = Switch(True, by, utcnow(), reason)

    def resume_agent(self, *, by: str) -> None:
        self._agent_pause = Switch(False, by, utcnow())

    def pause_sensor(self, sensor: str, reason: str, *, by: str) -> None:
        """Pause one sensor (its timed and event runs skip) until :meth:`resume_sensor`."""
        self._sensor_pauses[sensor] = Switch(True, by, utcnow(), reason)

    def resume_sensor(self, sensor: str, *, by: str) -> None:
        self._sensor_pauses[sensor] = Switch(False, by, utcnow())

    def set_dry_run(self, on: bool, *, by: str) -> None:
        """Switch dry-run for every actuator call from now on (calls under way keep theirs)."""
        self._dry_run_switch = Switch(on, by, utcnow())
