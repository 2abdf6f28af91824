"""Request bodies into model input: every form of MLflow's scoring protocol, and bad ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from scanflow_agents.serving.inputs import BadInput, parse

ROWS = [[1.0, 2.0], [3.0, 4.0]]
RECORDS = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": ROWS}},
        {"dataframe_records": RECORDS},
        {"instances": RECORDS},
        {"inputs": RECORDS},
        {"rows": RECORDS, "params": {"ignored": True}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances-records", "inputs-records", "rows"],
)
def test_tabular_forms_give_a_frame_and_its_numeric_columns(body: dict[str, Any]) -> None:
    batch = parse(body, None)

    assert isinstance(batch.model_input, pd.DataFrame)
    assert batch.columns == ["a", "b"]
    assert batch.rows.tolist() == ROWS


@pytest.mark.parametrize("form", ["instances", "inputs"])
def test_a_matrix_goes_to_a_tensor_model_as_an_array(form: str) -> None:
    batch = parse({form: ROWS}, None)

    assert isinstance(batch.model_input, np.ndarray)
    assert batch.columns == ["x0", "x1"]
    assert batch.rows.tolist() == ROWS


def test_a_matrix_goes_to_a_model_with_named_inputs_as_a_frame_of_those_names() -> None:
    batch = parse({"instances": [1.0, 2.0]}, ["a", "b"])  # one row, unnested

    assert list(batch.model_input.columns) == ["a", "b"]
    assert batch.rows.tolist() == [[1.0, 2.0]]


def test_text_columns_reach_the_model_but_not_the_numeric_summaries() -> None:
    batch = parse({"dataframe_records": [{"a": 1.0, "city": "Lyon"}]}, None)

    assert list(batch.model_input.columns) == ["a", "city"]
    assert batch.columns == ["a"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"x": 1}, "one of 'dataframe_split', 'dataframe_records', 'instances' or 'inputs'"),
        ([[1.0]], "got list"),
        ({"dataframe_split": [[1.0]]}, "'dataframe_split' must be an object with 'data'"),
        ({"dataframe_records": [[1.0]]}, "'dataframe_records' must be a list of objects"),
        ({"instances": [["a", "b"]]}, "'instances' is not a numeric matrix"),
        ({"inputs": [[[1.0]]]}, "'inputs' must be a matrix (a list of rows), got 3 dimensions"),
    ],
)
def test_bad_bodies_are_refused_with_what_to_send(body: Any, says: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse(body, None)
    assert says in str(refused.value)


def test_a_matrix_of_the_wrong_width_names_the_width_expected() -> None:
    with pytest.raises(BadInput, match="'instances': expected 3 features per row, got 2"):
        parse({"instances": ROWS}, ["a", "b", "c"])
