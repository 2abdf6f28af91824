"""The checker agent."""
