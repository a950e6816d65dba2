"""Built-in plugins: each module is a pluggy plugin listed in ``router.core.plugins.BUILTIN_PLUGINS``."""
