"""The pages' strings live in one JSON catalogue per language (router/service/web/i18n/): both catalogues
have the same keys and placeholders, every key the pages use exists, and the pages themselves
(JS, HTML, CSS outside comments) hold no Chinese text of their own."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "router" / "service" / "web"
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
LANGS = ("zh-CN", "en")


def catalogue(lang: str) -> dict[str, str]:
    return json.loads((WEB / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


def without_comments(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    if path.suffix == ".js":  # a // comment starts a line or follows a space (not a URL's //)
        text = "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.split("\n"))
    return text


def pages() -> list[Path]:
    return sorted(p for ext in ("*.js", "*.html", "*.css") for p in WEB.glob(ext))


def test_both_catalogues_have_the_same_keys_and_placeholders():
    zh, en = catalogue("zh-CN"), catalogue("en")
    assert sorted(zh) == sorted(en)
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert sorted(re.findall(r"\{\d+\}", zh[key])) == sorted(re.findall(r"\{\d+\}", en[key])), key


def test_english_is_english():
    for key, text in catalogue("en").items():
        if key.startswith("lang."):
            continue  # the switch back names the other language in its own words
        rest = re.sub(r"运费险", "", text)  # a quick reply's keyword, typed as the buyer types it
        assert not CJK.search(rest), (key, text)


def test_every_key_the_pages_use_is_in_the_catalogue():
    keys = set(catalogue("zh-CN"))
    used = set()
    for path in pages():
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bT\('([\w.]+)'", text))
        used |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', text))
    assert used, "no catalogue keys found in the pages"
    assert sorted(used - keys) == []


def test_the_pages_hold_no_chinese_of_their_own():
    found = []
    for path in pages():
        for n, line in enumerate(without_comments(path).split("\n"), 1):
            if CJK.search(line):
                found.append(f"{path.name}:{n}: {line.strip()[:100]}")
    assert found == [], "strings a person reads belong in router/service/web/i18n/*.json:\n" + "\n".join(found)
