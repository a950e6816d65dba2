"""Field types the platforms' push payloads share: each bounded, so a hostile or broken push
(an amount of 1e400, a 10 MB text) is a named refusal of that item, not an error deep inside."""

from __future__ import annotations

from typing import Annotated

import msgspec

#: An amount in fen (分): bounded, so 1e400 is a named refusal rather than an OverflowError.
Fen = str | Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)] | None
#: An id the platform sends as a string or a number.
Id = str | int | None
Text = Annotated[str, msgspec.Meta(max_length=2000)] | None
#: A time as the platform writes it: a date-time string or epoch seconds (or milliseconds).
When = str | Annotated[float, msgspec.Meta(ge=0, le=1e14)] | None
