"""The word lists as read from their files: one entry a line (``word | tag=… | advice=… |
replace=…``), suspicious entries warned about (and most skipped), the lists a direction never
uses left out. What :func:`build_filter` builds the automata from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from router.core.config import ConfigError, read_word_list

if TYPE_CHECKING:
    from plugins.sensitive.config import SensitiveConfig
    from plugins.sensitive.folding import Normaliser

#: One word-list entry: ``(word, tag, advice, replace)``.
Entry = tuple[str, str, str, str]
_FIELDS = ("tag", "advice", "replace")


def parse_entry(line: str) -> Entry:
    """``word | tag=… | advice=… | replace=…`` (every field optional) → ``(word, tag, advice,
    replace)``. The word lists stay one word a line, readable by any other tool that cuts at
    ``|``; ``ValueError`` says what is wrong."""
    word, *fields = (part.strip() for part in line.split("|"))
    if not word:
        raise ValueError(f"entry {line!r}: no word before '|'")
    values = dict.fromkeys(_FIELDS, "")
    for field in fields:
        key, sep, value = (x.strip() for x in field.partition("="))
        if not sep or key not in values:
            raise ValueError(f"entry {line!r}: {field!r} is not one of `tag=…`, `advice=…`, `replace=…`")
        values[key] = value
    return word, values["tag"], values["advice"], values["replace"]


def too_short(norm: Normaliser, word: str) -> str | None:
    """Why an entry is suspicious, or ``None``: one that normalises to nothing is skipped; one
    that normalises to a single character (``b\x7f`` from a public dictionary) hits that
    character everywhere, so it is skipped unless it was written as that one character (操, a
    deliberate single-character entry). QQ and 谢谢 are fine: collapsing keeps their repeat as a
    minimum (see ``Owner``)."""
    k = norm.normalise(word)
    if len(k) >= 2:
        return None
    if not k:
        return f"entry {word!r} normalises to nothing: skipped"
    written = word.strip()
    if len(written) == 1:
        return f"entry {word!r} is a single character: it hits every {k!r}, kept"
    return f"entry {word!r} normalises to {k!r} (fewer than 2 characters, it would hit every {k!r}): skipped"


def read_list(base: Path, name: str, file: str, key: str) -> list[str]:
    """The lines of a word file, or a ``ConfigError`` naming the key that gave it."""
    path = base / name
    try:
        return read_word_list(path)
    except FileNotFoundError:
        raise ConfigError(file, key, f"file not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: empty, BOM or not UTF-8 (read_word_list)
        raise ConfigError(file, key, f"cannot read {path}: {exc}") from None


class WordLists(msgspec.Struct, frozen=True):
    """The enabled lists of a ``[sensitive]`` section, read: entries by list name, the actions
    of each list, the entries' own mask texts, the allow phrases and the warnings for ``fenliu
    check`` (``file: key: reason``, each once)."""

    lists: tuple[tuple[str, tuple[Entry, ...]], ...]
    actions: dict[str, tuple[str, str]]
    replace: dict[tuple[str, str], str]
    allow: tuple[str, ...]
    warnings: tuple[str, ...]


def read_lists(cfg: SensitiveConfig, base: Path, file: str, norm: Normaliser) -> WordLists:
    """Read every enabled list's inline words and files (relative to ``base``); ``file`` names
    the policy file in errors and warnings."""
    lists: list[tuple[str, tuple[Entry, ...]]] = []
    actions: dict[str, tuple[str, str]] = {}
    replace: dict[tuple[str, str], str] = {}
    warnings: list[str] = []
    for i, wl in enumerate(cfg.lists):
        if wl.inbound == "off" and wl.outbound == "off":
            continue
        lines = [(f"sensitive.lists[{i}].words[{j}]", w) for j, w in enumerate(wl.words)]
        files = [(f"sensitive.lists[{i}].file", wl.file)] if wl.file else []
        files += [(f"sensitive.lists[{i}].extra_files[{j}]", f) for j, f in enumerate(wl.extra_files)]
        for key, name in files:
            lines += [(key, w) for w in read_list(base, name, file, key)]
        entries: list[Entry] = []
        for key, line in lines:
            try:
                word, tag, advice, rep = parse_entry(line)
            except ValueError as exc:
                raise ConfigError(file, key, str(exc)) from None
            short = too_short(norm, word)
            if short is not None:
                warnings.append(f"{file}: {key}: {short}")
                if not short.endswith("kept"):
                    continue
            entries.append((word, tag or wl.tag, advice or wl.advice, rep))
            if rep:
                replace[(word, wl.name)] = rep
        lists.append((wl.name, tuple(entries)))
        actions[wl.name] = (wl.inbound, wl.outbound)
    allow = list(cfg.allow)
    for j, name in enumerate(cfg.allow_files):
        allow += read_list(base, name, file, f"sensitive.allow_files[{j}]")
    return WordLists(tuple(lists), actions, replace, tuple(allow), tuple(dict.fromkeys(warnings)))
