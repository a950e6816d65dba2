"""Chinese first, English available: the message catalogue of every text a person reads.

Message ids are English (``router/locale/<lang>/LC_MESSAGES/fenliu.po``; ``pybabel extract -F
babel.cfg``). Two markers, both found by Babel's default keywords:

* ``_("agent {agent!r} is not online", agent=a)`` — a :class:`Text`: a ``str`` holding the English
  text (so logs, ``str(exc)`` and comparisons stay English, for machines and operators' grep) that
  remembers its id and fields, so a boundary translates it late with :func:`t`: an HTTP refusal's
  ``message`` (:func:`router.service.http.error_body`) and a WebSocket ``result``'s ``reason``, in the
  language of the request that asked (``Accept-Language``, set by :func:`use` per request).
* ``gettext("shop", ...)`` — translated at once, in the current language (the CLI's tables).

msgspec does not encode a :class:`Text` (a ``str`` subclass) by itself: what goes into a JSON body
goes through :func:`t` first, or through an encoder built with :func:`enc_hook`, which translates
any :class:`Text` left in the body (a reason nested in a list of per-item errors) in the current
language. A refusal that crosses instances (the Redis backend) travels as :func:`portable` and is
rebuilt with :func:`revive`, so the asker's instance translates it in the asker's language.

msgspec's own validation messages (``Expected `int`, got `str` - at `$.ts```) are English; their few
shapes are catalogue entries too (:func:`validation_reason`, :func:`json_reason`), so a 400's
message reads ``字段 ts：应为整数，收到字符串`` in Chinese and keeps msgspec's wording in English.

The language: a request's ``?lang=``, else its ``Accept-Language`` when it names a supported one
(router/service/http.py, per request; a WebSocket keeps its upgrade request's); else the default:
``fenliu --lang``, else ``FENLIU_LANG``, else ``server.lang`` (:func:`configure`), else zh-CN.

The catalogues are read from the ``.po`` files at first use with Babel's ``read_po``: nothing to
compile at install or in the repo, the ``.po`` is the one source (it is a few hundred lines; reading
it costs milliseconds once per process).
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from pathlib import Path
from typing import Any

LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"
DOMAIN = "fenliu"
DEFAULT = "zh_CN"
#: Supported languages, the first the default; ``en`` is the message ids themselves.
LANGS = ("zh_CN", "en")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("fenliu_lang", default=None)
_configured: str | None = None
_chosen: str | None = None  # fenliu --lang


def normalize(tag: str | None) -> str | None:
    """``zh-CN``, ``zh_cn``, ``zh-Hans``, ``zh`` → ``zh_CN``; ``en-US``, ``en`` → ``en``; else ``None``."""
    if not tag:
        return None
    base = tag.strip().replace("_", "-").split("-")[0].lower()
    return {"zh": "zh_CN", "en": "en"}.get(base)


def configure(lang: str | None) -> None:
    """The default when neither a request nor ``FENLIU_LANG`` names one (``server.lang``)."""
    global _configured
    _configured = normalize(lang)


def set_default(lang: str | None) -> str | None:
    """The command line's ``--lang``, above ``FENLIU_LANG`` and ``server.lang``; returns the previous."""
    global _chosen
    previous, _chosen = _chosen, normalize(lang)
    return previous


def default_lang() -> str:
    return _chosen or normalize(os.environ.get("FENLIU_LANG")) or _configured or DEFAULT


def current() -> str:
    return _current.get() or default_lang()


def negotiate(accept_language: str | None) -> str | None:
    """The supported language an ``Accept-Language`` header prefers most, or ``None``."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:32]):
        tag, _sep, params = part.partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _eq, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        lang = normalize(tag)
        if lang is not None and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def use(lang: str | None) -> contextvars.Token:
    """Set the current language (``None``: the default) for this task; ``reset`` with the token."""
    return _current.set(normalize(lang))


def reset(token: contextvars.Token) -> None:
    _current.reset(token)


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """``{msgid: msgstr}`` of one language's ``.po`` (translated, not fuzzy entries only)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return {}
    from babel.messages.pofile import read_po  # only when a catalogue is first needed

    with path.open("rb") as f:
        cat = read_po(f, locale=lang, domain=DOMAIN)
    return {m.id: m.string for m in cat if m.id and isinstance(m.id, str) and m.string and not m.fuzzy}


