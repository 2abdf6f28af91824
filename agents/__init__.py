"""Built-in agents that close the MLOps loop: tracker, checker, improver, planner."""
