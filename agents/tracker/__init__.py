"""The tracker agent."""
