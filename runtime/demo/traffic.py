"""Real HTTP traffic against the served model, and what each request did.

A bounded number of client tasks, each paced at a request rate. A client keeps
one keep-alive connection for a short session (``SESSION`` requests), then
sends the labels it knows for that session's predictions to ``/labels`` on the
same connection (the model server joins labels to predictions by id, and
each replica knows only its own predictions), closes it and connects again,
so replicas added by a scale-out get their share of new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from scanflow_agents.runtime.demo.scenario import Data, Phase

logger = logging.getLogger("scanflow_agents.runtime.demo")

#: Requests per connection before its labels are sent and it is replaced.
SESSION = 20
#: Seconds one HTTP exchange may take before it counts as failed.
REQUEST_TIMEOUT = 10.0


@dataclass
class Request:
    """One prediction request as the client saw it."""

    time: float  # epoch seconds when it was sent
    phase: str
    latency_ms: float
    status: int  # HTTP status; 0 when the connection failed
    prediction: int | None
    label: int
    labelled: bool  # whether its label was sent to /labels
    replica: str | None
    model_uri: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Connection:
    """A minimal HTTP/1.1 keep-alive client for JSON POSTs (no dependency needed)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
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
        except (OSError, asyncio.IncompleteReadError):
            await self.close()
            return await self._exchange(path, body)

    async def _exchange(self, path: str, body: Any) -> tuple[int, Any]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self._writer.write(head.encode() + data)
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await self._reader.readexactly(int(headers.get("content-length", "0")))
        self.used = True
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, json.loads(raw) if raw else None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self.used = False
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Traffic:
    """Sends the phases' requests to one service and keeps a record of each."""

    def __init__(self, url: str, data: Data, *, seed: int = 0, label_share: float = 0.6) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.data = data
        self.seed = seed
        self.label_share = label_share
        self.records: list[Request] = []
        self.labels_sent = 0
        self.labels_matched = 0
        self._phases = 0

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
            connection = Connection(self.host, self.port)
            pending: list[dict[str, Any]] = []
            try:
                for _ in range(SESSION):
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
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
                status, body = await connection.post("/predict", {"instances": [image.tolist()]})
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            logger.debug("demo request failed: %r", exc)
            status, body = 0, None
        latency = (time.perf_counter() - started) * 1000.0
        ok = status == 200 and isinstance(body, dict)
        first = body["predictions"][0] if ok else {}
        prediction = int(first["prediction"]) if ok else None
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
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            logger.debug("demo labels failed: %r", exc)
            return
        if status == 200 and isinstance(body, dict):
            self.labels_matched += int(body.get("matched", 0))
