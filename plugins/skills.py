"""Built-in plugin: skills (placeholder)."""
