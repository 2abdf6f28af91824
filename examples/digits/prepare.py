"""Data preparation of the digits example: split sklearn's bundled digits (no download).

Writes ``digits.npz`` (train and test arrays) into the run's folder, where the
training step of the same run finds it. Options (``--name value``, as the
platform passes node parameters):

    --test-size 0.25   fraction of samples held out for evaluation
    --seed 0           shuffling seed
    --out PATH         where to write (default: $SCANFLOW_RUN_DIR/digits.npz, or ./digits.npz)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=args.test_size, random_state=args.seed, stratify=labels
    )
    out = args.out or Path(os.environ.get("SCANFLOW_RUN_DIR", ".")) / "digits.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)
    print(f"wrote {len(x_train)} training and {len(x_test)} test samples to {out}")


if __name__ == "__main__":
    main()
