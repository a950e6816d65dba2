"""Channel adapters: one per kind of shop channel."""
