"""The planner agent."""
