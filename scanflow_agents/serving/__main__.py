"""``python -m scanflow_agents.serving --model-uri models:/digits@production --port 8080``."""

from __future__ import annotations

import logging
import sys

from scanflow_agents._kit import loops
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.server import serve


def main(argv: list[str] | None = None) -> int:
    """Parse options, serve until stopped; the exit code is 0 on a clean stop."""
    config = ServingConfig.from_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{config.replica}] %(name)s: %(message)s",
    )
    # uvloop where installed, as `scanflow run`: the loop's own work (parsing, waking
    # the handler, writing the answer) is much of a small model's request.
    loops.run(lambda: serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
