"""The HMAC-SHA256 signature a platform bridge puts on what it posts (``X-Fenliu-Signature``):
the server checks it, the adapters and the simulator make it, so it lives in the core."""

from __future__ import annotations

import hmac

from router.core.i18n import _

SIGNATURE_HEADER = "X-Fenliu-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Fenliu-Signature`` value for ``body``."""
    return "sha256=" + hmac.digest(secret, body, "sha256").hex()


def check_signature(secret: bytes, body: bytes, header: str | None) -> str | None:
    """``None`` when the signature matches, else why not."""
    if not header:
        return _("missing {header} header (sha256=<hex HMAC-SHA256 of the body>)", header=SIGNATURE_HEADER)
    scheme, _sep, digest = header.partition("=")
    digest = digest.strip().lower()
    # compare_digest raises TypeError on non-ASCII text: such a header is malformed, not a 500.
    if scheme.strip().lower() != "sha256" or not digest or not digest.isascii():
        return _("{header} must look like sha256=<hex>", header=SIGNATURE_HEADER)
    expected = hmac.digest(secret, body, "sha256").hex()  # the one-shot C path: no HMAC object per request
    if not hmac.compare_digest(expected, digest):
        return _("signature does not match the body")
    return None
