"""Fixtures of the Redis tests: ``shared_redis`` (a client and a private key prefix, cleaned up,
skipping with a reason where no Redis answers)."""

from tests.redis.support import shared_redis  # noqa: F401 - re-exported as a fixture
