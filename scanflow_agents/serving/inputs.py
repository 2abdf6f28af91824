"""Request bodies into model input: MLflow's scoring protocol, and the server's own ``rows``.

A client written for ``mlflow models serve`` (or MLServer's ``/invocations``)
sends one of MLflow's four forms, and gets the same answer here:

- ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (pandas' ``split``);
- ``{"dataframe_records": [{"name": value, ...}, ...]}``;
- ``{"instances": [[...], ...]}`` or ``{"inputs": [[...], ...]}``: a numeric matrix,
  or a list of records.

``{"rows": [{"name": value, ...}, ...]}`` is a synonym of ``dataframe_records``.
Other keys (MLflow's ``params``) are ignored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The keys a body may carry its input in, in the order they are looked for.
FORMS = ("dataframe_split", "dataframe_records", "instances", "inputs", "rows")
_EXPECTED = (
    "expected a JSON object with one of 'dataframe_split', 'dataframe_records', "
    "'instances' or 'inputs' (MLflow's scoring protocol) or 'rows'"
)
_RECORDS = '[{"x0": 1.0, "x1": 2.0}]'


class BadInput(ValueError):
    """The request body cannot be turned into model input (HTTP 400)."""


@dataclass(frozen=True)
class Batch:
    """One request's input, for the model and for the input summaries."""

    model_input: Any  #: what the model's ``predict`` is given
    columns: list[str]  #: the names of the numeric features
    rows: np.ndarray  #: the numeric features, one row per prediction (rows x columns)


def parse(body: Any, input_names: list[str] | None) -> Batch:
    """Turn a decoded request body into a :class:`Batch`.

    Args:
        body: The decoded JSON body.
        input_names: The model's input column names, if its signature has them: a
            matrix is then given to the model as a frame with these columns.

    Raises:
        BadInput: Naming the accepted forms, or what is wrong with the one given.
    """
    form = next((key for key in FORMS if isinstance(body, dict) and key in body), None)
    if form is None:
        got = f"keys {sorted(body)[:5]}" if isinstance(body, dict) else type(body).__name__
        raise BadInput(f"{_EXPECTED}; got {got}")
    value = body[form]
    if form == "dataframe_split":
        return _split(value)
    if form in ("instances", "inputs") and not _records(value):
        return _matrix(form, value, input_names)
    if not _records(value):
        raise BadInput(f"'{form}' must be a list of objects (one per row), like {_RECORDS}")
    import pandas as pd

    return _frame(pd.DataFrame(value))


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _split(value: Any) -> Batch:
    import pandas as pd

    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise BadInput(
            "'dataframe_split' must be an object with 'data' (a list of rows) and "
            'optionally \'columns\', like {"columns": ["x0"], "data": [[1.0]]}'
        )
    try:
        frame = pd.DataFrame(value["data"], columns=value.get("columns"))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"'dataframe_split' does not make a table: {exc}") from None
    return _frame(frame)


def _frame(frame: Any) -> Batch:
    numeric = frame.select_dtypes("number")
    return Batch(frame, [str(c) for c in numeric.columns], numeric.to_numpy(dtype=float))


@functools.cache
def _names(width: int) -> list[str]:
    # Made once per width: the summaries key every request's columns by these.
    return [f"x{i}" for i in range(width)]


def _matrix(form: str, value: Any, input_names: list[str] | None) -> Batch:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"'{form}' is not a numeric matrix nor a list of objects: {exc}") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise BadInput(f"'{form}' must be a matrix (a list of rows), got {array.ndim} dimensions")
    if input_names and len(input_names) != array.shape[1]:
        raise BadInput(
            f"'{form}': expected {len(input_names)} features per row, got {array.shape[1]}"
        )
    names = input_names or _names(array.shape[1])
    if not input_names:
        return Batch(array, names, array)
    import pandas as pd

    # Column-based signatures want a frame with their names; tensor ones an array.
    return Batch(pd.DataFrame(array, columns=names), names, array)
