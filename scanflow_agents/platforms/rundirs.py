"""A run folder shared by steps that run in different pods, through an artifact store.

On one machine every step of a run sees the same folder (``SCANFLOW_RUN_DIR``).
On a cluster each step is a pod of its own, possibly on another node, so the
folder cannot be a volume they share without a ReadWriteMany storage class
that most clusters do not have. Instead each run gets an artifact location
(``<run_artifacts>/<run id>``, by default on the MLflow tracking server,
which the steps already reach): a step's pod fetches the folder into an
emptyDir before its command runs, and stores what is there after it ends,
success or failure (a failed step's output helps to understand it). Steps
that run at the same time and write the same file: the last to end wins.

Run inside the step's pod, in the project image (which has MLflow)::

    python -m scanflow_agents.platforms.rundirs --uri URI --dir /scanflow/run -- \
        python /app/train.py

The exit code is the command's; a failure to fetch the folder fails the step
before its command runs, a failure to store it fails the step after.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)


def _repository(uri: str) -> Any:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri)


def fetch(uri: str, folder: Path) -> int:
    """Copy what the run's location holds into ``folder``; returns how many entries."""
    folder.mkdir(parents=True, exist_ok=True)
    repository = _repository(uri)
    entries = repository.list_artifacts()
    for entry in entries:
        repository.download_artifacts(entry.path, dst_path=str(folder))
    return len(entries)


def store(uri: str, folder: Path) -> None:
    """Copy ``folder``'s files to the run's location (replacing files of the same name)."""
    if any(folder.iterdir()):
        _repository(uri).log_artifacts(str(folder))


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the folder, run the command, store the folder; the command's exit code."""
    parser = argparse.ArgumentParser(prog="python -m scanflow_agents.platforms.rundirs")
    parser.add_argument("--uri", required=True, help="the run's artifact location")
    parser.add_argument("--dir", required=True, type=Path, help="the local run folder")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the step's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s run folder: %(message)s")
    try:
        found = fetch(args.uri, args.dir)
    except Exception as exc:
        logger.error("cannot fetch the run folder from %s: %s", args.uri, exc)
        return 70
    logger.info("fetched %d entries from %s into %s", found, args.uri, args.dir)
    child = subprocess.Popen(command)

    # The kubelet's SIGTERM (a deadline, a deleted Job) goes to the step itself;
    # what it wrote until then is still stored.
    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    try:
        store(args.uri, args.dir)
    except Exception as exc:
        logger.error("cannot store the run folder to %s: %s", args.uri, exc)
        return code or 70
    logger.info("stored %s to %s (step exit code %d)", args.dir, args.uri, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
