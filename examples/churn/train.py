"""Training step of the churn model: fit, log, register, hand the version over."""

import argparse
import tempfile
from pathlib import Path
from typing import Any

from scanflow_agents import training

FEATURES = 6


def load_training_data(seed: int) -> tuple[Any, Any]:
    """Your data goes here. A synthetic stand-in keeps the tutorial self-contained."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4000, n_features=FEATURES, n_informative=4, random_state=seed
    )
    return x.astype(float), y.astype(int)


def load_recent(uri: str) -> tuple[Any, Any]:
    """The recent labelled rows the improver hands over (`recent.npz` with `x` and `y`)."""
    import mlflow.artifacts
    import numpy as np

    path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    with np.load(path, allow_pickle=False) as data:
        return data["x"].astype(float), data["y"].astype(int)


def production_accuracy(model_name: str, x: Any, y: Any) -> float | None:
    """How the model in production does on rows (None when nothing is in production)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        production = mlflow.pyfunc.load_model(f"models:/{model_name}@production")
    except MlflowException:
        return None
    return float((production.predict(x) == y).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the churn model.")
    parser.add_argument("--registered-model", default="churn")
    parser.add_argument("--experiment", default="churn")
    parser.add_argument("--recent", default=None, help="recent labelled rows (on a retraining)")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    step = training.context()  # what the platform told this step (None fields by hand)

    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_training_data(args.seed)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    reference = x_train
    scores: dict[str, float | None] = {}
    if args.recent:  # a retraining: learn from recent rows, judge on a held-out share
        x_recent, y_recent = load_recent(args.recent)
        x_kept, x_held, y_kept, y_held = train_test_split(
            x_recent, y_recent, test_size=args.holdout, random_state=args.seed
        )
        x_train, y_train = np.concatenate([x_train, x_kept]), np.concatenate([y_train, y_kept])
        reference = x_kept  # what the model is for now: the checker's new reference
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    if args.recent:
        scores["recent_accuracy"] = float((model.predict(x_held) == y_held).mean())
        scores["production_recent_accuracy"] = production_accuracy(
            args.registered_model, x_held, y_held
        )

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="train", tags=step.tags()) as run:
        mlflow.log_metric("accuracy", float((model.predict(x_test) == y_test).mean()))
        with tempfile.TemporaryDirectory() as folder:  # the checker's reference inputs
            path = Path(folder) / "reference.npz"
            np.savez_compressed(path, x=np.asarray(reference, dtype=float)[:2000])
            mlflow.log_artifact(str(path))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=x_test[:2],
            registered_model_name=args.registered_model,
            pip_requirements=["scikit-learn"],
        )
    print(
        training.register_candidate(
            run.info.run_id,
            str(info.registered_model_version),
            recent_accuracy=scores.get("recent_accuracy"),
            production_recent_accuracy=scores.get("production_recent_accuracy"),
            step=step,
        )
    )


if __name__ == "__main__":
    main()
