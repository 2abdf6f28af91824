"""Private machinery of the framework core; import from scanflow_agents instead."""
