"""The ``[sensitive]`` section of a policy file: word lists, allow phrases, patterns and their
actions per direction, checked when the configuration loads (docs/plugins/sensitive.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec

from plugins.sensitive.build import build_filter
from plugins.sensitive.detectors import Detector, detector

if TYPE_CHECKING:
    from plugins.sensitive.filter import SensitiveFilter

InboundAction = Literal["mask", "flag", "block", "off"]
OutboundAction = Literal["block", "mask", "off"]
Direction = Literal["inbound", "outbound"]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the ``[sensitive]`` tables: unknown keys are errors, every key has a default
    (``kw_only`` is per class in msgspec, so each table repeats it)."""


class WordList(_Table, kw_only=True):
    """One word list: ``file`` (relative to the config folder) plus optional ``extra_files``
    (homophones 威信/薇信, pinyin weixin) and inline ``words``, all reported under ``name``.

    ``tag`` is the category shown with each hit (引流, 广告法, 辱骂; default: ``name``) and counted
    by ``fenliu stats``; ``advice`` a compliant alternative the workbench offers for any word of
    the list. An entry may override both and give its own mask text: ``最好 | advice=很好``,
    ``傻逼 | tag=辱骂 | replace=[不文明用语]`` (see :func:`parse_entry`)."""

    name: str = ""
    file: str = ""
    extra_files: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"
    tag: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field name: every list needs a name (used in flags and reasons)")
        if not (self.file or self.words or self.extra_files):
            raise ValueError("field file: give a word file, extra_files or inline words")


class Pattern(_Table, kw_only=True):
    """A regular expression or a built-in ``detector`` (phone numbers, QQ numbers, WeChat ids,
    URLs, e-mail and IPv4 addresses, digit runs) with its actions.

    ``on = "normalised"`` matches the normalised text, in which separators are gone and Chinese
    and circled digits are ASCII digits (so ``1 3 8-①②③④-五六七八`` is ``13812345678``);
    ``on = "original"`` matches the text as typed (URLs need their dots and slashes).
    The normalised text is lower case already; ``ignore_case`` matters for ``original``.
    ``requires``: literal strings of which one must occur for the regex to run at all (a speed
    hint for costly regexes); a regex never runs on a text with fewer ASCII characters than any
    match needs, counted in the text it runs on (so chat without digits or Latin letters costs
    nothing here). A ``detector`` brings its own ``regex``, ``on``, ``ignore_case`` and
    ``requires``; ``length`` is the shortest run the ``digits`` detector reports (default 8).
    """

    name: str = ""
    detector: Detector | None = None
    regex: str = ""
    length: int = 0
    on: Literal["normalised", "original"] = "normalised"
    ignore_case: bool = False
    requires: tuple[str, ...] = ()
    inbound: InboundAction = "flag"
    outbound: OutboundAction = "block"
    tag: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        if self.length and self.detector != "digits":
            raise ValueError("field length: only the digits detector takes a length")
        if self.length < 0:
            raise ValueError("field length: expected a positive number of digits")
        if self.detector is not None:
            if self.regex:
                raise ValueError("field regex: give a regex or a detector, not both")
            self.name = self.name or self.detector
            self.regex, self.on, self.ignore_case, self.requires = detector(self.detector, self.length or 8)
        if not self.name:
            raise ValueError("field name: every pattern needs a name (used in flags)")
        if not self.regex:
            raise ValueError("field regex: a pattern needs a regex or a detector")
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"field regex: invalid regular expression: {exc}") from None


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    Pattern(detector="phone_number", inbound="mask"),
    Pattern(detector="qq_number", inbound="mask"),
    Pattern(detector="wechat_id", inbound="mask"),
    Pattern(detector="url"),
    Pattern(detector="email", inbound="mask"),
    Pattern(detector="ipv4"),
)


class _Uncompiled:
    """``SensitiveConfig.filter`` before :meth:`SensitiveConfig.compile`: a non-data descriptor,
    so the compiled filter, stored under the same name in the section's ``__dict__``, shadows it
    and the inbound hook reads it as a plain attribute (a property cost a Python call per
    message); read before that, it says what is missing."""

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        raise RuntimeError("sensitive section not compiled: call compile(config_dir) or load it through load_config")


class SensitiveConfig(_Table, kw_only=True, dict=True):
    """The ``[sensitive]`` section of a policy file (see docs/plugins/sensitive.md)."""

    enabled: bool = True
    lists: tuple[WordList, ...] = ()
    allow: tuple[str, ...] = ()
    allow_files: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = DEFAULT_PATTERNS
    mask_char: Annotated[str, msgspec.Meta(min_length=1, max_length=1)] = "＊"
    #: The directions whose word scan collapses repeated characters (fffuuuck → fuck). Outbound
    #: only by default: buyers' 奶奶/爸爸 would otherwise meet words of the collapsed form.
    collapse_repeats: tuple[Direction, ...] = ("outbound",)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for item in (*self.lists, *self.patterns):
            if item.name in seen:
                raise ValueError(f"field lists: the name {item.name!r} is used twice (lists and patterns share names)")
            seen.add(item.name)

    #: The compiled filter ``fenliu_configure`` attached (or :meth:`compile` made).
    filter: ClassVar[_Uncompiled] = _Uncompiled()

    @property
    def warnings(self) -> list[str]:
        """What ``fenliu check`` should say about the compiled lists (``file: key: reason``)."""
        f = self.__dict__.get("filter")
        return list(f.warnings) if f is not None else []

    def compile(self, base: str | Path, file: str | Path = "sensitive", cache: dict | None = None) -> SensitiveFilter:
        """Read the word files (relative to ``base``) and build the filter; cached on the section."""
        f = build_filter(self, Path(base), str(file), cache if cache is not None else {})
        self.__dict__["filter"] = f
        return f
