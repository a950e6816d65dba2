"""The HMAC-SHA256 signature a platform bridge puts on what it posts (``X-Fenliu-Signature``):
the server checks it, the adapters and the simulator make it, so it lives in the core."""

from __future__ import annotations

import functools
import hmac

from router.core.i18n import _

SIGNATURE_HEADER = "X-Fenliu-Signature"


@functools.lru_cache(maxsize=1024)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``secret``, to be copied per body: with OpenSSL 3 the
    one-shot ``hmac.digest`` looks the digest up and keys the HMAC on every call, ≈ 3.5 µs for a
    300-byte message here against ≈ 1.6 µs for ``copy``, ``update`` and ``digest`` (under wrk
    the signature check was ≈ 3 % of the event loop's time). A shop has one secret."""
    return hmac.new(secret, digestmod="sha256")


def _mac(secret: bytes, body: bytes) -> bytes:
    h = _keyed(secret).copy()
    h.update(body)
    return h.digest()


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Fenliu-Signature`` value for ``body``."""
    return "sha256=" + _mac(secret, body).hex()


def check_signature(secret: bytes, body: bytes, header: str | None) -> str | None:
    """``None`` when the signature matches, else why not."""
    if not header:
        return _("missing {header} header (sha256=<hex HMAC-SHA256 of the body>)", header=SIGNATURE_HEADER)
    scheme, _sep, digest = header.partition("=")
    digest = digest.strip().lower()
    # compare_digest raises TypeError on non-ASCII text: such a header is malformed, not a 500.
    if scheme.strip().lower() != "sha256" or not digest or not digest.isascii():
        return _("{header} must look like sha256=<hex>", header=SIGNATURE_HEADER)
    expected = _mac(secret, body).hex()
    if not hmac.compare_digest(expected, digest):
        return _("signature does not match the body")
    return None