def _lookup(msgid: str, lang: str | None) -> str:
    lang = lang or current()
    found = catalogue(lang).get(msgid)
    if found is not None:
        return found
    return _reformat(msgid, lang) if lang != "en" and " " in msgid else msgid


_PLACEHOLDER = re.compile(r"\{(\w+)[^{}]*\}")
#: Fields that are numbers: matched as digits when text is matched back (``line 1, column 2``).
_NUMERIC = {"n", "line", "column", "index", "count", "limit", "length", "size", "headers"}


Pattern = tuple[int, re.Pattern[str], str]


def _regex(parts: list[str]) -> str:
    """A message id split by :data:`_PLACEHOLDER` as a regular expression over its English text,
    each field a named group (digits for :data:`_NUMERIC` ones)."""
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>-?\\d+)" if p in _NUMERIC else f"(?P<{p}>.+?)"
                   for i, p in enumerate(parts))


@functools.cache
def _patterns(lang: str) -> dict[str, list[Pattern]]:
    """The catalogue's messages with fields as regular expressions over their English text, for
    text that lost its :class:`Text` on the way (an exception's message formatted inside a library,
    a ``__post_init__`` check's words msgspec passed on), by the text's first word (``""``: ids that
    begin with a field), so a lookup tries a few. Ids that are nothing but fields and punctuation
    (``{path}: {reason}``) would match anything, so they are left out."""
    out: dict[str, list[Pattern]] = {}
    for msgid, msgstr in catalogue(lang).items():
        parts = _PLACEHOLDER.split(msgid)
        literal = "".join(parts[0::2])
        if len(parts) < 3 or not re.search(r"[A-Za-z]{3,}", literal):
            continue
        names = parts[1::2]
        if len(set(names)) != len(names):
            continue
        regex = _regex(parts)
        first = parts[0].split(" ", 1)[0] if " " in parts[0] else ""
        out.setdefault(first, []).append((len(literal), re.compile(regex, re.DOTALL), msgstr))
    return out


@functools.lru_cache(maxsize=1024)
def _reformat(text: str, lang: str, depth: int = 0) -> str:
    """``text`` (English, formatted) in ``lang`` when it is one of the catalogue's messages with its
    fields filled in; the fields' own text is translated the same way; else ``text`` as it is."""
    index = _patterns(lang)
    candidates = index.get(text.split(" ", 1)[0], []) + index.get("", [])
    candidates.sort(key=lambda c: -c[0])  # the most specific (most fixed text) first
    for _size, regex, msgstr in candidates:
        m = regex.fullmatch(text)
        if m is None:
            continue
        values = {k: catalogue(lang).get(v) or (_reformat(v, lang, depth + 1) if depth < 3 else v)
                  for k, v in m.groupdict().items()}
        return _PLACEHOLDER.sub(lambda f, values=values: values.get(f[1], f[0]), msgstr)
    return text


class Text(str):
    """A message to translate where a person reads it: its ``str`` value is the English text."""

    msgid: str
    fields: dict[str, Any]

    def __new__(cls, msgid: str, **fields: Any) -> Text:
        self = super().__new__(cls, msgid.format(**fields) if fields else msgid)
        self.msgid = msgid
        self.fields = fields
        return self

    def translate(self, lang: str | None = None) -> str:
        fields = {k: t(v, lang) if isinstance(v, Text) else v for k, v in self.fields.items()}
        text = _lookup(self.msgid, lang)
        try:
            return text.format(**fields) if fields else text
        except (KeyError, IndexError, ValueError):  # a translation naming a field wrongly: English, not a 500
            return self.msgid.format(**fields) if fields else self.msgid

    def __reduce__(self) -> Any:
        return (_rebuild, (self.msgid, self.fields))


def _rebuild(msgid: str, fields: dict[str, Any]) -> Text:
    return Text(msgid, **fields)


def _(msgid: str, **fields: Any) -> Text:
    """Mark ``msgid`` (English, ``str.format`` fields) for translation where it is shown."""
    return Text(msgid, **fields)


def gettext(msgid: str, **fields: Any) -> str:
    """``msgid`` in the current language now (command-line output)."""
    return Text(msgid, **fields).translate()


