"""Built-in plugin: bot (placeholder)."""
