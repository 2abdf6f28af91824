"""Cost of one sensor poll as an MLflow experiment grows from 1,000 to 10,000 runs.

Compares the incremental reader (``IncrementalRunReader.poll``: only what is
new) with the original Scanflow's way, a full ``search_runs`` over every page,
in the same process, against a real ``mlflow server`` started here.

At each size the experiment gets a few fresh runs (a sensor's interval worth of
work) before every measured poll; both readers see the same data. Runs are
back-dated one per minute, as a real history accumulates, and are created with
MLflow's ORM straight into the backend store to keep the bench short (see
``fill_history``); the runs added between polls go through the REST API.

Usage: ``python bench/mlflow_poll.py [--sizes 1000,2500,5000,10000] [--backend URI]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from scanflow_agents.knowledge import IncrementalRunReader, KnowledgeClient, MlflowServer
from scanflow_agents.settings import MlflowSettings

NEW_PER_POLL = 10
REPEATS = 5
NAIVE_REPEATS = 3
TAGS = {"scanflow.workflow": "mnist", "scanflow.node": "predict"}


async def add_runs(
    client: KnowledgeClient, experiment_id: str, count: int, start_ms: int, concurrency: int = 4
) -> None:
    """Create ``count`` finished runs with an ``accuracy`` metric, over REST."""
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            stamp = start_ms + i * 60_000
            run_id = await client.create_run(
                experiment_id, run_name=f"run-{stamp}", start_time=stamp, tags=TAGS
            )
            await client.log_batch(run_id, metrics=[("accuracy", 0.9, stamp, 0)])
            await client.end_run(run_id, end_time=stamp + 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def fill_history(backend_uri: str, experiment_id: str, count: int, start_ms: int) -> None:
    """Write ``count`` finished runs straight into the backend store, in bulk.

    Over REST a run takes three requests (about 35 runs/s here), so 10,000 runs
    would take five minutes. The history is written instead through MLflow's
    own ORM models in one transaction, as the server itself would store it;
    only the measured polls go through the server.
    """
    import uuid

    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(backend_uri, "unused")
    rows: list[object] = []
    for i in range(count):
        run_id, stamp = uuid.uuid4().hex, start_ms + i * 60_000
        rows.append(
            SqlRun(
                run_uuid=run_id,
                name=f"run-{stamp}",
                source_type="LOCAL",
                source_name="",
                entry_point_name="",
                user_id="bench",
                status="FINISHED",
                start_time=stamp,
                end_time=stamp + 1000,
                source_version="",
                lifecycle_stage="active",
                artifact_uri=f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                experiment_id=int(experiment_id),
            )
        )
        rows.extend(SqlTag(key=k, value=v, run_uuid=run_id) for k, v in TAGS.items())
        for model in (SqlMetric, SqlLatestMetric):
            rows.append(
                model(
                    key="accuracy",
                    value=0.9,
                    timestamp=stamp,
                    step=0,
                    is_nan=False,
                    run_uuid=run_id,
                )
            )
    with store.ManagedSessionMaker() as session:
        session.add_all(rows)
    store.engine.dispose()


async def naive_poll(client: KnowledgeClient, experiment_id: str) -> int:
    """What the original sensors did: read every run, every page."""
    total, token = 0, None
    while True:
        runs, token = await client.search_runs([experiment_id], page_token=token)
        total += len(runs)
        if not token:
            return total


async def measure(sizes: list[int], backend: str | None) -> None:
    async with (
        MlflowServer(backend) as server,
        KnowledgeClient(MlflowSettings(tracking_uri=server.url), workers=8) as client,
    ):
        experiment_id = await client.experiment_id("bench", create=True)
        assert experiment_id is not None
        reader = IncrementalRunReader(client, experiment_ids=[experiment_id], metrics=["accuracy"])
        # History is back-dated: one run per minute ending a little before now.
        now = int(time.time() * 1000)
        history_start = now - sizes[-1] * 60_000 - 3_600_000
        created, live = 0, now
        rows = []
        for size in sizes:
            began = time.monotonic()
            await asyncio.to_thread(
                fill_history,
                server.backend_store_uri,
                experiment_id,
                size - created,
                history_start + created * 60_000,
            )
            created = size
            await reader.poll()  # catch up: the reader has been running all along
            fill = time.monotonic() - began
            incremental = []
            for _ in range(REPEATS):
                await add_runs(client, experiment_id, NEW_PER_POLL, live)
                live += NEW_PER_POLL * 60_000
                t = time.perf_counter()
                poll = await reader.poll()
                incremental.append(time.perf_counter() - t)
                assert len(poll.runs) == NEW_PER_POLL, len(poll.runs)
            naive = []
            for _ in range(NAIVE_REPEATS):
                t = time.perf_counter()
                await naive_poll(client, experiment_id)
                naive.append(time.perf_counter() - t)
            created += REPEATS * NEW_PER_POLL
            rows.append((size, statistics.median(incremental), statistics.median(naive)))
            print(f"  {size:>6} runs ready (filled in {fill:.0f} s)", flush=True)

    print(f"\nOne poll, median; {NEW_PER_POLL} new runs per incremental poll")
    print(f"{'runs':>8} {'incremental ms':>16} {'naive full read ms':>20}")
    for size, inc, full in rows:
        print(f"{size:>8} {inc * 1000:>16.1f} {full * 1000:>20.1f}")
    first, last = rows[0], rows[-1]
    print(
        f"\nratio {last[0]}/{first[0]} runs: incremental {last[1] / first[1]:.2f}, "
        f"naive {last[2] / first[2]:.2f}"
    )


def main() -> None:
    """Parse arguments and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2500,5000,10000")
    parser.add_argument("--backend", default=None, help="backend store URI (default sqlite)")
    args = parser.parse_args()
    asyncio.run(measure([int(s) for s in args.sizes.split(",")], args.backend))


if __name__ == "__main__":
    main()
