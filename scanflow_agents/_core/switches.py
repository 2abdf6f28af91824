"""The operator's switches of one agent replica: agent pause, sensor pauses, dry-run, freeze.

:class:`ControlState` holds all three, each with who set it, when and why. It
has one writer and several readers:

- the :class:`~scanflow_agents._core.controlling.Controller` changes it, and
  only on an operator's control message (``pause``, ``resume``, ``dry-run``,
  and ``freeze``, sent to every agent of the namespace and kept for the
  replicas that start later);
- the Reactor reads :meth:`ControlState.sensor_refusal` before every sensor
  run, the Dispatcher :meth:`ControlState.refusal`,
  :meth:`ControlState.freeze_refusal` and :meth:`ControlState.dry_run` on
  every call: function ports (``ports.py``),
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


# Frozen, and replaced on every change: a snapshot taken earlier keeps what
# it saw.
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
        frozen: every actuator of the namespace refuses to act while on.
    """

    paused: Switch
    sensors: Mapping[str, Switch]
    dry_run: Switch
    frozen: Switch

    @property
    def paused_sensors(self) -> list[str]:
        """The ids of the sensors paused now, sorted."""
        return sorted(sid for sid, switch in self.sensors.items() if switch.on)


class ControlState:
    """The operator's switches of one agent replica (see the module's docstring).

    Args:
        agent: the agent's name, in refusals.
        dry_run: dry-run at start (``settings.agent.dry_run``).
        shadow: the agent is a shadow (``settings.agent.shadow``): dry-run from
            start to end, which no operator switches off.
    """

    def __init__(self, agent: str, *, dry_run: bool = False, shadow: bool = False) -> None:
        started = utcnow()
        self._agent = agent
        self.shadow = shadow
        self._agent_pause = Switch(False, SETTINGS, started)
        self._sensor_pauses: dict[str, Switch] = {}
        reason = "a shadow agent (settings.agent.shadow) acts on nothing" if shadow else None
        self._dry_run_switch = Switch(dry_run or shadow, SETTINGS, started, reason)
        self._freeze_switch = Switch(False, SETTINGS, started)

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
        # The agent's pause first: it is the one to lift before any sensor's.
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        pause = self._sensor_pauses.get(sensor)
        return f"sensor '{sensor}' is paused: {pause.reason}" if pause and pause.on else None

    def freeze_refusal(self) -> str | None:
        """Why actions are refused now (the namespace is frozen), or ``None``.

        Reads still answer: an operator needs them most while frozen.
        """
        freeze = self._freeze_switch
        if not freeze.on:
            return None
        return (
            f"the namespace's actuators are frozen by {freeze.by}: {freeze.reason} "
            "(`scanflow unfreeze` lifts it)"
        )

    def dry_run(self) -> bool:
        """Whether actuators only validate, guard and record now."""
        return self._dry_run_switch.on

    def dry_run_refusal(self, on: bool) -> str | None:
        """Why dry-run cannot be switched to ``on`` now (a shadow stays in it), or ``None``."""
        if self.shadow and not on:
            return (
                f"agent '{self._agent}' is a shadow (settings.agent.shadow) and stays in "
                "dry-run; stop it, or run it without --shadow under a live name"
            )
        return None

    def snapshot(self) -> ControlSnapshot:
        """The switches now, as a frozen copy (for heartbeats and descriptions)."""
        return ControlSnapshot(
            paused=self._agent_pause,
            # A copy behind a read-only view: later pauses do not show through, and a
            # reader cannot write to it.
            sensors=MappingProxyType(dict(self._sensor_pauses)),
            dry_run=self._dry_run_switch,
            frozen=self._freeze_switch,
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
        # Kept as off rather than removed: descriptions still say who resumed it.
        self._sensor_pauses[sensor] = Switch(False, by, utcnow())

    def set_freeze(self, switch: Switch) -> None:
        """Freeze or thaw every actuator (as the namespace's switch says, who set it and when)."""
        self._freeze_switch = switch

    def set_dry_run(self, on: bool, *, by: str) -> None:
        """Switch dry-run for every actuator call from now on (calls under way keep theirs)."""
        self._dry_run_switch = Switch(on, by, utcnow())
