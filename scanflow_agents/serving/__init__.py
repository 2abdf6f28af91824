"""The built-in model server: an MLflow model behind HTTP, reporting what it sees.

Run one replica with::

    python -m scanflow_agents.serving --model-uri models:/digits@production \\
        --port 8080 --reuse-port --tracking-uri http://127.0.0.1:5000 \\
        --report-tracking-uri http://127.0.0.1:5000

``--tracking-uri`` is where the model is loaded from; reports go to an MLflow
server only if ``--report-tracking-uri`` names one.

Endpoints: ``POST /predict`` (MLflow's scoring protocol: ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs``, see
:mod:`scanflow_agents.serving.inputs`; each prediction gets an id),
``POST /labels`` (ground truth joined by id), ``GET /health`` (200 once the
model is loaded), ``GET /metrics`` (Prometheus), ``POST /activate`` (a
``--standby`` replica, loaded but listening on its admin port only, joins the
shared port). Every accepted connection has
``TCP_NODELAY`` set (see :func:`scanflow_agents.serving.server.listen`).
Serving reports go to NATS and MLflow (see :mod:`scanflow_agents.serving.reporting`),
each with the round trip of a probe of the replica's own listener
(:mod:`scanflow_agents.serving.probing`) and the service's latency objective.

Importing this package is light; FastAPI, uvicorn, numpy and MLflow load only
when a server starts. The process ends with status 0 on SIGTERM.
"""

from scanflow_agents.serving.config import ServingConfig

__all__ = ["ServingConfig"]
