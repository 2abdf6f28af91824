"""Split step of the wine example: the first vineyard's batches for training and testing.

Writes ``wine.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``; grades as
strings) into the run's folder, where the training step of the same run finds
it. Options: ``--seed 0`` (kept for the record: the split is fixed, see
``winedata.py``), ``--out PATH`` (default ``$SCANFLOW_RUN_DIR/wine.npz``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import winedata  # beside this file: a script's folder is on its path

from scanflow_agents import training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np

    data = winedata.splits()
    out = args.out or (training.context().run_dir or Path(".")) / "wine.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, x_train=data["x_train"], y_train=data["y_train"],
        x_test=data["x_held_out"], y_test=data["y_held_out"],
    )  # fmt: skip
    print(f"wrote {len(data['y_train'])} training and {len(data['y_held_out'])} test rows to {out}")


if __name__ == "__main__":
    main()
