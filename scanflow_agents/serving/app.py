"""The HTTP interface of the model server (FastAPI)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from scanflow_agents._kit.tasks import guarded
from scanflow_agents.serving import prometheus
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.inputs import BadInput
from scanflow_agents.serving.models import LoadedModel, load_model
from scanflow_agents.serving.reporting import Reporter
from scanflow_agents.serving.stats import ServingStats

logger = logging.getLogger(__name__)


@dataclass
class ServerState:
    """What the endpoints share: the model once loaded, the counters, the rotation.

    ``active`` is False for a standby replica until ``activate`` (set by the
    server) has opened the shared port.
    """

    config: ServingConfig
    model: LoadedModel | None = None
    load_error: str | None = None
    stats: ServingStats = field(default_factory=ServingStats)
    active: bool = True
    activate: Callable[[], Awaitable[None]] | None = None
    activating: asyncio.Lock = field(default_factory=asyncio.Lock)
    frozen_objects: int = 0  #: objects frozen out of the collector's way once loaded


def create_app(state: ServerState) -> FastAPI:
    """Build the app that serves ``state.model`` (loaded at startup if not yet).

    Args:
        state: The config, counters and (possibly already loaded) model.
    """
    config = state.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if state.model is None:
            # Loading takes seconds; /health answers 503 meanwhile instead of
            # the process looking dead to a prober.
            loading = guarded(_load(state), name=f"load model {config.model_uri}", logger=logger)

        def served() -> str | None:
            return state.model.version_uri if state.model is not None else None

        async with Reporter(config, state.stats, served, active=lambda: state.active):
            yield
        if loading is not None and not loading.done():
            loading.cancel()

    app = FastAPI(title="Scanflow model server", lifespan=lifespan)

    @app.get("/health")
    async def health() -> Response:
        body = {
            "ready": state.model is not None,
            "active": state.active,
            "model_uri": config.model_uri,
            "replica": config.replica,
            "error": state.load_error,
            "heap_frozen_objects": state.frozen_objects,
        }
        return JSONResponse(body, status_code=200 if state.model is not None else 503)

    @app.post("/activate")
    async def activate() -> Response:
        # Serialised: two calls must not open the shared port twice.
        async with state.activating:
            changed = not state.active
            if changed:
                if state.model is None or state.activate is None:
                    return JSONResponse({"error": "model not loaded yet"}, status_code=503)
                await state.activate()
                state.active = True
        return JSONResponse({"active": True, "changed": changed, "replica": config.replica})

    @app.get("/metrics")
    async def metrics() -> Response:
        labels = {"workflow": config.workflow, "node": config.node, "replica": config.replica}
        text = prometheus.render(
            state.stats, labels=labels, model_uri=config.model_uri, ready=state.model is not None
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        response = await _predict(state, request)
        state.stats.record_request("/predict", response.status_code, time.perf_counter() - started)
        return response

    async def labels(request: Request) -> Response:
        started = time.perf_counter()
        response = await _labels(state, request)
        state.stats.record_request("/labels", response.status_code, time.perf_counter() - started)
        return response

    # Plain routes: they read the request themselves, so FastAPI's per-request
    # dependency solving and validation would be work for nothing on the hot path.
    app.router.add_route("/predict", predict, methods=["POST"])
    app.router.add_route("/labels", labels, methods=["POST"])
    return app


def install(state: ServerState, model: LoadedModel) -> None:
    """Serve ``model`` from now on, with the heap as it is now frozen.

    A full collection walks every object the collector tracks, and a loaded
    model with MLflow, pandas and scikit-learn is about 250,000 of them: under
    load that was a pause of 130-190 ms every few seconds, the slowest requests
    by far. Frozen (``gc.freeze``), they are never scanned again; what requests
    allocate from now on is collected as before.
    """
    gc.collect()  # garbage of the load itself is freed, not frozen
    gc.freeze()
    # Counted once: get_freeze_count() walks the whole frozen list (about 20 ms).
    state.frozen_objects = gc.get_freeze_count()
    state.model = model


async def _load(state: ServerState) -> None:
    config = state.config
    try:
        model = await asyncio.to_thread(
            load_model, config.model_uri, config.tracking_uri, config.registry_uri
        )
        install(state, model)
    except Exception as exc:
        state.load_error = f"{type(exc).__name__}: {exc}"
        logger.exception(
            "model server %s: cannot load model %s; /health stays 503",
            config.replica,
            config.model_uri,
        )


async def _predict(state: ServerState, request: Request) -> Response:
    model = state.model
    if model is None:
        return _json({"error": "model not loaded yet"}, 503)
    try:
        batch = model.parse(orjson.loads(await request.body()))
    except BadInput as exc:
        return _json({"error": str(exc)}, 400)
    except orjson.JSONDecodeError:
        return _json({"error": "body is not JSON"}, 400)
    try:
        if len(batch.rows) <= state.config.inline_rows:
            # A few rows of a small model take less time than the hand-off to a
            # thread and back (and threads then contend for the GIL under load).
            predictions = model.predict(batch.model_input)
        else:
            # Off the event loop: a big batch or a slow model must not stall
            # health checks and the requests of other clients.
            predictions = await run_in_threadpool(model.predict, batch.model_input)
    except Exception as exc:
        logger.exception("model server %s: prediction failed", state.config.replica)
        return _json({"error": f"prediction failed: {type(exc).__name__}: {exc}"}, 500)
    ids = [uuid.uuid4().hex for _ in predictions]
    state.stats.record_predictions(ids, batch.columns, batch.rows, predictions)
    return _json(
        {
            "model_uri": model.uri,
            "replica": state.config.replica,
            "predictions": [
                {"id": i, "prediction": p} for i, p in zip(ids, predictions, strict=True)
            ],
        }
    )


def _json(body: Any, status: int = 200) -> Response:
    # orjson: the prediction path's answer in one C pass, several times cheaper than
    # the standard library's encoder that JSONResponse uses.
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, media_type="application/json")


async def _labels(state: ServerState, request: Request) -> Response:
    try:
        body: Any = await request.json()
        items = [(str(item["id"]), item["label"]) for item in body["labels"]]
    except (ValueError, KeyError, TypeError):
        return JSONResponse(
            {"error": 'expected {"labels": [{"id": <prediction id>, "label": <value>}]}'},
            status_code=400,
        )
    matched, unknown = state.stats.record_labels(items)
    return JSONResponse({"matched": matched, "unknown": unknown, "replica": state.config.replica})
