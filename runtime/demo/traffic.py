"""Real HTTP traffic against the served model, and what each request did.

A bounded number of client tasks, each paced at a request rate, through
aiohttp. A client keeps one keep-alive connection for a short session
(``SESSION`` requests), then sends the labels it knows for that session's
predictions to ``/labels`` on the same connection (the model server joins
labels to predictions by id, and each replica knows only its own
predictions), closes it and connects again, so replicas added by a scale-out
get their share of new connections.

The clients run on their own thread with their own event loop: the agents'
work on the demo's loop (a drift test, a burst of events) must not stall
them, or the latency they record would be the demo's, not the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import numpy as np
from scanflow_agents.runtime.demo.examples import ExampleData
from scanflow_agents.runtime.demo.scenario import Phase

logger = logging.getLogger("scanflow_agents.runtime.demo")

#: Requests per connection before its labels are sent and it is replaced.
SESSION = 20
#: Seconds one HTTP exchange may take before it counts as failed.
REQUEST_TIMEOUT = 10.0
#: What a failed exchange raises.
FAILURES = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


@dataclass
class Request:
    """One prediction request as the client saw it."""

    time: float  # epoch seconds when it was sent
    phase: str
    latency_ms: float
    status: int  # HTTP status; 0 when the connection failed
    prediction: Any  # the model's answer (an int digit, a string grade...); None if none
    label: Any
    labelled: bool  # whether its label was sent to /labels
    replica: str | None
    model_uri: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Connection:
    """One keep-alive connection for JSON POSTs (an aiohttp session of one connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None
        self.used = False  # whether an exchange completed on the current connection

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST ``body`` as JSON and return the status and the decoded answer.

        A kept-alive connection that the server closed meanwhile (a replica
        stopping in a rollout or a scale-in) is retried once on a new
        connection, as HTTP clients do; a fresh connection that fails is an error.
        """
        if not self.used:
            return await self._exchange(path, body)
        try:
            return await self._exchange(path, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            await self.close()
            return await self._exchange(path, body)

    async def _exchange(self, path: str, body: Any) -> tuple[int, Any]:
        if self._session is None:
            # One connection per session: the next session is a new connection, which
            # the kernel may hand to another replica.
            connector = aiohttp.TCPConnector(limit=1)
            self._session = aiohttp.ClientSession(self.url, connector=connector)
        async with self._session.post(path, json=body) as response:
            answer = await response.json(content_type=None)
            self.used = True
            return response.status, answer

    async def close(self) -> None:
        session, self._session = self._session, None
        self.used = False
        if session is not None:
            await session.close()


class Traffic:
    """Sends the phases' requests to one service and keeps a record of each."""

    def __init__(
        self, url: str, data: ExampleData, *, seed: int = 0, label_share: float = 0.6
    ) -> None:
        self.url = url
        self.data = data
        self.seed = seed
        self.label_share = label_share
        self.records: list[Request] = []
        self.labels_sent = 0
        self.labels_matched = 0
        self._phases = 0

    def start(self, phase: Phase) -> Playing:
        """Run ``phase``'s clients on their own thread and event loop until stopped."""
        return Playing(self, phase)

    async def run(self, phase: Phase, stop: asyncio.Event) -> None:
        """Run ``phase.clients`` paced clients until ``stop`` is set."""
        self._phases += 1
        async with asyncio.TaskGroup() as group:
            for index in range(phase.clients):
                rng = np.random.default_rng([self.seed, self._phases, index])
                group.create_task(self._client(phase, rng, stop), name=f"demo client {index}")

    async def _client(self, phase: Phase, rng: np.random.Generator, stop: asyncio.Event) -> None:
        interval = 1.0 / phase.rate
        # Clients start spread over one interval, not in lockstep.
        next_at = time.monotonic() + float(rng.uniform(0, interval))
        while not stop.is_set():
            connection = Connection(self.url)
            pending: list[dict[str, Any]] = []
            try:
                for _ in range(SESSION):
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(delay):
                                await stop.wait()
                    if stop.is_set():
                        break
                    # Paced, but a client that fell behind does not fire a burst to catch up.
                    next_at = max(next_at + interval, time.monotonic() - interval)
                    answer = await self._predict(connection, phase, rng)
                    if answer is None:
                        pending = []  # the connection failed: its labels are lost with it
                        break
                    if answer["labelled"]:
                        pending.append({"id": answer["id"], "label": answer["label"]})
                await self._labels(connection, pending)
            finally:
                await connection.close()

    async def _predict(
        self, connection: Connection, phase: Phase, rng: np.random.Generator
    ) -> dict[str, Any] | None:
        image, label = self.data.sampler(phase.pool, rng)
        labelled = bool(rng.random() < self.label_share)
        sent, started = time.time(), time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, body = await connection.post("/predict", self.data.body(image))
        except FAILURES as exc:
            logger.debug("demo request failed: %r", exc)
            status, body = 0, None
        latency = (time.perf_counter() - started) * 1000.0
        ok = status == 200 and isinstance(body, dict)
        first = body["predictions"][0] if ok else {}
        prediction = first["prediction"] if ok else None
        self.records.append(
            Request(
                time=sent,
                phase=phase.name,
                latency_ms=round(latency, 3),
                status=status,
                prediction=prediction,
                label=label,
                labelled=labelled and ok,
                replica=body.get("replica") if ok else None,
                model_uri=body.get("model_uri") if ok else None,
            )
        )
        if not ok:
            await connection.close()
            return None
        return {"id": str(first["id"]), "label": label, "labelled": labelled}

    async def _labels(self, connection: Connection, pending: list[dict[str, Any]]) -> None:
        if not pending:
            return
        self.labels_sent += len(pending)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, body = await connection.post("/labels", {"labels": pending})
        except FAILURES as exc:
            logger.debug("demo labels failed: %r", exc)
            return
        if status == 200 and isinstance(body, dict):
            self.labels_matched += int(body.get("matched", 0))


class Playing:
    """One phase's traffic on its own thread (see the module's docstring)."""

    def __init__(self, traffic: Traffic, phase: Phase) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, args=(traffic, phase), name=f"demo traffic {phase.name}", daemon=True
        )
        self._thread.start()
        self._ready.wait()

    def _main(self, traffic: Traffic, phase: Phase) -> None:
        async def run() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await traffic.run(phase, self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by stop(), not lost with the thread
            self.error = exc
        finally:
            self._ready.set()

    def done(self) -> bool:
        """Whether the clients ended (they only end when stopped, or on a failure)."""
        return not self._thread.is_alive()

    async def stop(self) -> None:
        """Stop the clients, wait for the thread, and raise what ended it badly, if anything."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(self._thread.join)
        if self.error is not None:
            raise RuntimeError(f"the demo's traffic failed: {self.error!r}") from self.error
