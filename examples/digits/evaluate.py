"""Evaluation step of the digits example: compare the new version with production.

Reads ``candidate.json`` (written by ``train.py`` in the same run) and the
test split, scores the candidate and the version the alias points at (if
any) on the same held-out samples, logs both accuracies to the candidate's
MLflow run, and writes ``evaluation.json`` into the run's folder. It does not
promote: deciding is the improver's job (promote a candidate only if it beats
production), executing it the planner's (``promote``). Options:

    --alias production      the alias of the version to compare with
    --data PATH             default: $SCANFLOW_RUN_DIR/digits.npz when it exists
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="production")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = Path(os.environ.get("SCANFLOW_RUN_DIR", "."))
    candidate = json.loads((run_dir / "candidate.json").read_text())
    data_path = args.data or run_dir / "digits.npz"

    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with np.load(data_path) as data:
        features, labels = data["x_test"], data["y_test"]
    name = candidate["registered_model"]

    def accuracy(uri: str) -> float:
        model = mlflow.sklearn.load_model(uri)
        return float((model.predict(features) == labels).mean())

    try:
        production = str(MlflowClient().get_model_version_by_alias(name, args.alias).version)
    except MlflowException:
        production = None  # nothing promoted yet: the first candidate has no rival
    result = {
        "registered_model": name,
        "candidate": candidate["version"],
        "candidate_accuracy": round(accuracy(f"models:/{name}/{candidate['version']}"), 4),
        "alias": args.alias,
        "production": production,
        "production_accuracy": (
            round(accuracy(f"models:/{name}/{production}"), 4) if production else None
        ),
    }
    result["better"] = (
        result["production_accuracy"] is None
        or result["candidate_accuracy"] > result["production_accuracy"]
    )
    metrics = {"candidate_accuracy": result["candidate_accuracy"]}
    if result["production_accuracy"] is not None:
        metrics["production_accuracy"] = result["production_accuracy"]
    with mlflow.start_run(run_id=candidate["mlflow_run_id"]):
        mlflow.log_metrics(metrics)
    (run_dir / "evaluation.json").write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
