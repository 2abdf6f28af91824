"""The allow-list: which callers may call which actuators, checked by the receiving agent.

``settings.agent.allow`` maps an actuator to the names of the callers it
takes calls from. The most specific entry decides, in this order:
``<agent>.<actuator>``, ``<actuator>``, ``<agent>.*``, ``*``; an actuator with
no entry takes calls from anyone (the default, so an agent without the
setting behaves as before). A caller is the ``source`` of the call's envelope:
the calling agent's name, or ``client`` for people and scripts; ``*`` in the
list allows anyone.

The source is what the caller says it is. NATS permissions make it hold: a
NATS user per agent may publish only on the call subjects of the actuators it
is allowed (the security guide, docs/guides/security.md, has the server configuration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ANYONE = "*"


def allowed_callers(
    allow: Mapping[str, Sequence[str]], agent: str, actuator: str
) -> tuple[str, Sequence[str]] | None:
    """The entry that decides for ``agent``'s ``actuator``: (its key, its callers), or ``None``."""
    for key in (f"{agent}.{actuator}", actuator, f"{agent}.*", ANYONE):
        if key in allow:
            return key, allow[key]
    return None


def refusal(
    allow: Mapping[str, Sequence[str]], agent: str, actuator: str, caller: str
) -> str | None:
    """Why ``caller`` may not call ``agent``'s ``actuator``, or ``None`` if it may."""
    if not allow:
        return None
    entry = allowed_callers(allow, agent, actuator)
    if entry is None:
        return None
    key, callers = entry
    if ANYONE in callers or caller in callers:
        return None
    listed = ", ".join(callers) or "nobody"
    return f"caller '{caller}' is not allowed (agent.allow[{key!r}]: {listed})"
