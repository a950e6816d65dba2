"""Built-in plugins: each module is a pluggy plugin listed in ``router.plugins.BUILTIN_PLUGINS``."""
