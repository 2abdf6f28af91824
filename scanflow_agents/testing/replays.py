"""``assert_replays``: a test that an agent decides on its input alone, for users' CI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from scanflow_agents.agents import Agent
from scanflow_agents.replaying import Replay, check_determinism, replay

if TYPE_CHECKING:
    from scanflow_agents.knowledge import KnowledgeClient


async def assert_replays(
    agent: Agent,
    records: Iterable[Mapping[str, Any]],
    *,
    knowledge: KnowledgeClient | None = None,
) -> Replay:
    """Replay ``agent`` on its own recorded history; fail if any rule decides otherwise.

    ``records`` is a history the same agent recorded (``scanflow history
    --export``, a file kept beside the test, or ``Client.history(kinds=None)``).
    The assertion names each rule that decided otherwise on the same input,
    the first cause it did so on, and what in its code may be why. An agent
    that reads MLflow is given ``knowledge``, a client made with
    ``read_only=True`` (see :func:`~scanflow_agents.replaying.replay`).

    Returns:
        The replay, for further checks.
    """
    result = await replay(agent, list(records), knowledge=knowledge)
    found = check_determinism(agent, result)
    if found:
        lines = "\n".join(f"- {suspect}" for suspect in found)
        raise AssertionError(
            f"agent {agent.name!r} does not replay its own history:\n{lines}\n"
            "(a rule decides on its input and its agent's state only when it "
            "replays; read time from scanflow_agents.clocks, not the time module)"
        )
    return result
