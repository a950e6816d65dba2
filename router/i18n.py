"""Chinese first, English available: the message catalogue of every text a person reads.

Message ids are English (``router/locale/<lang>/LC_MESSAGES/fenliu.po``; ``pybabel extract -F
babel.cfg``). Two markers, both found by Babel's default keywords:

* ``_("agent {agent!r} is not online", agent=a)`` — a :class:`Text`: a ``str`` holding the English
  text (so logs, ``str(exc)`` and comparisons stay English, for machines and operators' grep) that
  remembers its id and fields, so a boundary translates it late with :func:`t`: an HTTP refusal's
  ``message`` (:func:`router.server.error_body`) and a WebSocket ``result``'s ``reason``, in the
  language of the request that asked (``Accept-Language``, set by :func:`use` per request).
* ``gettext("shop", ...)`` — translated at once, in the current language (the CLI's tables).

msgspec does not encode a :class:`Text` (a ``str`` subclass): what goes into a JSON body goes
through :func:`t` first (``str(text)`` is the English text, also a plain ``str``).

The language: a request's ``?lang=``, else its ``Accept-Language`` when it names a supported one
(router/server.py, per request; a WebSocket keeps its upgrade request's); else the default:
``fenliu --lang``, else ``FENLIU_LANG``, else ``server.lang`` (:func:`configure`), else zh-CN.

The catalogues are read from the ``.po`` files at first use with Babel's ``read_po``: nothing to
compile at install or in the repo, the ``.po`` is the one source (it is a few hundred lines; reading
it costs milliseconds once per process).
"""

from __future__ import annotations

import contextvars
import functools
import os
from pathlib import Path
from typing import Any

LOCALE_DIR = Path(__file__).with_name("locale")
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
    return catalogue(lang or current()).get(msgid, msgid)


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
