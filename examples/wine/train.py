"""Training step of the wine example: fit a grade classifier, register it, hand it over.

Reads the split ``split.py`` wrote into the run's folder (``--data``; run
``split.py`` first when running it by hand), fits a random forest on named
columns, logs it to MLflow with its input schema (the model server then
takes ``{"rows": [{"acidity": ...}, ...]}``), registers it under
``--registered-model`` and hands the version over through the training
contract (``scanflow_agents.training``). Options:

    --data PATH             default: $SCANFLOW_RUN_DIR/wine.npz, else ./wine.npz
    --registered-model wine-quality
    --experiment wine
    --trees 50              trees in the forest
    --samples 0             train on the first N training rows only (0: all)
    --recent URI            recent labelled rows (recent.npz with x, y), a share held
                            out to compare the candidate with production
    --holdout 0.2           the share of recent rows held out (never trained on)
    --recent-weight 1       how many times each recent row counts in training (0: never)
    --seed 0

Besides the model, each run logs ``reference.npz`` (a sample of its training
inputs, for the checker) and, with ``--recent``, the candidate's and
production's accuracy on the held-out recent rows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from scanflow_agents import training


def load_split(path: Path) -> dict[str, Any]:
    """The train/test split ``split.py`` wrote (with the column names)."""
    import numpy as np

    if not path.exists():
        raise SystemExit(f"no split at {path}: run split.py first (or pass --data)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def load_recent(uri: str) -> tuple[Any, Any]:
    """The recent labelled rows: a local ``.npz`` or an MLflow artifact URI."""
    import numpy as np

    path = Path(uri)
    if not path.exists():
        import mlflow.artifacts

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    with np.load(path, allow_pickle=False) as data:
        return data["x"].astype(float), data["y"].astype(str)


def production_accuracy(uri: str, x: Any, y: Any, frame: Any) -> float | None:
    """How the model in production does on rows (None when nothing is in production)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException:
        return None
    return float((model.predict(frame(x)) == y).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--registered-model", default="wine-quality")
    parser.add_argument("--experiment", default="wine")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--recent", default=None)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--recent-weight", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    step = training.context()

    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    data = load_split(args.data or (step.run_dir or Path(".")) / "wine.npz")
    columns = [str(c) for c in data["columns"]]

    def frame(x: Any) -> Any:
        # Rows as a frame with the named columns: what the model server receives.
        return pd.DataFrame(x, columns=columns)

    x_fit, y_fit = data["x_train"], data["y_train"].astype(str)
    if args.samples > 0:
        x_fit, y_fit = x_fit[: args.samples], y_fit[: args.samples]
    scores: dict[str, float | None] = {}
    # The checker's reference is what the model is for: after a retraining, the
    # recent rows (what is being served now), else the training rows.
    reference = x_fit
    if args.recent:
        x_recent, y_recent = load_recent(args.recent)
        order = np.random.default_rng(args.seed).permutation(len(y_recent))
        cut = round(len(y_recent) * args.holdout)
        held, kept = order[:cut], order[cut:]
        reference = x_recent[kept]
        x_fit = np.concatenate([x_fit, *[x_recent[kept]] * args.recent_weight])
        y_fit = np.concatenate([y_fit, *[y_recent[kept]] * args.recent_weight])
    # A forest predicts one row in a few milliseconds on one core; gradient boosting's
    # OpenMP threads spun for seconds per request on a loaded 2-core machine.
    model = RandomForestClassifier(
        n_estimators=args.trees, min_samples_leaf=2, random_state=args.seed
    )
    model.fit(frame(x_fit), y_fit)
    test_accuracy = float((model.predict(frame(data["x_test"])) == data["y_test"]).mean())
    if args.recent:
        x_held, y_held = x_recent[held], y_recent[held]
        scores["recent_accuracy"] = float((model.predict(frame(x_held)) == y_held).mean())
        production = f"models:/{args.registered_model}@production"
        scores["production_recent_accuracy"] = production_accuracy(
            production, x_held, y_held, frame
        )

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="fit", tags=step.tags()) as run:
        mlflow.log_params({"trees": args.trees, "train_rows": len(y_fit)})
        mlflow.log_metric("accuracy", test_accuracy)
        with tempfile.TemporaryDirectory() as folder:
            index = np.random.default_rng(args.seed).permutation(len(reference))[:2000]
            path = Path(folder) / "reference.npz"
            np.savez_compressed(path, x=np.asarray(reference, dtype=float)[index])
            mlflow.log_artifact(str(path))
        example = frame(data["x_test"][:2])
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=example,
            signature=infer_signature(example, model.predict(example)),
            registered_model_name=args.registered_model,
            pip_requirements=["scikit-learn"],
            # MLflow's safe serialisation asks which types to trust when loading: the
            # forest's trees, which this step made itself.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    result = training.register_candidate(
        run.info.run_id,
        str(info.registered_model_version),
        recent_accuracy=scores.get("recent_accuracy"),
        production_recent_accuracy=scores.get("production_recent_accuracy"),
        record={"registered_model": args.registered_model, "accuracy": round(test_accuracy, 4)},
        step=step,
    )
    print(result)


if __name__ == "__main__":
    main()