def t(value: Any, lang: str | None = None) -> str:
    """What a person reads, as a plain ``str`` in ``lang`` (default: the current language): a
    :class:`Text` translated, an exception by its first argument, a plain string looked up as a
    message id (so constants marked elsewhere translate too) and else left as it is."""
    if isinstance(value, BaseException):
        value = value.args[0] if len(value.args) == 1 and isinstance(value.args[0], str) else str(value)
    if isinstance(value, Text):
        return value.translate(lang)
    if isinstance(value, str):
        return _lookup(value, lang) if value else value
    return str(value)


def enc_hook(value: Any) -> Any:
    """msgspec ``enc_hook``: a :class:`Text` in a JSON body, translated in the current language."""
    if isinstance(value, Text):
        return value.translate()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def portable(reason: Any) -> Any:
    """A reason as JSON-able data that :func:`revive` turns back into the same :class:`Text`
    (a plain string stays a string)."""
    if not isinstance(reason, Text):
        return reason if reason is None or isinstance(reason, str | int | float | bool) else str(reason)
    return [reason.msgid, {k: portable(v) for k, v in reason.fields.items()}]


def revive(data: Any) -> Any:
    """The :class:`Text` :func:`portable` described, or the plain value it was."""
    if isinstance(data, list) and len(data) == 2 and isinstance(data[0], str) and isinstance(data[1], dict):
        return Text(data[0], **{k: revive(v) for k, v in data[1].items()})
    return data


# -- msgspec's messages --------------------------------------------------------------------------------

#: msgspec's type names, as its messages spell them (``Expected `int | null```).
TYPES: dict[str, Text] = {
    "int": _("int"), "float": _("float"), "str": _("str"), "bool": _("bool"), "null": _("null"),
    "array": _("array"), "object": _("object"), "bytes": _("bytes"), "datetime": _("datetime"),
    "date": _("date"), "time": _("time"), "uuid": _("uuid"), "decimal": _("decimal"),
    "duration": _("duration"), "number": _("number"),
}
#: Reasons msgspec gives without fields (lower-cased as :func:`validation_reason` shows them).
FIXED: dict[str, Text] = {m: m for m in (  # type: ignore[misc]
    _("invalid RFC3339 encoded datetime"), _("invalid RFC3339 encoded date"), _("invalid RFC3339 encoded time"),
    _("invalid UUID"), _("invalid base64 encoded string"), _("invalid decimal string"), _("invalid epoch timestamp"),
    _("invalid ISO8601 duration"), _("integer value out of range"), _("number out of range"),
    _("invalid UTF-8 encoded string"), _("input data was truncated"),
)}
#: The detail of msgspec's ``JSON is malformed: <detail> (byte N)``.
MALFORMED: dict[str, Text] = {m: m for m in (  # type: ignore[misc]
    _("invalid character"), _("trailing characters"), _("expected ',' or ']'"), _("expected ',' or '}'"),
    _("expected ':'"), _('expected \'"\''), _("invalid number"), _("invalid escape character in string"),
    _("invalid escaped character"), _("invalid character in unicode escape"), _("invalid utf-16 surrogate pair"),
    _("unexpected end of escaped utf-16 surrogate pair"), _("unexpected end of hex escape"),
    _("object keys must be strings"), _("trailing comma in array"), _("trailing comma in object"),
)}

_GOT = re.compile(r"expected (.+?), got (.+)")
_BOUND = re.compile(r"expected (\S+) (<=|>=|<|>) (\S+)")
_LENGTH = re.compile(r"expected (\S+) of length (<=|>=) (\d+)")
_EXACT = re.compile(r"expected (\S+) of length (\d+)")
_SPAN = re.compile(r"expected (\S+) of length (\d+) to (\d+)")
_AT = re.compile(r"expected (\S+) of at (least|most) length (\d+)")
_REGEX = re.compile(r"expected (\S+) matching regex (.+)")
_MULTIPLE = re.compile(r"expected (\S+) that's a multiple of (\S+)")
_ZONE = re.compile(r"expected (\S+) with (a|no) timezone component")
_VALUE = re.compile(r"invalid (enum )?value (.+)")
_FIELD = re.compile(r"object (missing required|contains unknown) field (\S+)")
_MALFORMED = re.compile(r"JSON is malformed: (.+) \(byte (\d+)\)")


