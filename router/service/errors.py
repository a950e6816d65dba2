"""What the service refuses with, apart from HTTP: the transports (HTTP, WebSocket, the Redis
backend's forwarded requests) catch these and answer in their own way (``503``, a frame's
``result``), so they live below all of them."""

from __future__ import annotations


class Overloaded(Exception):
    """The ingest queue is at its bound."""


class JournalFailed(Overloaded):
    """Nothing more can be journaled: the writer died, or a commit failed after the router had
    already applied its batch in memory. The service refuses work (``503``, ``/healthz`` says why)
    until it is restarted, which rebuilds the state from what the store holds. Carrying on would
    acknowledge retries of the lost batch as duplicates of messages the store never got."""


class NotYours(Exception):
    """The agent does not hold that conversation."""
