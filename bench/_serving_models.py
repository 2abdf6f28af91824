"""Register the serving benchmark's digits models in an MLflow store; print where they are.

    python bench/_serving_models.py TRACKING_URI MODEL...

MODEL is ``logreg`` (a logistic regression) or ``forest`` (100 trees). Each is
registered as ``digits-<model>`` version 1, logged the way a training step of
this project logs one (``mlflow.sklearn.log_model`` with an input example). The
last line printed is JSON: for each model its ``models:/`` URI, and some test
rows for the requests.

A script of its own, run in a child process: MLflow and scikit-learn stay out
of the benchmark's own process, which only sends requests.
"""

from __future__ import annotations

import json
import sys


def main(tracking_uri: str, names: list[str]) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    features, labels = load_digits(return_X_y=True)
    train = slice(0, 1500)
    makers = {
        "logreg": lambda: LogisticRegression(max_iter=500),
        "forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
    }
    # MLflow stores scikit-learn models with skops, which loads only the types it
    # is told to trust: a forest's trees are one more than a linear model has.
    trusted = {"logreg": [], "forest": ["sklearn.tree._tree.Tree"]}
    models = {}
    for name in names:
        if name not in makers:
            raise SystemExit(f"unknown model {name!r}: use {', '.join(makers)}")
        model = makers[name]().fit(features[train], labels[train])
        registered = f"digits-{name}"
        with mlflow.start_run(run_name=registered):
            mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=features[:2],
                registered_model_name=registered,
                pip_requirements=["scikit-learn"],
                skops_trusted_types=trusted[name] or None,
            )
        models[name] = f"models:/{registered}/1"
    rows = features[1500:1700].tolist()
    print(json.dumps({"models": models, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
