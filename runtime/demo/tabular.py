"""The wine example's data for the demo: pools of lab measurements with their grades.

The pools are the example's own fixed splits (its ``split.py``, shipped with the
example): the first vineyard's batches for clean traffic, the new vineyard's
for drifted traffic, and two sets never sent (the quality bar). A batch sent as
traffic is a pool row with small measurement noise (``JITTER`` of a feature's
spread), so the same batch never arrives twice as the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from scanflow_agents.runtime.demo.scenario import Pool

#: Measurement noise of a sent batch, as a share of each feature's standard deviation.
JITTER = 0.05


@dataclass(frozen=True)
class WineData:
    """The demo's pools of the wine example (rows of ``columns``, grades as strings)."""

    columns: tuple[str, ...]
    x_clean: np.ndarray
    y_clean: np.ndarray
    x_drifted: np.ndarray
    y_drifted: np.ndarray
    x_held_out: np.ndarray
    y_held_out: np.ndarray
    x_drifted_eval: np.ndarray
    y_drifted_eval: np.ndarray
    spread: np.ndarray

    @classmethod
    def load(cls, seed: int = 0) -> WineData:
        """The example's splits; ``seed`` only orders the traffic (the split is fixed)."""
        import importlib

        import numpy as np

        # The example is a folder of scripts shipped as a package; its split step
        # defines the data. Imported by name: the type checker sees the example as
        # the files of examples/, not as this package.
        split = importlib.import_module("scanflow_agents.runtime.demo.wine.split")
        data = split.splits()
        return cls(
            columns=tuple(split.COLUMNS),
            x_clean=data["x_clean"], y_clean=data["y_clean"],
            x_drifted=data["x_drifted"], y_drifted=data["y_drifted"],
            x_held_out=data["x_held_out"], y_held_out=data["y_held_out"],
            x_drifted_eval=data["x_drifted_eval"], y_drifted_eval=data["y_drifted_eval"],
            spread=np.asarray(data["x_train"]).std(axis=0),
        )  # fmt: skip

    def sampler(self, pool: Pool, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        """One request's measurements and their true grade from ``pool``."""
        x, y = (self.x_clean, self.y_clean) if pool == "clean" else (self.x_drifted, self.y_drifted)
        i = int(rng.integers(len(y)))
        return x[i] + rng.normal(0.0, JITTER, x.shape[1]) * self.spread, str(y[i])

    def body(self, row: np.ndarray) -> dict[str, Any]:
        """The request body: one row by column name."""
        return {
            "rows": [{name: round(float(v), 5) for name, v in zip(self.columns, row, strict=True)}]
        }
