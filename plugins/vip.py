"""Built-in plugin: vip (placeholder)."""
