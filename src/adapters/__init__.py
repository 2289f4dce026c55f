"""Adapters: what plugs into the ports that `credits_domain` defines.

Driven (the core calls them, through its ports):
- `adapters.memory`: the Repository and the API key store, in memory;
- `adapters.sql`: the same two on SQLite (the embedded default) and PostgreSQL;
- `adapters.verifier`: the Verifier (HTTP client of a verification service, scripted);
- `adapters.clock`: the Clock (the system's, and a manual one for tests and replays).

Driving (they call the core's facade):
- `adapters.api`: the HTTP API; `adapters.cli`: the `credits` command.
- `adapters.phones`: how both read a phone number written by a person.

`adapters.bootstrap` is the composition root: the one place that wires ports to adapters.
Driven adapters never import one another; the driving side reaches storage and the
verifier only through the composition root (contracts in pyproject.toml).
"""
