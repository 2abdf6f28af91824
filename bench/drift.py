"""The checker's statistics on synthetic data with fixed seeds.

Measures, in one process:

1. false alarms per 100,000 stable values of the streaming detectors: ADWIN and
   Page-Hinkley with this package's defaults, and Page-Hinkley with the classic
   settings (delta 0.005, threshold 50, fading 0.9999: river's defaults), on a
   Bernoulli error stream (p = 0.1) and a unit Gaussian stream (Page-Hinkley's
   defaults scaled with ``PageHinkley.for_std(1.0)`` there);
2. detection delay, in values after a mean shift of 1 and 0.25 standard
   deviations that follows 2,000 stable values (median over seeded runs; a run
   that has not detected within 20,000 values counts as missed);
3. the cost of one update of each detector, in µs;
4. the cost of one drift check of 100 features, 10,000-row reference by 1,000-row
   window (five features shifted), with the pre-sorted ``Reference`` against
   ``scipy.stats.ks_2samp`` with its defaults over the same columns, and how far
   our p-values are from scipy's asymptotic ones.

Usage: ``python bench/drift.py [--quick] [--json PATH]`` (full run about a minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from _report import publish
from scipy import stats

from scanflow_agents.drift import ADWIN, PageHinkley, Reference

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "drift.json"
PRE_CHANGE, MAX_DELAY = 2_000, 20_000
BERNOULLI_P = 0.1
BERNOULLI_STD = (BERNOULLI_P * (1 - BERNOULLI_P)) ** 0.5
SHIFTS = (1.0, 0.25)

# The goals: quiet by default (false alarms), and the anchor figure of one 100-feature check.
MAX_FALSE_ALARMS = 1.0  # per 100,000 stable error values
ANCHOR_CHECK_MS = 35.0  # KS over 100 features, pre-sorted reference
ANCHOR_ADWIN_DELAY = 55.0  # river's ADWIN at a 1 std shift

Detector = ADWIN | PageHinkley
Factory = Callable[[], Detector]
Stream = Callable[[np.random.Generator, int, float], list[float]]


def bernoulli(rng: np.random.Generator, size: int, shift: float) -> list[float]:
    rate = BERNOULLI_P + shift * BERNOULLI_STD
    return (rng.random(size) < rate).astype(float).tolist()


def gaussian(rng: np.random.Generator, size: int, shift: float) -> list[float]:
    return rng.normal(shift, 1.0, size).tolist()


STREAMS: dict[str, tuple[Stream, dict[str, Factory]]] = {
    "bernoulli_p0.1": (bernoulli, {
        "adwin": ADWIN,
        "page_hinkley": PageHinkley,
        "page_hinkley_classic": lambda: PageHinkley(0.005, 50.0, alpha=0.9999),
    }),
    "gaussian": (gaussian, {
        "adwin": ADWIN,
        "page_hinkley": lambda: PageHinkley.for_std(1.0),
        "page_hinkley_classic": lambda: PageHinkley(0.005, 50.0, alpha=0.9999),
    }),
}  # fmt: skip


def false_alarms(stream: Stream, make: Factory, runs: int, size: int) -> dict[str, Any]:
    """Alarms over ``runs`` stable streams of ``size`` values, one detector each."""
    alarms, spent = 0, 0.0
    for seed in range(runs):
        values = stream(np.random.default_rng(1_000 + seed), size, 0.0)
        detector = make()
        started = time.perf_counter()
        for x in values:
            alarms += detector.update(x)
        spent += time.perf_counter() - started
    samples = runs * size
    return {
        "alarms": alarms,
        "samples": samples,
        "per_100k": alarms * 100_000 / samples,
        "update_us": spent / samples * 1e6,
    }


def delays(stream: Stream, make: Factory, shift: float, runs: int) -> dict[str, Any]:
    """Values from a shift to its first detection, over seeded runs."""
    found: list[int] = []
    early = 0
    for seed in range(runs):
        rng = np.random.default_rng(2_000 + seed)
        detector = make()
        early += sum(detector.update(x) for x in stream(rng, PRE_CHANGE, 0.0))
        delay = MAX_DELAY
        for i, x in enumerate(stream(rng, MAX_DELAY, shift)):
            if detector.update(x):
                delay = i + 1
                break
        found.append(delay)
    detected = [d for d in found if d < MAX_DELAY]
    return {
        "median": statistics.median(found),
        "runs": runs,
        "missed": runs - len(detected),
        "alarms_before_shift": early,
    }


def check_cost(repeats: int, scipy_repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    names = [f"f{i:02d}" for i in range(100)]
    reference_data = rng.normal(size=(10_000, 100))
    window = rng.normal(size=(1_000, 100))
    window[:, :5] += 0.3
    started = time.perf_counter()
    reference = Reference(reference_data, names)
    build_ms = (time.perf_counter() - started) * 1e3
    ours = []
    for _ in range(repeats):
        started = time.perf_counter()
        report = reference.check(window)
        ours.append((time.perf_counter() - started) * 1e3)
    theirs = []
    for _ in range(scipy_repeats):
        started = time.perf_counter()
        for j in range(100):
            stats.ks_2samp(reference_data[:, j], window[:, j])
        theirs.append((time.perf_counter() - started) * 1e3)
    asymp = [stats.ks_2samp(reference_data[:, j], window[:, j], method="asymp") for j in range(100)]
    return {
        "features": 100,
        "reference_rows": 10_000,
        "window_rows": 1_000,
        "shifted": 5,
        "ours_ms": statistics.median(ours),
        "reference_build_ms": build_ms,
        "scipy_default_ms": statistics.median(theirs),
        "speedup": statistics.median(theirs) / statistics.median(ours),
        "moved": list(report.moved),
        "max_statistic_diff_vs_scipy": max(
            abs(r.statistic - f.statistic) for r, f in zip(asymp, report.features, strict=True)
        ),
        "max_pvalue_diff_vs_scipy_asymp": max(
            abs(r.pvalue - f.p_value) for r, f in zip(asymp, report.features, strict=True)
        ),
    }


def run(quick: bool) -> dict[str, Any]:
    fa_runs, fa_size = (1, 20_000) if quick else (10, 100_000)
    delay_runs = 3 if quick else 25
    results: dict[str, Any] = {"false_alarms": {}, "detection_delay": {}, "update_cost_us": {}}
    for name, (stream, detectors) in STREAMS.items():
        results["false_alarms"][name] = {}
        results["detection_delay"][name] = {}
        for detector, make in detectors.items():
            _log(f"{name}: {detector}")
            fa = false_alarms(stream, make, fa_runs, fa_size)
            results["false_alarms"][name][detector] = fa
            results["update_cost_us"].setdefault(detector, fa["update_us"])
            results["detection_delay"][name][detector] = {
                f"{shift:g}_std": delays(stream, make, shift, delay_runs) for shift in SHIFTS
            }
    _log("100-feature check")
    results["check"] = check_cost(3 if quick else 20, 1 if quick else 3)
    results["goals"] = goals(results)
    return results


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    fa = results["false_alarms"]["bernoulli_p0.1"]
    adwin_delay = results["detection_delay"]["gaussian"]["adwin"]["1_std"]["median"]
    check = results["check"]
    return [
        _goal("ADWIN false alarms /100k (Bernoulli)", fa["adwin"]["per_100k"],
              f"<= {MAX_FALSE_ALARMS:g}", fa["adwin"]["per_100k"] <= MAX_FALSE_ALARMS),
        _goal("Page-Hinkley false alarms /100k (Bernoulli)", fa["page_hinkley"]["per_100k"],
              f"<= {MAX_FALSE_ALARMS:g}", fa["page_hinkley"]["per_100k"] <= MAX_FALSE_ALARMS),
        _goal("ADWIN delay at 1 std (Gaussian), values", adwin_delay,
              f"<= {ANCHOR_ADWIN_DELAY:g}", adwin_delay <= ANCHOR_ADWIN_DELAY),
        _goal("100-feature check, ms", check["ours_ms"], f"< {ANCHOR_CHECK_MS:g}",
              check["ours_ms"] < ANCHOR_CHECK_MS),
        _goal("only the shifted features moved", ", ".join(check["moved"]),
              "f00..f04", sorted(check["moved"]) == [f"f{i:02d}" for i in range(5)]),
    ]  # fmt: skip


def _goal(name: str, value: Any, goal: str, met: bool) -> dict[str, Any]:
    shown = round(value, 3) if isinstance(value, float) else value
    return {"name": name, "value": shown, "goal": goal, "pass": bool(met)}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| stream | detector | false alarms /100k | delay 1 std | delay 0.25 std | µs/update |",
        "|---|---|---|---|---|---|",
    ]
    for name, detectors in results["false_alarms"].items():
        for detector, fa in detectors.items():
            delay = results["detection_delay"][name][detector]
            shown = [_delay(delay[f"{s:g}_std"]) for s in SHIFTS]
            lines.append(
                f"| {name} | {detector} | {fa['per_100k']:.2f} ({fa['alarms']} in "
                f"{fa['samples']:,}) | {shown[0]} | {shown[1]} | {fa['update_us']:.2f} |"
            )
    check = results["check"]
    lines += [
        "",
        "| 100 features, 10k x 1k | ms |",
        "|---|---|",
        f"| Reference.check (pre-sorted) | {check['ours_ms']:.1f} |",
        f"| Reference build (once) | {check['reference_build_ms']:.1f} |",
        f"| scipy.stats.ks_2samp, defaults | {check['scipy_default_ms']:.1f} |",
        f"| speed-up | {check['speedup']:.0f}x |",
        f"| max p-value diff vs scipy asymp | {check['max_pvalue_diff_vs_scipy_asymp']:.1e} |",
        "",
        "| goal | measured | target | result |",
        "|---|---|---|---|",
    ]
    for goal in results["goals"]:
        verdict = "pass" if goal["pass"] else "fail"
        lines.append(f"| {goal['name']} | {goal['value']} | {goal['goal']} | {verdict} |")
    return "\n".join(lines)


def _delay(delay: dict[str, Any]) -> str:
    missed = f", {delay['missed']}/{delay['runs']} missed" if delay["missed"] else ""
    return f"{delay['median']:g}{missed}"


def _log(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = run(args.quick)
    results["environment"] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - started, 1),
    }
    publish(results, args.json, table(results))


if __name__ == "__main__":
    main()
