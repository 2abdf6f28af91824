"""Helpers shared by the platform and serving tests (loaded by path, not installed)."""
