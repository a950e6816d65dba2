"""The ingest signature: what a bridge computes with any HMAC-SHA256 library is what the
server accepts, for any secret and body, however many shops' secrets it has keyed."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from router.core.signing import check_signature, sign


def reference(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@given(st.lists(st.tuples(st.binary(max_size=100), st.binary(max_size=2000)), min_size=1, max_size=20))
def test_sign_is_hmac_sha256_for_every_secret(pairs: list[tuple[bytes, bytes]]) -> None:
    for secret, body in pairs + pairs[::-1]:  # each secret keyed once and reused, in any order
        assert sign(secret, body) == reference(secret, body)


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=2000), st.binary(min_size=1, max_size=64))
def test_check_accepts_only_the_body_and_secret_signed(secret: bytes, body: bytes, other: bytes) -> None:
    header = reference(secret, body)
    assert check_signature(secret, body, header) is None
    assert check_signature(secret, body, header.upper().replace("SHA256=", "sha256=")) is None
    assert check_signature(secret, body + b"x", header) is not None
    if other.rstrip(b"\0") != secret.rstrip(b"\0"):  # HMAC pads a key with zero bytes
        assert check_signature(other, body, header) is not None
    assert check_signature(secret, body, None) is not None
    assert check_signature(secret, body, "md5=" + header[7:]) is not None
