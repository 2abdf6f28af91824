"""The planner's run records in JetStream key-value, so a restarted planner finds its runs.

The platforms keep runs through a small protocol
(:class:`scanflow_agents.platforms.RunStore`) and know nothing of NATS; the
planner, which has the connection, gives them this one. Records live in the
bucket ``KV_<bucket>`` (one key per run, ``run.<id>``) plus an index key
listing the runs not yet reported, which is what a restarted planner reads.

Only one planner writes at a time: the chart and the Kubernetes platform
run the planner as one replica with the ``Recreate`` strategy (the old pod
is gone before the new one starts), since the lease of leader election
gates sensors and rules, not actuator calls or the following of runs. Two
planners that overlapped anyway could each rewrite the index; a run dropped
from it is still readable by id, and its end event is then sent by the
planner that follows it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scanflow_agents.platforms import RunRecord
from scanflow_agents.transports import KeyValue

INDEX = "index"
_UNSAFE = re.compile(r"[^-_=.a-zA-Z0-9]")


class KeyValueRunStore:
    """A run store on a key-value bucket (JetStream KV on NATS).

    Args:
        kv: The bucket (``await agent.key_value(name)``); one per planner
            deployment and namespace.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @staticmethod
    def key(run_id: str) -> str:
        """The key of a run's record (characters KV keys do not allow become ``_``)."""
        return "run." + _UNSAFE.sub("_", run_id)

    async def put(self, record: RunRecord) -> None:
        """Store the record, then keep the index of unreported runs up to date."""
        run_id = record.status.run_id
        await self.kv.put(self.key(run_id), record.model_dump_json().encode())
        index = await self._index()
        if record.reported and run_id in index:
            index.remove(run_id)
        elif not record.reported and run_id not in index:
            index.append(run_id)
        else:
            return
        await self.kv.put(INDEX, json.dumps(index).encode())

    async def get(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id``, or None."""
        entry = await self.kv.get(self.key(run_id))
        return None if entry is None else RunRecord.model_validate_json(entry.value)

    async def unreported(self, platform: str) -> list[RunRecord]:
        """The unreported records of ``platform``, in the order the runs started."""
        found = []
        for run_id in await self._index():
            record = await self.get(run_id)
            if record is not None and record.platform == platform and not record.reported:
                found.append(record)
        return found

    async def _index(self) -> list[str]:
        entry = await self.kv.get(INDEX)
        value: Any = json.loads(entry.value) if entry is not None and entry.value else []
        return [str(v) for v in value] if isinstance(value, list) else []
