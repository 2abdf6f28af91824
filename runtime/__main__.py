"""``python -m scanflow_agents.runtime`` is the ``scanflow`` command."""

from scanflow_agents.runtime.cli import main

main(prog_name="scanflow")