def type_name(name: str) -> Any:
    """``int`` → :class:`Text` ``int`` (整数); ``int | null`` → both, joined."""
    first, sep, rest = name.partition(" | ")
    if sep:
        return _("{first} | {rest}", first=type_name(first), rest=type_name(rest))
    return TYPES.get(name, name)


def validation_reason(reason: str) -> Text:
    """msgspec's validation reason (the text before `` - at `$…```) as a catalogue message whose
    English is msgspec's own, lower-cased and without backticks (``expected int, got str``)."""
    text = reason.replace("`", "")
    text = text[:1].lower() + text[1:]
    if text in FIXED:
        return FIXED[text]
    if any(rx.fullmatch(text) for rx in _own_words()):
        return Text(text)  # a check's own words ("expected days like …, got …"), not msgspec's shape
    m = _FIELD.fullmatch(text)
    if m:
        field = m[2]
        return (_("object missing required field {field}", field=field) if m[1] == "missing required"
                else _("object contains unknown field {field}", field=field))
    for pattern, make in _SHAPES:
        m = pattern.fullmatch(text)
        if m:
            return make(m)
    return Text(text)  # a __post_init__ check's own words: looked up as they are


@functools.cache
def _own_words() -> list[re.Pattern[str]]:
    """:data:`PLUGINS`' messages as patterns over their English text: a ``__post_init__`` check
    that says ``expected …, got …`` in its own words must not be read as msgspec's shape."""
    return [re.compile(_regex(_PLACEHOLDER.split(str(msgid))), re.DOTALL) for msgid in PLUGINS]


_SHAPES: list[tuple[re.Pattern[str], Any]] = [
    (_SPAN, lambda m: _("expected {expected} of length {low} to {high}", expected=type_name(m[1]), low=m[2], high=m[3])),
    (_LENGTH, lambda m: _("expected {expected} of length {op} {n}", expected=type_name(m[1]), op=m[2], n=m[3])),
    (_EXACT, lambda m: _("expected {expected} of length {n}", expected=type_name(m[1]), n=m[2])),
    (_AT, lambda m: _("expected {expected} of length {op} {n}", expected=type_name(m[1]),
                      op=">=" if m[2] == "least" else "<=", n=m[3])),
    (_REGEX, lambda m: _("expected {expected} matching regex {pattern}", expected=type_name(m[1]), pattern=m[2])),
    (_MULTIPLE, lambda m: _("expected {expected} that's a multiple of {n}", expected=type_name(m[1]), n=m[2])),
    (_ZONE, lambda m: (_("expected {expected} with a timezone component", expected=type_name(m[1])) if m[2] == "a"
                       else _("expected {expected} with no timezone component", expected=type_name(m[1])))),
    (_BOUND, lambda m: _("expected {expected} {op} {bound}", expected=type_name(m[1]), op=m[2], bound=m[3])),
    (_GOT, lambda m: _("expected {expected}, got {got}", expected=type_name(m[1]), got=type_name(m[2]))),
    (re.compile(r"expected (\S+)"), lambda m: _("expected {expected}", expected=type_name(m[1]))),
    (_VALUE, lambda m: (_("invalid enum value {value}", value=m[2]) if m[1] else _("invalid value {value}", value=m[2]))),
]


def json_reason(text: str) -> Text:
    """msgspec's ``DecodeError`` text as ``not valid JSON: …`` from the catalogue."""
    m = _MALFORMED.fullmatch(text)
    if m:
        detail = MALFORMED.get(m[1], m[1])
        return _("not valid JSON: {reason} (byte {byte})", reason=detail, byte=m[2])
    return _("not valid JSON: {reason}", reason=validation_reason(text.removeprefix("JSON is malformed: ")))


#: tomllib's messages (``Invalid value (at line 2, column 6)``), their fields filled by tomllib.
TOML = (
    _("Invalid value"), _("Invalid statement"), _("Invalid date or datetime"), _("Invalid hex value"),
    _("Invalid initial character for a key part"), _("Unclosed array"), _("Unclosed inline table"),
    _("Unterminated string"), _("Cannot overwrite a value"), _("Expected '=' after a key in a key/value pair"),
    _("Expected ']' at the end of a table declaration"), _("Expected ']]' at the end of an array declaration"),
    _("Expected newline or end of document after a statement"), _("Escaped character is not a Unicode scalar value"),
    _("Unescaped '\\' in a string"), _("There is no nest behind this key"), _("An object other than list found behind this key"),
    _("Cannot declare {key} twice"), _("Cannot mutate immutable namespace {key}"), _("Cannot redefine namespace {key}"),
    _("Duplicate inline table key {key}"), _("Expected {expected}"), _("Found invalid character {char}"),
    _("Illegal character {char}"),
)
_TOML_AT = re.compile(r"(.+) \(at line (\d+), column (\d+)\)", re.DOTALL)


