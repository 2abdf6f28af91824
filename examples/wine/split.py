"""Split step of the wine example, and the example's data: lab measurements and grades.

One fixed synthetic data set (scikit-learn's ``make_classification``, seed 0,
8,000 batches): eight informative measurements with names, three grades as
strings, each grade in two clusters. It is cut in two regions by the first
measurement (``acidity``): the first vineyard's batches (``acidity < 0``) are
what the first model trains on; a new vineyard's batches lie on the other
side. That is a covariate shift: the inputs move, the rule from measurements
to grade stays, but a tree model trained on one region guesses in the other
(a random forest: 0.93 → 0.65 accuracy; retrained with 2,000 rows of the new
region, 0.92 there).

Splits, all fixed (the demo's seed only orders its traffic; the demo imports
``splits`` from here):

- ``train``: 60 % of the first region (what the first model fits);
- ``clean``: 10 % of it, sent as traffic before the shift;
- ``held_out``: 30 % of it, never sent (the first model's accuracy before the shift);
- ``drifted_eval``: 1,000 batches of the new region, never sent;
- ``drifted``: the rest of the new region, sent as traffic after the shift.

As a step, it writes ``wine.npz`` (``x_train``, ``y_train``, ``x_test``
(the held-out split), ``y_test``, ``columns``; grades as strings) into the
run's folder, where the training step of the same run finds it. Options:
``--out PATH`` (default ``$SCANFLOW_RUN_DIR/wine.npz``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scanflow_agents import training

COLUMNS = ("acidity", "sugar", "sulphates", "alcohol", "density", "ph", "chlorides", "color")
GRADES = ("low", "medium", "high")
HELD_OUT_DRIFTED = 1000


def generate() -> tuple[Any, Any]:
    """All 8,000 batches: measurements (float rows, ``COLUMNS``) and grades (strings)."""
    import numpy as np
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=8000,
        n_features=len(COLUMNS),
        n_informative=5,
        n_redundant=1,
        n_classes=len(GRADES),
        n_clusters_per_class=2,
        class_sep=1.2,
        flip_y=0.01,
        random_state=0,
    )
    return np.round(x, 4), np.asarray(GRADES)[y]


def splits() -> dict[str, Any]:
    """The named splits (see the module's docstring) as ``x_<name>`` and ``y_<name>`` arrays."""
    import numpy as np

    x, y = generate()
    first = x[:, 0] < 0
    order = np.random.default_rng(0).permutation(int(first.sum()))
    xa, ya = x[first][order], y[first][order]
    cut_train, cut_clean = int(len(ya) * 0.6), int(len(ya) * 0.7)
    xb, yb = x[~first], y[~first]
    return {
        "x_train": xa[:cut_train], "y_train": ya[:cut_train],
        "x_clean": xa[cut_train:cut_clean], "y_clean": ya[cut_train:cut_clean],
        "x_held_out": xa[cut_clean:], "y_held_out": ya[cut_clean:],
        "x_drifted_eval": xb[:HELD_OUT_DRIFTED], "y_drifted_eval": yb[:HELD_OUT_DRIFTED],
        "x_drifted": xb[HELD_OUT_DRIFTED:], "y_drifted": yb[HELD_OUT_DRIFTED:],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np

    data = splits()
    out = args.out or (training.context().run_dir or Path(".")) / "wine.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, x_train=data["x_train"], y_train=data["y_train"],
        x_test=data["x_held_out"], y_test=data["y_held_out"], columns=np.asarray(COLUMNS),
    )  # fmt: skip
    print(f"wrote {len(data['y_train'])} training and {len(data['y_held_out'])} test rows to {out}")


if __name__ == "__main__":
    main()
