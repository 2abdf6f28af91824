"""What the checker remembers per served model: drift streaks and the error stream.

One :class:`Monitor` per (workflow, node, model URI). A model URI that was not
served in the previous window of its node starts with a fresh monitor: a new
model is a new episode, for input drift (its own reference) and for the error
stream (its own error rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from scanflow_agents.drift import ADWIN


@dataclass
class Monitor:
    """The state of one served model of one workflow node.

    Attributes:
        streak: Drifted windows in a row.
        episode: A drift finding was made and no clean window has been seen since.
        adwin: The detector on the stream of labelled errors (1 wrong, 0 right).
        labels: Labelled outcomes fed to it.
        rising: The last window fed showed a rise (a finding was made for it or before).
        seed: Seed of the order outcomes are fed in.
    """

    adwin: ADWIN
    streak: int = 0
    episode: bool = False
    labels: int = 0
    rising: bool = False
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def drift(self, drifted: bool, consecutive: int) -> bool:
        """Count a tested window; whether it starts a drift episode (time for a finding)."""
        if not drifted:
            self.streak, self.episode = 0, False
            return False
        self.streak += 1
        if self.streak >= consecutive and not self.episode:
            self.episode = True
            return True
        return False

    def errors(self, matched: int, correct: int) -> dict[str, Any] | None:
        """Feed one window's labelled outcomes; the change if the error rate rose (blocking).

        The window's outcomes are fed in a random order: the counts say how many
        were wrong, not when, and a fixed order (all right, then all wrong) would
        look like a change inside every window. ADWIN cuts its window several
        times while it sheds the old values after one change; only the first
        window with a rise reports it, until a window passes without one.

        Returns:
            ``before`` (the error rate of the values dropped at the first cut),
            ``now`` (this window's error rate) and ``estimate`` (ADWIN's window
            mean after this window), or None.
        """
        wrong = min(max(matched - correct, 0), matched)
        outcomes = np.zeros(matched)
        outcomes[:wrong] = 1.0
        self._rng.shuffle(outcomes)
        before: float | None = None
        for value in outcomes.tolist():
            if self.adwin.update(value):
                change = self.adwin.last_change
                if change["mean_after"] > change["mean_before"] and before is None:
                    before = float(change["mean_before"])
        self.labels += matched
        rising, self.rising = self.rising, before is not None
        if before is None or rising:
            return None
        return {"before": before, "now": wrong / matched, "estimate": float(self.adwin.estimate)}


class Monitors:
    """The monitors of every workflow node, reset when a node serves a new model URI.

    Args:
        adwin_delta: ADWIN's confidence for new monitors.
    """

    def __init__(self, adwin_delta: float) -> None:
        self.adwin_delta = adwin_delta
        self.by_node: dict[tuple[str, str], dict[str, Monitor]] = {}

    def window(self, workflow: str, node: str, model_uris: list[str]) -> dict[str, Monitor]:
        """The monitors of a node's window: kept for URIs it served before, fresh for others."""
        previous = self.by_node.get((workflow, node), {})
        current = {
            uri: previous.get(uri) or Monitor(ADWIN(self.adwin_delta), seed=len(previous))
            for uri in model_uris
        }
        self.by_node[(workflow, node)] = current
        return current


class Spread:
    """Replicas apart from their siblings, per workflow node, and their streaks."""

    def __init__(self) -> None:
        self.streaks: dict[tuple[str, str], dict[str, int]] = {}
        self.reported: dict[tuple[str, str], set[str]] = {}

    @staticmethod
    def window(
        window: dict[str, Any], *, alpha: float, min_features: int
    ) -> dict[str, dict[str, float]]:
        """The replicas of a window apart from the rest: their features past the critical z."""
        judged = window.get("replica_deviations") or {}
        tests = max(int(judged.get("replicas") or 0) * int(judged.get("features") or 0), 1)
        critical = NormalDist().inv_cdf(1 - alpha / (2 * tests))
        apart = {}
        for listed in judged.get("listed") or []:
            features = {
                name: z for name, z in (listed.get("z") or {}).items() if abs(z) >= critical
            }
            if len(features) >= min_features:
                apart[str(listed["replica"])] = features
        return apart

    def episodes(
        self, key: tuple[str, str], apart: dict[str, dict[str, float]], consecutive: int
    ) -> set[str]:
        """Count the window; the replicas whose streak just reached ``consecutive``."""
        streaks = self.streaks.setdefault(key, {})
        reported = self.reported.setdefault(key, set())
        for replica in list(streaks):
            if replica not in apart:  # back with the others: a new episode may come
                del streaks[replica]
                reported.discard(replica)
        found = set()
        for replica in apart:
            streaks[replica] = streaks.get(replica, 0) + 1
            if streaks[replica] >= consecutive and replica not in reported:
                reported.add(replica)
                found.add(replica)
        return found
