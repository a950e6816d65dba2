"""The Redis backend (``storage.backend = "redis"``): several ``fenliu serve`` instances share
the work through Redis Streams, with agent capacity and conversation ownership changed only by
Lua scripts. See docs/deploy.md for the design and the key layout."""
