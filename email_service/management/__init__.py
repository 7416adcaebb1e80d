"""Management commands: adapters that run a room's function from the command line."""
