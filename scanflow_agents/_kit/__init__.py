"""The package's private toolkit, below every other layer.

Modules here import nothing else from ``scanflow_agents``, so the core, the
adapters (transports, knowledge, platforms, serving) and the runtime may all
use them. It is the one private package that other packages may import
(``tests/test_architecture.py`` says so).
"""
