"""History from the stream: filtered on the server, newest first, chains from the index."""

from __future__ import annotations

from datetime import UTC, datetime

from scanflow_agents import Agent, sensor
from scanflow_agents.testing import AgentHarness


class Counter(Agent):
    count = 0

    @sensor(every=3600.0)
    async def tick(self) -> dict[str, int]:
        self.count += 1
        return {"n": self.count}


class Other(Agent):
    @sensor(every=3600.0)
    async def tock(self) -> dict[str, bool]:
        return {"ok": True}


async def test_newest_records_after_filtering_and_chains(bus: str | None) -> None:
    async with AgentHarness(Counter(), Other(), nats_url=bus) as h:
        chains = []
        for _ in range(30):
            observation = await h.run_sensor("counter", "tick")
            assert observation is not None
            chains.append(observation.correlation_id)
        for _ in range(50):
            await h.run_sensor("other", "tock")
        await h.settle()  # stored before `middle`
        middle = datetime.now(UTC)
        await h.emit("custom.counter.note", {"text": "hello"}, source="counter")
        await h.settle()

        newest = await h.client.history(agent="counter", limit=5, newest=True)
        assert [r["payload"]["value"]["n"] for r in newest] == [26, 27, 28, 29, 30]
        oldest = await h.client.history(agent="counter", limit=5)
        assert [r["payload"]["value"]["n"] for r in oldest] == [1, 2, 3, 4, 5]

        chain = await h.client.history(correlation_id=chains[9], kinds=None)
        assert [(r["kind"], r["payload"]["value"]["n"]) for r in chain] == [("observation", 10)]
        assert await h.client.history(correlation_id="no.such id", kinds=None) == []

        every = await h.client.history(kinds=None, since=middle, limit=10)
        assert [r["topic"] for r in every] == ["custom.counter.note"]
        assert await h.client.history(kinds=["decision"], limit=10, newest=True) == []
