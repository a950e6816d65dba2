"""Issue 19's features of the sensitive-word filter, each on the C and the pure-Python path:
repeat collapsing, whole-word ASCII entries, letter and digit forms, Chinese numerals in words,
the e-mail, IPv4 and digit-run detectors, the ``on = "original"`` gate, short entries, per-word
replacement, tags and advice (``tests/data/sensitive_features.jsonl`` holds the cases)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins import sensitive
from plugins.sensitive import DEFAULT_PATTERNS, Pattern, SensitiveConfig, WordList, parse_entry
from router.core.config import ConfigErrors, load_config
from tests.conftest import DATA, run_fenliu
from tests.plugins.test_sensitive import DEMO, _replace_sensitive, fold_path  # noqa: F401 - both paths

CASES = [json.loads(line) for line in (DATA / "sensitive_features.jsonl").read_text(encoding="utf-8").splitlines()]
LISTS = (
    WordList(name="contact", words=("微信", "VX", "QQ", "加V", "扣扣", "weixin"), inbound="mask", tag="引流",
             advice="平台内沟通"),
    WordList(name="adult", words=("av", "sex", "69", "fuck"), inbound="mask", tag="色情"),
    WordList(name="abuse", words=("下三滥", "傻逼 | replace=[不文明用语]"), inbound="mask", tag="辱骂"),
    WordList(name="politics", words=("五星红旗",), inbound="flag"),
    WordList(name="ad_law", words=("最好 | advice=很好", "第一 | tag=绝对化用语 | advice=热销"), inbound="off", tag="广告法"),
)


@pytest.fixture(scope="module")
def features():
    return SensitiveConfig(lists=LISTS, allow=("第一次", "第一时间"), patterns=(
        *DEFAULT_PATTERNS, Pattern(name="long_number", detector="digits", length=12))).compile(DEMO)


@pytest.mark.parametrize("case", CASES, ids=[f"{i:02d}-{c['feature']}-{c['dir']}" for i, c in enumerate(CASES)])
def test_feature_corpus(features, case):
    direction = "inbound" if case["dir"] == "in" else "outbound"
    text = case["text"]
    got = [[h.source, h.word, text[h.start:h.end]] for h in features.check(text, direction)]
    assert got == case["hits"]
    if "masked" in case:
        assert features.verdict(text, direction).text == case["masked"]


def test_feature_corpus_covers_every_feature():
    kinds = {c["feature"] for c in CASES}
    for kind in ("repeats", "repeats off inbound", "repeats kept as a minimum", "typed digits never collapse",
                 "whole word", "mixed entry", "circled letters", "digit forms", "roman numerals", "chinese numerals",
                 "email", "ipv4", "digits", "replacement", "clean"):
        assert kind in kinds, kind
    assert sum(not c["hits"] for c in CASES) >= 15  # the near misses that must stay clean


def test_tags_and_advice_ride_on_the_hits(features):
    hits = features.check("亲，我们家最好，全网第一，加我微信", "outbound")
    assert [(h.word, h.tag, h.advice) for h in hits] == [
        ("最好", "广告法", "很好"), ("第一", "绝对化用语", "热销"), ("微信", "引流", "平台内沟通")]
    [phone] = features.check("电话13812345678")
    assert (phone.tag, phone.advice) == ("", "")


def test_collapse_repeats_is_configurable():
    both = SensitiveConfig(lists=LISTS, collapse_repeats=("inbound", "outbound")).compile(DEMO)
    never = SensitiveConfig(lists=LISTS, collapse_repeats=()).compile(DEMO)
    assert [h.word for h in both.check("fffuuucck", "inbound")] == ["fuck"]
    assert never.check("fffuuucck", "outbound") == []
    assert never.matchers["inbound"] is never.matchers["outbound"]


def test_words_without_repeats_share_one_automaton_between_views():
    f = SensitiveConfig(lists=(WordList(name="x", words=("微信", "fuck")),)).compile(DEMO)
    assert f.matchers["inbound"] is not f.matchers["outbound"]
    assert f.matchers["inbound"].ac is f.matchers["outbound"].ac
    g = SensitiveConfig(lists=(WordList(name="x", words=("QQ",)),)).compile(DEMO)
    assert g.matchers["inbound"].ac is not g.matchers["outbound"].ac


def test_original_view_gate_counts_the_text_as_typed():
    """Issue 19's bug: an ``on = "original"`` regex was skipped when the *normalised* text had
    fewer ASCII characters than a match needs (its dots removed)."""
    f = SensitiveConfig(patterns=(Pattern(name="ip", on="original", regex=r"\d+\.\d+\.\d+\.\d+"),)).compile(DEMO)
    assert [h.word for h in f.check("127.0.0.1")] == ["127.0.0.1"]
    assert sensitive.min_ascii(r"\d+\.\d+\.\d+\.\d+") == 7


def test_detectors_configuration():
    p = Pattern(detector="digits", length=12, inbound="mask")
    assert (p.name, p.on) == ("digits", "normalised")
    assert "{12,}" in p.regex
    assert Pattern(detector="digits").regex.endswith("{8,}")
    with pytest.raises(ValueError, match="not both"):
        Pattern(detector="email", regex="x")
    with pytest.raises(ValueError, match="only the digits detector"):
        Pattern(detector="email", length=3)


@pytest.mark.parametrize(("line", "entry"), [
    ("最好", ("最好", "", "", "")),
    ("最好 | advice=很好", ("最好", "", "很好", "")),
    (" 傻逼 |tag=辱骂| replace = [不文明用语] ", ("傻逼", "辱骂", "", "[不文明用语]")),
])
def test_parse_entry(line, entry):
    assert parse_entry(line) == entry


@pytest.mark.parametrize("line", ["最好 | colour=red", "最好 | advice", "| tag=x"])
def test_parse_entry_rejects(line):
    with pytest.raises(ValueError, match="entry"):
        parse_entry(line)


def test_bad_entry_names_file_and_key(fenliu_config_dir):
    with (fenliu_config_dir / "words" / "ad_law.txt").open("a", encoding="utf-8") as f:
        f.write("最好 | advise=很好\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(fenliu_config_dir)
    errors = [str(e) for e in info.value.errors]
    assert any(e.startswith(f"{fenliu_config_dir / 'policies' / 'default.toml'}: sensitive.lists[1].file: entry ")
               and "advise=很好" in e for e in errors), errors


def test_entries_that_normalise_below_two_characters_are_skipped_with_a_warning():
    f = SensitiveConfig(lists=(WordList(name="x", words=("b\x7f", "q\x7f", "操", "...", "傻逼")),)).compile(DEMO, "p.toml")
    assert f.check("bq") == []
    assert [h.word for h in f.check("操")] == ["操"]
    assert f.warnings == (
        "p.toml: sensitive.lists[0].words[0]: entry 'b\\x7f' normalises to 'b' (fewer than 2 characters, it would hit every 'b'): skipped",
        "p.toml: sensitive.lists[0].words[1]: entry 'q\\x7f' normalises to 'q' (fewer than 2 characters, it would hit every 'q'): skipped",
        "p.toml: sensitive.lists[0].words[2]: entry '操' is a single character: it hits every '操', kept",
        "p.toml: sensitive.lists[0].words[3]: entry '...' normalises to nothing: skipped",
    )


def test_check_prints_the_warnings(fenliu_config_dir):
    with (fenliu_config_dir / "words" / "abuse.txt").open("a", encoding="utf-8") as f:
        f.write("b\x7f\n")
    r = run_fenliu("check", "--config", str(fenliu_config_dir))
    assert r.returncode == 0, r.stderr
    assert f"warning: {fenliu_config_dir / 'policies' / 'default.toml'}: sensitive.lists[2].file: entry 'b\\x7f'" in r.stderr


def test_check_reply_shows_tag_and_advice():
    r = run_fenliu("check-reply", "--config", str(DEMO), "--shop", "pdd-1001", "亲，我们家最好，加我ＶＸ")
    assert r.returncode == 1
    assert "'最好' at 5-7 (ad_law, 广告法): '最好' → 很好" in r.stdout
    assert "'VX' at 10-12 (contact, 引流): 'ＶＸ' → 平台内沟通" in r.stdout


def test_demo_config_blocks_emails_as_contact(fenliu_config_dir):
    config = load_config(DEMO)
    [hit] = sensitive.check_text(config.policy_for("pdd-1001").sensitive, "发到 abc@163.com", "outbound")
    assert (hit.source, hit.word, hit.tag) == ("email", "abc@163.com", "引流")


def test_replacement_needs_one_hit_alone_over_its_span(features):
    # 傻逼 has a replacement; a longer overlapping hit masks the whole span instead.
    f = SensitiveConfig(lists=(WordList(name="a", words=("傻逼 | replace=[哔]", "傻逼吧"), inbound="mask"),)).compile(DEMO)
    assert f.verdict("你傻逼吧", "inbound").text == "你＊＊＊"
    assert f.verdict("你傻逼", "inbound").text == "你[哔]"


# -- invariants ---------------------------------------------------------------------------------------

_WORDS = ("av", "sex", "69", "fuck", "微信", "五星红旗", "下三滥", "VX", "加V")
_ALPHABET = list("avsexfuck69微信五星红旗下三滥3VX加 -.ha①⑥Ⓕⓤ一二") + ["have", "Ⓕⓤc⒦", "🅰🆅"]


@pytest.fixture(scope="module")
def words_only():
    return SensitiveConfig(lists=(WordList(name="w", words=_WORDS),), patterns=()).compile(DEMO)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=25).map("".join))
def test_ascii_sides_never_hit_inside_a_word(words_only, text):
    boundary = sensitive.normaliser().boundary
    for direction in ("inbound", "outbound"):
        for h in words_only.hits(text, direction):
            edge = [c for c in h.word if c not in sensitive.normaliser().deleted]
            if edge[0] in boundary:
                assert h.start == 0 or text[h.start - 1] not in boundary
            if edge[-1] in boundary:
                assert h.end == len(text) or text[h.end] not in boundary


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=25).map("".join), st.integers(2, 4))
def test_repeating_characters_changes_nothing_outbound(words_only, text, times):
    """Typing every character (but digits) several times finds the same words, each covering
    the repeats; inbound does not collapse."""
    doubled = "".join(c * (1 if c.isdecimal() else times) for c in text)
    before = [h.word for h in words_only.hits(text, "outbound")]
    after = words_only.hits(doubled, "outbound")
    assert [h.word for h in after] == before
