"""The planner's runs outlive it: records and chains in JetStream key-value, on a real NATS.

A planner starts a run and stops mid-run; a new planner on the same
namespace finds the run in the key-value bucket and sends its end event in
the chain of the call that started it. The run store also keeps its
contract on its own (put, get, unreported) on the in-memory bus and NATS.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from scanflow_agents.builtin.planner import Planner
from scanflow_agents.builtin.planner.runstore import KeyValueRunStore

from scanflow_agents import Settings
from scanflow_agents.platforms import RunRecord, RunStatus
from scanflow_agents.testing import AgentHarness
from scanflow_agents.transports import MemoryBroker, MemoryTransport
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.streams import StreamSpec
from scanflow_agents.workflows import load_workflow

SLEEPY = """
name: sleepy
team: vision
workflows:
  - name: nap
    nodes:
      - {name: doze, entry_point: doze.py}
      - {name: wake, entry_point: doze.py}
    edges: [[doze, wake]]
"""


def _settings(tmp_path: Path, application: Path) -> Settings:
    section: dict[str, Any] = {
        "local": {"base_dir": str(tmp_path / "local")},
        "applications": [str(application)],
        "store": False,
    }
    return Settings.defaults().model_copy(update={"agents": {"planner": section}})


@pytest.mark.nats
async def test_a_restarted_planner_sends_the_end_event_of_a_run_it_did_not_see_end(
    tmp_path: Path, nats_url: str
) -> None:
    (tmp_path / "doze.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "app.yaml").write_text(SLEEPY)
    settings = _settings(tmp_path, tmp_path / "app.yaml")
    namespace = f"restart-{uuid.uuid4().hex[:8]}"

    async with AgentHarness(
        Planner(), nats_url=nats_url, namespace=namespace, settings=settings
    ) as h:
        run_id = await h.call("planner", "run", workflow="nap")
        status = await h.call("planner", "run_status", run_id=run_id)
        assert status["state"] == "running"
    # The planner stopped mid-run; its child processes with it.

    async with AgentHarness(
        Planner(), nats_url=nats_url, namespace=namespace, settings=settings
    ) as h:
        await h.wait_for(
            lambda events: any(e["topic"] == "run.nap.cancelled" for e in events), timeout=20
        )
        [ended] = [e for e in h.events if e["topic"] == "run.nap.cancelled"]
        status = await h.call("planner", "run_status", run_id=run_id)

    assert ended["payload"]["run_id"] == run_id
    assert "closed while it ran" in ended["payload"]["message"]
    assert ended["causation_id"] is not None  # the chain of the call that started the run
    assert status["state"] == "cancelled"


@pytest.fixture
async def kv(bus: str | None) -> Any:
    if bus is None:
        yield MemoryTransport(MemoryBroker())
        return
    ns = uuid.uuid4().hex[:8]
    transport = await NatsTransport.connect(
        Settings.defaults().nats.model_copy(update={"url": bus}),
        streams=[StreamSpec(f"R{ns}", (f"r{ns}.events.>",))],
    )
    yield transport
    await transport.close()


async def test_the_key_value_store_keeps_the_run_store_contract(kv: Any) -> None:
    store = KeyValueRunStore(await kv.key_value(f"runs-{uuid.uuid4().hex[:8]}"))
    workflow = load_workflow({"name": "w", "nodes": [{"name": "a", "entry_point": "x.a"}]})
    record = RunRecord.of(RunStatus(run_id="w-1/odd id", workflow="w", nodes={}), "local", workflow)

    await store.put(record)
    assert (await store.get("w-1/odd id")) == record
    assert [r.status.run_id for r in await store.unreported("local")] == ["w-1/odd id"]
    assert await store.unreported("kubernetes") == []
    assert await store.get("other") is None

    record.reported = True
    await store.put(record)
    assert await store.unreported("local") == []
    assert (await store.get("w-1/odd id")).reported  # type: ignore[union-attr]
