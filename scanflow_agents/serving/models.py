"""Loading an MLflow model and turning request bodies into its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scanflow_agents.knowledge.registries import ModelRef
from scanflow_agents.serving.inputs import Batch, parse


@dataclass
class LoadedModel:
    """A pyfunc model with what the server needs to know about its input."""

    uri: str
    model: Any
    input_names: list[str] | None
    #: The registered version loaded (``models:/<name>/<version>``) when ``uri`` names a
    #: registered model, by version or through an alias (resolved when it loaded): what
    #: the replica really serves, whatever the alias says later. None for other URIs.
    version_uri: str | None = None

    def parse(self, body: Any) -> Batch:
        """Turn a decoded request body into model input (see :mod:`.inputs` for the forms).

        Raises:
            BadInput: Naming the accepted forms, or what is wrong with the one given.
        """
        return parse(body, self.input_names)

    def predict(self, model_input: Any) -> list[Any]:
        """Predict and return JSON-ready values, one per row."""
        output = self.model.predict(model_input)
        if hasattr(output, "to_numpy"):
            output = output.to_numpy()
        array = np.asarray(output)
        if array.ndim > 1 and array.shape[1] == 1:
            array = array[:, 0]
        return [_plain(v) for v in array.tolist()]


def load_model(uri: str, tracking_uri: str | None, registry_uri: str | None) -> LoadedModel:
    """Load ``uri`` as an MLflow pyfunc model (blocking; call it from a thread).

    The URIs are set process-wide: a model server is its own process with one
    model, so MLflow's global state is not shared with anything else here. An
    alias (``models:/<name>@<alias>``) is resolved first and that version is
    loaded, so the version reported is the one served even if the alias moves
    while the model loads.
    """
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    version_uri = None
    if (ref := ModelRef.parse(uri)) is not None and ref.alias:
        version = mlflow.MlflowClient().get_model_version_by_alias(ref.name, ref.alias)
        version_uri = ref.at(version.version)
    elif ref is not None:
        version_uri = str(ref)
    model = mlflow.pyfunc.load_model(version_uri or uri)
    names: list[str] | None = None
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names() and not schema.is_tensor_spec():
        names = list(schema.input_names())
    return LoadedModel(uri=uri, model=model, input_names=names, version_uri=version_uri)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
