"""The improver agent."""
