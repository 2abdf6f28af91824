"""The demo's data and its phases: what traffic is sent when.

The data is scikit-learn's bundled digits (no download), split exactly as the
example's ``prepare.py`` splits it (a quarter held out, stratified, seed 0), so
the first model never trains on what the demo sends as clean traffic:

- **training split**: what the first training uses (never sent clean);
- **clean pool**: a third of the test split (150 images), sent as they are;
- **held-out set**: the other two thirds (300 images), never sent in any form:
  the quality bar judges the model before the drift on them as they are, and
  the retrained one on their drifted copies (each image corrupted
  ``EVAL_COPIES`` times, with the demo's seed);
- **drifted traffic**: fresh corruptions of the training and clean-pool images,
  the way MNIST-C corrupts MNIST: each image is rotated (about 20 degrees) and
  gets Gaussian pixel noise. The same digit never arrives twice as the same
  pixels, but digits the first model trained on do come back rotated: what the
  loop retrains on is the corrupted look, not new digits.

Everything is seeded: the same seed gives the same pools and the same request
sequence per client (timing aside).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    # numpy loads with the demo, not with the CLI that only lists the parts.
    import numpy as np

#: Rotation in degrees (mean and spread per image) and pixel noise (std, on the 0-16 scale).
# Strong enough to cost the first model over 30 points, mild enough that the
# 2,400 labelled rows the improver gathers bring a retrained one back within 2
# points (see stack.Tuning.min_dataset_rows for the figures).
ROTATION = (20.0, 4.0)
NOISE = 0.75
#: Corrupted copies of each held-out image in the quality bar's evaluation set: with
# one corruption an image happened to get, the figure moved by up to a point.
EVAL_COPIES = 4
#: The pixel range of the bundled digits.
PIXEL_MAX = 16.0

Pool = Literal["clean", "drifted"]
PARTS = ("drift", "load")


def corrupt(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated, noisy copies of flat 8x8 digit images (rows of 64 values in 0..16)."""
    import numpy as np
    from scipy import ndimage

    out = np.empty((len(images), 64), dtype=float)
    for i, row in enumerate(np.asarray(images, dtype=float)):
        angle = rng.normal(*ROTATION)
        image = ndimage.rotate(row.reshape(8, 8), angle, reshape=False, order=1, mode="constant")
        image = image + rng.normal(0.0, NOISE, image.shape)
        out[i] = np.clip(image, 0.0, PIXEL_MAX).ravel()
    return out


@dataclass(frozen=True)
class Data:
    """The demo's pools of images and labels (rows of 64 pixel values)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_clean: np.ndarray
    y_clean: np.ndarray
    x_held_out: np.ndarray
    y_held_out: np.ndarray
    x_drifted_eval: np.ndarray
    y_drifted_eval: np.ndarray

    @classmethod
    def load(cls, seed: int = 0) -> Data:
        """Split the bundled digits as the example's training step does, then the demo's way."""
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        features, labels = load_digits(return_X_y=True)
        # The same call as examples/digits/prepare.py with its defaults.
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=0.25, random_state=0, stratify=labels
        )
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y_test))
        # Two thirds of the test split are never sent: the quality bar's held-out set
        # (300 images, 1,200 corrupted rows). Its size steadies the bar: the gap's spread
        # between seeds was 0.6 point (sd) with 225 images, 0.4 with 300.
        cut = len(order) * 2 // 3
        held, sent = order[:cut], order[cut:]
        copies = np.repeat(x_test[held], EVAL_COPIES, axis=0)
        return cls(
            x_train=x_train,
            y_train=y_train,
            x_clean=x_test[sent],
            y_clean=y_test[sent],
            x_held_out=x_test[held],
            y_held_out=y_test[held],
            x_drifted_eval=corrupt(copies, np.random.default_rng([seed, 1])),
            y_drifted_eval=np.repeat(y_test[held], EVAL_COPIES),
        )

    #: The model takes a numeric matrix, not named columns.
    columns = None

    def body(self, image: np.ndarray) -> dict[str, Any]:
        """The request body: one image as a row of the matrix."""
        return {"instances": [image.tolist()]}

    def sampler(self, pool: Pool, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One request's image and its true label from ``pool``."""
        if pool == "clean":
            i = int(rng.integers(len(self.y_clean)))
            return self.x_clean[i], int(self.y_clean[i])
        sources = len(self.y_train) + len(self.y_clean)
        i = int(rng.integers(sources))
        if i < len(self.y_train):
            image, label = self.x_train[i], self.y_train[i]
        else:
            image, label = self.x_clean[i - len(self.y_train)], self.y_clean[i - len(self.y_train)]
        return corrupt(image[None, :], rng)[0], int(label)


