"""Built-in plugin: sensitive (placeholder)."""
