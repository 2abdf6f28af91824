"""Log two small digits classifiers to an MLflow store and print their URIs as JSON.

Run as a script (``python digits_models.py <tracking-uri>``) so that MLflow's
import, its process-wide state and its third-party deprecation warnings stay out
of the pytest process; the model servers under test load these models the same
way they would load any registered model.
"""

from __future__ import annotations

import json
import sys


def main(tracking_uri: str) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    features, labels = load_digits(return_X_y=True)
    uris = {}
    # Version 1 sees few samples, version 2 many: they answer differently
    # often enough for a test to tell which one served a request.
    for version, samples in ((1, 60), (2, 1200)):
        model = LogisticRegression(max_iter=300).fit(features[:samples], labels[:samples])
        with mlflow.start_run(run_name=f"digits-v{version}"):
            mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=features[:2],
                registered_model_name="digits",
                pip_requirements=["scikit-learn"],
                # cloudpickle, not MLflow's default skops: loading skops imports
                # every scikit-learn estimator to build its trusted-type list,
                # seconds of each model server's start on a busy machine, and
                # dozens of servers start in the suite. The examples keep the
                # default, so skops models are served in the demo's tests.
                serialization_format="cloudpickle",
            )
        uris[f"v{version}"] = f"models:/digits/{version}"
    MlflowClient().set_registered_model_alias("digits", "production", "1")
    uris["production"] = "models:/digits@production"
    test_rows = features[1500:1520]
    print(
        json.dumps({"uris": uris, "rows": test_rows.tolist(), "labels": labels[1500:1520].tolist()})
    )


if __name__ == "__main__":
    main(sys.argv[1])
