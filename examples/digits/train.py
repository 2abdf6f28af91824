"""Training step of the digits example: fit a classifier, log it to MLflow, register it.

Reads the split ``prepare.py`` wrote into the run's folder (or splits the
bundled digits itself when run alone), trains a scikit-learn logistic
regression, logs parameters and test metrics to MLflow, and registers the model
under ``--registered-model``. The last line printed is JSON with the new
version, for people and for scripts; in a run it is also written to
``$SCANFLOW_RUN_DIR/candidate.json`` for the evaluation step.

MLflow is found through ``MLFLOW_TRACKING_URI``, which the platform sets; the
platform's run id, workflow and node (``SCANFLOW_RUN_ID``, ``SCANFLOW_WORKFLOW``,
``SCANFLOW_NODE``) become tags of the MLflow run, so agents can tell which
workflow produced it. Options (``--name value``):

    --max-iter 200          solver iterations
    --C 1.0                 inverse regularisation strength
    --samples 0             train on the first N training samples only (0: all)
    --registered-model digits
    --experiment digits
    --data PATH             default: $SCANFLOW_RUN_DIR/digits.npz when it exists
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def load_data(path: Path | None) -> dict[str, Any]:
    """The train/test split: from ``path`` if it exists, else made here."""
    import numpy as np

    if path is not None and path.exists():
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--registered-model", default="digits")
    parser.add_argument("--experiment", default="digits")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = os.environ.get("SCANFLOW_RUN_DIR")
    data_path = args.data or (Path(run_dir) / "digits.npz" if run_dir else None)

    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    data = load_data(data_path)
    x_train, y_train = data["x_train"], data["y_train"]
    if args.samples > 0:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    model = LogisticRegression(max_iter=args.max_iter, C=args.C)
    model.fit(x_train, y_train)
    predicted = model.predict(data["x_test"])

    tags = {
        tag: os.environ[variable]
        for tag, variable in (
            ("scanflow.run_id", "SCANFLOW_RUN_ID"),
            ("scanflow.workflow", "SCANFLOW_WORKFLOW"),
            ("scanflow.node", "SCANFLOW_NODE"),
        )
        if variable in os.environ
    }
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="train", tags=tags) as run:
        mlflow.log_params({"max_iter": args.max_iter, "C": args.C, "train_samples": len(x_train)})
        mlflow.log_metrics(
            {
                "accuracy": float(accuracy_score(data["y_test"], predicted)),
                "f1_macro": float(f1_score(data["y_test"], predicted, average="macro")),
                "test_samples": float(len(predicted)),
            }
        )
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=data["x_test"][:2],
            registered_model_name=args.registered_model,
            pip_requirements=["scikit-learn"],
        )
    result = {
        "registered_model": args.registered_model,
        "version": str(info.registered_model_version),
        "mlflow_run_id": run.info.run_id,
        "accuracy": round(float(accuracy_score(data["y_test"], predicted)), 4),
    }
    if run_dir:
        # The evaluation step of the same run reads which version to judge here.
        (Path(run_dir) / "candidate.json").write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
