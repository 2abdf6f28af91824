"""Runtime and interfaces: CLI, local supervisor, embedded servers."""
