"""Training step of the digits example: fit a classifier, log it to MLflow, register it.

Reads the split ``prepare.py`` wrote into the run's folder (or splits the
bundled digits itself when run alone), trains a scikit-learn logistic
regression, logs parameters and test metrics to MLflow, and registers the model
under ``--registered-model``. The last line printed is JSON with the new
version, for people and for scripts; in a run it is also written to
``$SCANFLOW_RUN_DIR/candidate.json`` for the evaluation step.

MLflow is found through ``MLFLOW_TRACKING_URI``, which the platform sets. The
training contract (``scanflow_agents.training``) tags the MLflow run with the
platform's run id, workflow and node, and hands the registered version over as
the candidate the improver judges. Options (``--name value``):

    --model svc             svc (an RBF support-vector machine) or logistic
    --max-iter 200          solver iterations (logistic)
    --C 1.0                 inverse regularisation strength
    --samples 0             train on the first N training samples only (0: all)
    --registered-model digits
    --experiment digits
    --data PATH             default: $SCANFLOW_RUN_DIR/digits.npz when it exists
    --recent URI            recent labelled rows (``recent.npz`` with x, y; a path or an
                            MLflow artifact URI such as runs:/<id>/recent.npz): a share
                            is trained on, the rest held out to compare the candidate
                            with the model in production
    --holdout 0.3           the share of recent rows held out (never trained on)
    --recent-weight 3       how many times each recent row counts in training
    --production URI        the model to compare with (default models:/<model>@production)

Besides the model, each run logs ``reference.npz`` (a sample of its training
inputs: the checker tests served inputs against the reference of the version
being served) and, with ``--recent``, the metrics ``recent_accuracy`` (the
candidate) and ``production_recent_accuracy`` (the model in production), both
on the held-out recent rows. ``training.register_candidate`` tags the run with
the registered version, so agents find it from the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scanflow_agents import training


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


def load_recent(uri: str) -> tuple[Any, Any]:
    """The recent labelled rows: a local ``.npz`` or an MLflow artifact URI."""
    import numpy as np

    path = Path(uri)
    if not path.exists():
        import mlflow.artifacts

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    with np.load(path, allow_pickle=False) as data:
        return data["x"].astype(float), data["y"]


def split_recent(x: Any, y: Any, holdout: float, seed: int) -> tuple[Any, Any]:
    """``(held_out, kept)``: a seeded share of rows is never trained on."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(y))
    cut = round(len(y) * holdout)
    held, kept = order[:cut], order[cut:]
    return (x[held], y[held]), (x[kept], y[kept])


def production_accuracy(uri: str, x: Any, y: Any) -> float | None:
    """How the model in production does on the held-out rows (None if there is none yet)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from sklearn.metrics import accuracy_score

    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException:
        return None
    return float(accuracy_score(y, model.predict(x)))


def log_reference(x: Any, seed: int, rows: int = 2000) -> None:
    """Log a sample of the training inputs as ``reference.npz`` (the checker's reference)."""
    import tempfile

    import mlflow
    import numpy as np

    index = np.random.default_rng(seed).permutation(len(x))[:rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.npz"
        np.savez_compressed(path, x=np.asarray(x, dtype=float)[index])
        mlflow.log_artifact(str(path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("svc", "logistic"), default="svc")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--registered-model", default="digits")
    parser.add_argument("--experiment", default="digits")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--recent", default=None)
    parser.add_argument("--holdout", type=float, default=0.3)
    parser.add_argument("--recent-weight", type=int, default=3)
    parser.add_argument("--production", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_dir = training.context().run_dir
    data_path = args.data or (run_dir / "digits.npz" if run_dir else None)

    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.svm import SVC

    data = load_data(data_path)
    x_train, y_train = data["x_train"], data["y_train"]
    if args.samples > 0:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    held_out = None
    x_fit = x_train
    if args.recent:
        x_recent, y_recent = load_recent(args.recent)
        held_out, (x_fit, y_fit) = split_recent(x_recent, y_recent, args.holdout, args.seed)
        x_train = np.concatenate([x_train, *([x_fit] * args.recent_weight)])
        y_train = np.concatenate([y_train, *([y_fit] * args.recent_weight)])
    # An RBF support-vector machine: more accurate than a linear model on these
    # images, and quick to refit when a few hundred recent rows come in.
    if args.model == "svc":
        model: Any = SVC(C=args.C, gamma="scale")
    else:
        model = LogisticRegression(max_iter=args.max_iter, C=args.C)
    model.fit(x_train, y_train)
    predicted = model.predict(data["x_test"])
    metrics = {
        "accuracy": float(accuracy_score(data["y_test"], predicted)),
        "f1_macro": float(f1_score(data["y_test"], predicted, average="macro")),
        "test_samples": float(len(predicted)),
    }
    if held_out is not None:
        x_held, y_held = held_out
        metrics["recent_rows"] = float(len(x_train) - len(data["x_train"]))
        metrics["recent_holdout"] = float(len(y_held))
        metrics[training.RECENT_ACCURACY] = float(accuracy_score(y_held, model.predict(x_held)))
        production = args.production or f"models:/{args.registered_model}@production"
        baseline = production_accuracy(production, x_held, y_held)
        if baseline is not None:
            metrics[training.PRODUCTION_RECENT_ACCURACY] = baseline

    step = training.context()  # the platform's run id, workflow, node and run folder
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="train", tags=step.tags()) as run:
        mlflow.log_params(
            {
                "model": args.model,
                "max_iter": args.max_iter,
                "C": args.C,
                "train_samples": len(x_train),
            }
        )
        mlflow.log_metrics(metrics)
        # The reference is the distribution the model was made for: after a
        # retraining on recent rows, those rows (what is being served now).
        log_reference(x_fit if held_out is not None else x_train, args.seed)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=data["x_test"][:2],
            registered_model_name=args.registered_model,
            pip_requirements=["scikit-learn"],
        )
    # Agents find the version a run produced from the run itself; the evaluation
    # step of the same run reads it from the run folder.
    result = training.register_candidate(
        run.info.run_id,
        str(info.registered_model_version),
        record={
            "registered_model": args.registered_model,
            **{key: round(value, 4) for key, value in metrics.items()},
        },
        step=step,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