def toml_reason(exc: Exception) -> Text:
    """tomllib's ``TOMLDecodeError`` as a catalogue message, its position kept."""
    text = str(exc)
    m = _TOML_AT.fullmatch(text)
    if m:
        return _("{reason} (at line {line}, column {column})", reason=Text(m[1]), line=m[2], column=m[3])
    if text.endswith(" (at end of document)"):
        return _("{reason} (at end of document)", reason=Text(text.removesuffix(" (at end of document)")))
    return Text(text)


#: What the built-in plugins (plugins/*.py), the plugin loader and the scenario checks say about a configuration, in the
#: words they format themselves (``ConfigError(file, key, f"…")``, ``ValueError`` in a
#: ``__post_init__``): the catalogue has them, and :func:`t` matches the formatted text back to
#: its entry. A message marked where it is made needs no entry here.
PLUGINS = (
    _("empty id"), _("empty keyword"), _("empty text"), _("empty question"), _("empty word"),
    _("duplicate id {id!r} (also in {other})"), _("an FAQ entry needs at least one keyword"),
    _("unknown placeholder {placeholder} (known: {known})"), _("unknown platform {platform!r} (known: {known})"), _("no FAQ group {group!r} in {path} (groups: {known})"),
    _("must be between 0 and 1"), _("must not exceed answer_threshold ({value})"),
    _("a synonym group needs at least two words"),
    _("every list needs a name (used in flags and reasons)"), _("give a word file, extra_files or inline words"),
    _("only the digits detector takes a length"), _("expected a positive number of digits"),
    _("give a regex or a detector, not both"), _("every pattern needs a name (used in flags)"),
    _("a pattern needs a regex or a detector"), _("invalid regular expression: {error}"),
    _("the name {name!r} is used twice (lists and patterns share names)"), _("entry {entry!r}: no word before '|'"),
    _("entry {entry!r}: {field!r} is not one of `tag=…`, `advice=…`, `replace=…`"), _("file not found: {path}"),
    _("cannot read {path}: {reason}"),
    _("entry {word!r} normalises to nothing: skipped"),
    _("entry {word!r} is a single character: it hits every {char!r}, kept"),
    _("entry {word!r} normalises to {key!r} (fewer than 2 characters, it would hit every {char!r}): skipped"),
    _("a rule needs at least one condition (`keywords`, `regex`, `kinds`, `order_status`, `platforms`)"),
    _("no plugin named {name!r} (entry points: {known})"), _("configure failed: {error}"),
    _("{kind} {key!r} is declared by two plugins"), _("empty key"), _("unsupported event {name}"),
    _("set vip_skill_tags, vip_skill_min_level or vip_skill_min_spend to say who is a VIP"),
    # the simulator's scenario checks (router/tools/scenario.py)
    _("unknown time zone {name!r}"), _("expected 24 values (one per hour), got {n}"),
    _("at least one hour needs a rate above 0"), _("at least one category needs a share above 0"),
    _("no texts for category {category!r}: add traffic.texts.{name}"), _("needs at least one text"),
    _("start and end are the same time"), _("expected a platform ({platforms}); got {got!r}"),
    _("the configuration has no shops"),
    # shifts and business hours (router/core/schedule.py)
    _("expected a time between 00:00 and 24:00, got {value!r}"),
    _("expected days like 'mon-fri' or 'sat,sun', got {value!r}"),
    # what ingest says before msgspec does (router/core/ingest.py), and why a reply was not delivered (adapters)
    _("unknown event type (expected agent_status, close, transfer, accept, tick or rating)"), _("not one complete array"),
    _("no adapter for shop {shop!r}"), _("adapter {name!r} cannot send replies"),
    _("shop {shop!r} has no callback_url; reply kept in the outbox"), _("shop {shop!r} has no secret to sign the callback with"),
    _("callback failed: {error}"), _("callback answered {status}"),
    _("PMC carries no chat replies; give the shop a bridge callback_url"),
)