@dataclass(frozen=True)
class Phase:
    """One stretch of traffic.

    Attributes:
        name: Shown live and in the records (``clean``, ``drift``, ``recovered``...).
        seconds: How long it lasts; with ``until``, the longest it waits for it.
        pool: Which images are sent.
        clients: Concurrent client tasks.
        rate: Requests per second of each client (paced; a late answer is not made up).
        until: An event the phase waits for before ``hold`` more seconds (e.g. a redeploy).
        hold: Seconds the phase goes on after ``until`` happened.
    """

    name: str
    seconds: float
    pool: Pool
    clients: int
    rate: float
    until: str | None = None
    hold: float = 0.0


@dataclass(frozen=True)
class Load:
    """The traffic levels: normal and spike (clients x requests per second each).

    Normal traffic is 90 requests/s with 80 % labelled: 72 labelled rows a second,
    so the 2,400 the improver gathers after a drift take about 33 s.

    The spike offers 5,000 requests/s from 200 clients: more than one replica
    serves on any core (about 1,300 requests/s on this project's 2-core CI
    machine, ``bench/serving.py``), so the clients keep about 200 requests in
    flight and a client waits for those ahead of it, whatever the machine's
    speed: at 2,000 requests/s, 100 ms, twice the examples' objective. A paced
    spike below a replica's capacity breaches nothing on a quiet, fast machine
    (seen: 1,000 requests/s served with a p95 of 0.5 ms, no scale-out).
    """

    clients: int = 6
    rate: float = 15.0
    spike_clients: int = 200
    spike_rate: float = 25.0
    label_share: float = 0.8


def phases(parts: Iterable[str], speed: float = 1.0, load: Load | None = None) -> list[Phase]:
    """The phases of the parts asked for (``drift``, ``load``), durations divided by ``speed``.

    The drift part waits for the loop to serve a new version (``until="recovered"``)
    and the load part for a scale-out (``until="scaled"``) and, once the load is
    back to normal, for the scale-in (``until="scaled-in"``), at most the phase's
    seconds; the demo never waits without a bound. Those bounds are not divided
    by ``speed``: the agents' reactions (a retraining, replicas starting) take
    their own time.
    """
    wanted = set(parts)
    unknown = wanted - set(PARTS)
    if unknown or not wanted:
        raise ValueError(f"unknown demo parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    load = load or Load()

    def s(seconds: float) -> float:
        return seconds / speed

    normal: dict[str, Any] = {"clients": load.clients, "rate": load.rate}
    plan = [Phase("clean", s(10), "clean", **normal)]
    pool: Pool = "clean"
    if "drift" in wanted:
        # The hold also lets the standby replicas of the new version load before the spike.
        plan.append(Phase("drift", 180, "drifted", until="recovered", hold=s(12), **normal))
        pool = "drifted"  # the world stays drifted: later phases send what it looks like now
    if "load" in wanted:
        spike: dict[str, Any] = {"clients": load.spike_clients, "rate": load.spike_rate}
        plan.append(Phase("spike", 60, pool, until="scaled", hold=s(6), **spike))
        # Demand back to normal: the loop should scale in once it is sure (a few calm
        # windows and a cooldown), and not flap on the way.
        plan.append(Phase("calm", 60, pool, until="scaled-in", hold=s(4), **normal))
    return plan
