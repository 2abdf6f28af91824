"""The namespace's action budget: one count across every agent, exact under races."""

from __future__ import annotations

import asyncio

import pytest

from scanflow_agents import Agent, Rejected, Settings, Unavailable, actuator
from scanflow_agents._core.budgets import ActionBudget
from scanflow_agents.testing import AgentHarness

# Window 1 of a 3,600 s budget: the tests set the budget's clock, so no real
# window edge can fall inside a test.
IN_WINDOW = 3600.0 + 10.0


class Scaler(Agent):
    name = "scaler"

    def __init__(self) -> None:
        super().__init__()
        self.done: list[int] = []

    @actuator()
    async def scale(self, replicas: int) -> int:
        """Scale.

        Args:
            replicas: how many.
        """
        self.done.append(replicas)
        return replicas

    @actuator(read_only=True)
    async def status(self) -> int:
        """How many now."""
        return len(self.done)


class Trainer(Scaler):
    name = "trainer"


def budgeted(limit: int) -> Settings:
    defaults = Settings.defaults()
    agent = defaults.agent.model_copy(update={"action_budget": limit})
    return defaults.model_copy(update={"agent": agent})


def on_clock(h: AgentHarness, seconds: float) -> None:
    """Every agent's budget reads ``seconds`` as the wall clock."""
    for agent in h.agents.values():
        budget = agent.runtime.dispatcher.budget
        assert isinstance(budget, ActionBudget)
        budget.clock = lambda: seconds


async def test_one_budget_is_spent_by_every_agent_of_the_namespace(bus: str | None) -> None:
    scaler, trainer = Scaler(), Trainer()
    async with AgentHarness(scaler, trainer, nats_url=bus, settings=budgeted(3)) as h:
        on_clock(h, IN_WINDOW)
        await h.call("scaler", "scale", replicas=2)
        await h.call("trainer", "scale", replicas=3)
        # Neither a dry run nor a read takes from it.
        await h.call("trainer", "scale", {"replicas": 9}, dry_run=True)
        assert await h.call("scaler", "status") == 1
        await h.call("scaler", "scale", replicas=4)
        with pytest.raises(Rejected, match=r"action budget is spent \(3 actions per 3600 s"):
            await h.call("trainer", "scale", replicas=5)
        assert (scaler.done, trainer.done) == ([2, 4], [3])
        assert await h.call("scaler", "status") == 2  # reads still answered
        # The refusal is on record, as every refused call is.
        await h.settle()
        refused = [c for c in h.calls("trainer", "scale") if not c["ok"]]
        assert "budget is spent" in refused[0]["error"]["message"]
        # The next window: the budget again.
        on_clock(h, IN_WINDOW + 3600)
        assert await h.call("trainer", "scale", replicas=5) == 5


async def test_racing_replicas_spend_the_budget_exactly(bus: str | None) -> None:
    agents = [Scaler(), Trainer()]
    async with AgentHarness(*agents, nats_url=bus, settings=budgeted(7)) as h:
        on_clock(h, IN_WINDOW)

        async def call(agent: str, n: int) -> bool:
            try:
                await h.call(agent, "scale", replicas=n)
                return True
            except Rejected:
                return False

        answers = await asyncio.gather(
            *(call(agent, n) for n in range(10) for agent in ("scaler", "trainer"))
        )
        assert sum(answers) == 7
        assert sum(len(agent.done) for agent in agents) == 7


async def test_a_budget_that_cannot_be_checked_refuses_to_act(nats_url: str) -> None:
    scaler = Scaler()
    async with AgentHarness(scaler, nats_url=nats_url, settings=budgeted(3)) as h:
        budget = scaler.runtime.dispatcher.budget
        assert isinstance(budget, ActionBudget)
        budget.bucket = "no such bucket"  # a bucket that cannot be opened, as when NATS is away
        with pytest.raises(Unavailable, match="cannot check the namespace's action budget"):
            await h.call("scaler", "scale", {"replicas": 2}, timeout=1)
        assert scaler.done == []
