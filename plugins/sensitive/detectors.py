"""The built-in detectors a pattern may name instead of a regex: mainland mobile numbers, QQ
numbers, WeChat ids, URLs, e-mail and IPv4 addresses, digit runs. Each brings the view it runs on
and the literal strings of which one must be present, so that most texts never run it.
"""

from __future__ import annotations

from typing import Literal

Detector = Literal["phone_number", "qq_number", "wechat_id", "url", "email", "ipv4", "digits"]

_WECHAT = ("微信", "weixin", "wechat", "vx", "wx", "v信", "薇信", "威信")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"


def detector(name: str, length: int) -> tuple[str, Literal["normalised", "original"], bool, tuple[str, ...]]:
    """``(regex, on, ignore_case, requires)`` of a built-in detector."""
    if name == "phone_number":
        return r"1(?<![0-9]1)[3-9][0-9]{9}(?![0-9])", "normalised", False, ()
    if name == "qq_number":
        return r"(?:qq|扣扣|企鹅)(?:号|号码)?[1-9][0-9]{4,10}(?![0-9])", "normalised", False, ("qq", "扣扣", "企鹅")
    if name == "wechat_id":
        return r"(?:微信|weixin|wechat|vx|wx|v信|薇信|威信)(?:号|id)?[a-z][a-z0-9]{5,19}", "normalised", False, _WECHAT
    if name == "url":
        return (r"https?://[!-~]+|[a-z0-9][-a-z0-9.]*\.(?:com|cn|net|org|cc|top|xyz|vip|me|io|shop|link)"
                r"(?![a-z0-9])(?:[/?#][!-~]*)?", "original", True, (".", "/"))
    if name == "email":  # full-width ＠ and ．/。 as typed to dodge filters
        return (r"[a-z0-9][a-z0-9._%+-]*[@＠][a-z0-9][-a-z0-9]*(?:[.．。][-a-z0-9]+)*[.．。][a-z]{2,}(?![a-z0-9])",
                "original", True, ("@", "＠"))
    if name == "ipv4":
        return rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])", "original", False, (".",)
    assert name == "digits"
    return rf"(?<![0-9])[0-9]{{{length},}}", "normalised", False, ()
