"""The sensitive-word plugin: normalisation, positions, masking, allow-list, patterns, config
errors, the hooks through the router, ``fenliu route`` and ``fenliu check-reply``."""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins import sensitive
from plugins.sensitive import (
    Matcher,
    Pattern,
    SensitiveConfig,
    WordList,
    check_text,
    min_ascii,
    normalise,
    normaliser,
)
from router.core.config import ConfigErrors, load_config
from router.core.models import Hit
from router.core.textcache import clear_text_caches
from tests.conftest import DATA, ROOT, T0, run_fenliu

DEMO = ROOT / "config"
CORPUS = [json.loads(line) for line in (DATA / "sensitive_corpus.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo():
    return load_config(DEMO)


@pytest.fixture(scope="module", autouse=True, params=["c-fold", "pure-python"])
def fold_path(request):
    """Every test here runs twice: with the C fold (``plugins._fold``) and with the pure-Python
    path a machine without a compiler uses."""
    norm = normaliser()
    native = norm.fold, norm.fold_spans
    if request.param == "pure-python":
        norm.fold = norm.fold_spans = None
    elif native[0] is None:
        pytest.skip("plugins._fold is not built (no C compiler at install time)")
    clear_text_caches()  # verdicts the other path cached would hide this one's
    yield request.param
    norm.fold, norm.fold_spans = native
    clear_text_caches()


def test_c_fold_is_built_where_a_compiler_is():
    """CI has gcc: the C path must really be what the other tests exercise there."""
    import shutil
    import sysconfig

    if not (shutil.which("cc") or shutil.which("gcc")) or not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        pytest.skip("no C compiler or Python headers: the pure-Python path is the only one")
    assert sensitive.Folder is not None, "plugins._fold did not build: reinstall with `pip install -e .`"


_FOLD_ALPHABET = st.one_of(
    st.sampled_from(list("微信加VXvxＶＸ支付寶①③⑧一三八0123456789 -.，。！？\u200b\ufeff\u0301İßﬁ™㎏🌹𝐕\U00020000\U0002F800"
                         "ffuu五五星星١١٣Ⓐⓐ⒜❶➀➊⓵⓿ⅣⅣ🅐🅰ᴀéē11")),
    st.characters(codec="utf-8"),
)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_FOLD_ALPHABET, max_size=80))
def test_c_fold_equals_translate_with_the_table(text):
    """The C fold is ``str.translate`` with the table, plus the ASCII and digit counts of both
    texts, and its ``words`` is the pure-Python collapse (counted by ``repeats``)."""
    norm = normaliser()
    if sensitive.Folder is None:
        pytest.skip("plugins._fold is not built")
    folder = _c_folder()
    n, same, ascii_n, digits_n, ascii_in, digits_in, run = folder.fold(text)
    assert run == max(map(len, re.findall("[0-9]+", text.translate(norm.table))), default=0)
    expected = text.translate(norm.table)
    assert same is n
    assert n == expected
    assert ascii_n == sum(c.isascii() for c in expected)
    assert digits_n == sum(c in "0123456789" for c in expected)
    assert ascii_in == sum(c.isascii() for c in text)
    assert digits_in == sum(c in "0123456789" for c in text)
    if expected == text:
        assert n is text
    w = folder.words(text)
    assert w == norm.words(text) == norm.words(text, expected) == folder.fold(text, True)[1]
    folded, collapsed, *_ = folder.fold(text, True)
    assert folded == n
    if w == n:
        assert collapsed is folded
    assert list(memoryview(folder.spans(text)).cast("i")) == _python_spans(text)
    assert list(memoryview(folder.spans(text, False)).cast("i")) == [x for i in normaliser().positions(text) for x in (i, i, 1)]


def _python_spans(text):
    return normaliser()._spans(text)


@functools.cache
def _c_folder():
    return sensitive.Folder(sensitive.array("i", (-1 if v is None else v for v in normaliser().table)))


def test_c_fold_rejects_bad_tables():
    if sensitive.Folder is None:
        pytest.skip("plugins._fold is not built")
    with pytest.raises(ValueError, match="code point"):
        sensitive.Folder(sensitive.array("i", [0, -5]))
    with pytest.raises(ValueError, match="non-empty"):
        sensitive.Folder(b"")
    with pytest.raises(TypeError):
        sensitive.Folder(sensitive.array("i", [0])).fold(b"x")
    with pytest.raises(TypeError):
        sensitive.Folder(sensitive.array("i", [0])).words(b"x")


def compiled(**kw) -> sensitive.SensitiveFilter:
    kw.setdefault("lists", (WordList(name="contact", words=("微信", "VX", "支付宝", "二维码", "加微信"),
                                     inbound="mask"),
                            WordList(name="ad_law", words=("第一", "最好"), inbound="off")))
    return SensitiveConfig(**kw).compile(DEMO)


# -- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normal"), [
    ("微 信", "微信"), ("微-信", "微信"), ("微.信", "微信"), ("微*信", "微信"), ("微_信", "微信"),
    ("微\u3000信", "微信"), ("微，信", "微信"), ("微🌹信", "微信"),
    ("微\u200b信", "微信"), ("微\u200c信", "微信"), ("微\u200d信", "微信"), ("微\ufeff信", "微信"),
    ("微\u2060信", "微信"), ("ＶＸ", "vx"), ("Vx", "vx"), ("VX", "vx"), ("ｖｘ", "vx"),
    ("①③⑧", "138"), ("１３８", "138"), ("支付寶", "支付宝"), ("二維碼", "2维码"), ("聯繫", "联系"),
    ("𝐕𝐗", "vx"), ("Ａ-Ｂ c", "abc"),
])
def test_normalise_undoes_evasions(raw, normal):
    assert normalise(raw) == normal


def test_chinese_numerals_are_digits_for_words_and_patterns():
    assert normalise("第一") == normalise("第1") == "第1"
    f = compiled()
    assert [h.source for h in f.hits("电话一三八一二三四五六七八")] == ["phone_number"]
    assert [h.word for h in f.hits("全网第1")] == ["第一"]


def test_table_is_idempotent_and_one_to_one():
    table = normaliser().table
    for cp in range(0, 0x20000, 7):
        v = table[cp]
        assert v is None or v >= len(table) or table[v] == v, hex(cp)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(
    list("微信加我VXvx支付寶宝扫码 -.*_，。！？%：～、①③⑧ＶＸＱ一三八0123456789第最好\u200b\ufeffAbC"
         "五五微微ffuu١٣Ⓥ❶ē")), max_size=40))
def test_fast_path_equals_full_translation_and_positions_map_back(text):
    """Whatever shortcut ``scan`` takes, the text it matches is the full normalisation, and the
    position map sends every normalised character back to the character it came from."""
    f = compiled()
    n, _ = f.matchers["inbound"].scan(text)
    assert n == normalise(text)
    pos = normaliser().positions(text)
    assert len(pos) == len(n)
    assert "".join(normalise(text[i]) for i in pos) == n
    w, _ = f.matchers["outbound"].scan(text)
    assert w == sensitive.normalise_words(text)
    spans = normaliser().word_spans(text)
    lazy = normaliser().flat_spans(text, n)
    assert list(lazy) == [x for span in spans for x in span]
    assert "".join(normalise(text[i]) for i, _, _ in spans) == w
    assert all(normalise(text[i]) == normalise(text[j]) for i, j, _ in spans)
    assert sum(c for _, _, c in spans) == len(n)


# -- positions, masking, allow-list ---------------------------------------------------------------


def test_hits_report_original_positions_including_inserted_separators():
    f = compiled()
    text = "亲，加我 微 - 信吧"
    [hit] = f.hits(text)
    assert hit == Hit("微信", 5, 10, "contact")
    assert text[hit.start:hit.end] == "微 - 信"
    assert f.mask(text, [hit]) == "亲，加我 ＊＊＊＊＊吧"


def test_full_width_and_traditional_hits_keep_original_text():
    f = compiled()
    text = "用支付寶或ＶＸ"
    hits = f.hits(text)
    assert [(h.word, text[h.start:h.end]) for h in hits] == [("支付宝", "支付寶"), ("VX", "ＶＸ")]


def test_nested_hits_of_one_list_report_the_longest():
    assert [h.word for h in compiled().hits("加微信")] == ["加微信"]


def test_allow_list_drops_hits_inside_allowed_phrases_only():
    f = compiled(allow=("第一次", "最好先"))
    assert f.check("第一次买", "outbound") == []
    assert f.check("您最好先量尺码", "outbound") == []
    assert [h.word for h in f.check("第一次买，全网第一", "outbound")] == ["第一"]
    assert [h.word for h in f.check("这款最好看", "outbound")] == ["最好"]


def test_allow_file_is_read(tmp_path):
    (tmp_path / "allow.txt").write_text("# harmless\n第一时间\n", encoding="utf-8")
    f = SensitiveConfig(lists=(WordList(name="ad", words=("第一",)),), allow_files=("allow.txt",)).compile(tmp_path)
    assert f.check("第一时间发货") == []


def test_directions_and_off():
    f = compiled()
    assert check_text(f, "我们家最好", "inbound") == []
    assert [h.word for h in check_text(f, "我们家最好", "outbound")] == ["最好"]


def test_verdicts_block_mask_flag():
    f = SensitiveConfig(lists=(
        WordList(name="c", words=("微信",), inbound="block", outbound="mask"),
        WordList(name="a", words=("傻逼",), inbound="mask", outbound="block"),
        WordList(name="w", words=("便宜",), inbound="flag", outbound="off"),
    ), patterns=()).compile(DEMO)
    v = f.verdict("加微信，便宜", "inbound")
    assert v.action == "block" and v.reason == "敏感词: 微信"
    assert v.flags == ("sensitive:微信", "sensitive:便宜")
    v = f.verdict("傻逼，便宜", "inbound")
    assert (v.action, v.text, v.flags) == ("mask", "＊＊，便宜", ("sensitive:傻逼", "sensitive:便宜"))
    assert f.verdict("便宜点", "inbound").action == "flag"
    v = f.verdict("加微 信", "outbound")
    assert (v.action, v.text) == ("mask", "加＊＊＊")
    assert f.verdict("便宜点", "outbound") is None


def test_mask_char_is_configurable():
    f = compiled(mask_char="*")
    assert f.verdict("加我微信", "inbound").text == "加我**"


# -- patterns ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "13812345678", "138 1234 5678", "138-1234-5678", "①③⑧①②③④⑤⑥⑦⑧", "一三八一二三四五六七八",
    "幺三八幺二三四五六七八", "１３８１２３４５６７８", "电话：138.1234.5678。",
])
def test_phone_number_forms(text):
    assert [h.source for h in compiled().hits(text)] == ["phone_number"]


@pytest.mark.parametrize("text", ["订单号2401018812345678", "SF1234567890123", "共299元，3件", "1380000"])
def test_numbers_that_are_not_phones(text):
    assert compiled().hits(text) == []


def test_qq_wechat_url_patterns():
    f = compiled(lists=())
    assert [h.source for h in f.hits("加我QQ：12345678")] == ["qq_number"]
    assert [h.source for h in f.hits("微信号：shop_abc88")] == ["wechat_id"]
    [url] = f.hits("看 https://t.cn/A6x 这个")
    assert (url.source, url.word) == ("url", "https://t.cn/A6x")
    assert [h.source for h in f.hits("www.Example.COM")] == ["url"]


def test_pattern_flags_name_the_pattern_not_the_number():
    v = compiled().verdict("电话13812345678", "inbound")
    assert v.flags == ("sensitive:phone_number",)
    assert v.text == "电话＊＊＊＊＊＊＊＊＊＊＊"


def test_min_ascii_gates():
    assert min_ascii(r"1[3-9][0-9]{9}") == 11
    assert min_ascii(r"1[3-9][0-9]{9}", digits=True) == 11
    assert min_ascii(r"(?:qq|扣扣)[1-9][0-9]{4,10}") == 5
    assert min_ascii(r"(?:微信|vx)[a-z]{6}", digits=True) == 0
    assert min_ascii(r"微信.*") == 0
    assert min_ascii(r"https?://[a-z]+", ignore_case=True) == 3
    assert sensitive.min_run(r"1(?<![0-9]1)[3-9][0-9]{9}(?![0-9])") == 11
    assert sensitive.min_run(r"(?:qq|扣扣)(?:号)?[1-9][0-9]{4,10}") == 5
    assert sensitive.min_run(r"\d{3}-\d{4}") == 4
    assert sensitive.min_run(r"(?:12|345)67") == 2


def test_custom_pattern_with_original_view():
    f = compiled(lists=(), patterns=(Pattern(name="order", regex=r"DD-\d+", on="original", outbound="mask"),))
    assert f.verdict("单号 DD-123", "outbound").text == "单号 ＊＊＊＊＊＊"


# -- configuration ------------------------------------------------------------------------------------


def _policy(config_dir: Path, name: str = "default") -> Path:
    return config_dir / "policies" / f"{name}.toml"


def _replace_sensitive(config_dir: Path, table: str) -> Path:
    """Replace the demo's [sensitive] table of default.toml (it is the file's last table)."""
    path = _policy(config_dir)
    text = path.read_text(encoding="utf-8")
    head, sep, _ = text.partition("\n[sensitive]\n")
    assert sep
    path.write_text(head + "\n" + table, encoding="utf-8")
    return path


def _errors(config_dir: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(config_dir)
    return [str(e) for e in info.value.errors]


def test_bad_regex_names_file_and_key(fenliu_config_dir):
    path = _replace_sensitive(fenliu_config_dir, """[sensitive]
patterns = [
    { name = "a", regex = "1[3-9]" },
    { name = "b", regex = "x" },
    { name = "c", regex = "(unclosed" },
]
""")
    [error] = _errors(fenliu_config_dir)
    assert error.startswith(f"{path}: sensitive.patterns[2].regex: invalid regular expression: missing )")


def test_missing_word_file_names_file_and_key(fenliu_config_dir):
    path = _replace_sensitive(fenliu_config_dir, """[sensitive]
lists = [{ name = "contact", file = "words/nope.txt" }]
""")
    [error] = _errors(fenliu_config_dir)
    assert error == f"{path}: sensitive.lists[0].file: file not found: {fenliu_config_dir / 'words/nope.txt'}"


@pytest.mark.parametrize(("table", "key", "reason"), [
    ('lists = [{ name = "x", file = "words/contact.txt", outbound = "flag" }]', "sensitive.lists[0].outbound", "invalid enum value 'flag'"),
    ('lists = [{ name = "x", file = "words/contact.txt", colour = "red" }]', "sensitive.lists[0].colour", "unknown key"),
    ('lists = [{ file = "words/contact.txt" }]', "sensitive.lists[0].name", "every list needs a name"),
    ('mask_char = "**"', "sensitive.mask_char", "expected str of length <= 1"),
    ('allow_files = ["words/none.txt"]', "sensitive.allow_files[0]", "file not found"),
])
def test_config_errors(fenliu_config_dir, table, key, reason):
    path = _replace_sensitive(fenliu_config_dir, f"[sensitive]\n{table}\n")
    [error] = _errors(fenliu_config_dir)
    assert error.startswith(f"{path}: {key}: ") and reason in error, error


def test_one_automaton_per_distinct_set_of_lists(fenliu_config_dir):
    vip = _policy(fenliu_config_dir, "vip")
    text = vip.read_text(encoding="utf-8").replace('inbound = "block", outbound = "mask" }', 'inbound = "mask", outbound = "block" }')
    vip.write_text(text, encoding="utf-8")
    config = load_config(fenliu_config_dir)
    a, b = (config.policies[n].sensitive.filter for n in ("default", "vip"))
    assert a.matcher is b.matcher
    assert a.actions["contact"] != b.actions["ad_law"]


def test_reload_rebuilds_from_the_word_files(fenliu_config_dir):
    first = load_config(fenliu_config_dir)
    with (fenliu_config_dir / "words" / "contact.txt").open("a", encoding="utf-8") as f:
        f.write("小红书\n")
    second = load_config(fenliu_config_dir)
    shop = "pdd-1001"
    assert check_text(first.policy_for(shop).sensitive, "小红书见") == []
    assert [h.word for h in check_text(second.policy_for(shop).sensitive, "小红书见")] == ["小红书"]
    assert first.policy_for(shop).sensitive.filter.matcher is not second.policy_for(shop).sensitive.filter.matcher


def test_uncompiled_section_says_so():
    with pytest.raises(RuntimeError, match="not compiled"):
        check_text(SensitiveConfig(), "微信")


def test_disabled_section_finds_nothing():
    assert compiled(enabled=False).hits("微信") == []


def test_matcher_words_are_listed_once_per_source():
    m = Matcher([("contact", [(w, "", "", "") for w in ("VX", "vx", "ＶＸ")]), ("other", [("vx", "引流", "平台内沟通", "")])], [])
    assert m.n_words == 1
    assert m.owners[0] == [("VX", "contact", "", "", True, True, None), ("vx", "contact", "", "", True, True, None),
                           ("ＶＸ", "contact", "", "", True, True, None), ("vx", "other", "引流", "平台内沟通", True, True, None)]


# -- the corpus ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[f"{i:03d}-{c['dir']}-{c['expect']}" for i, c in enumerate(CORPUS)])
def test_corpus(demo, case):
    f = demo.policy_for(case["shop"]).sensitive.filter
    v = f.verdict(case["text"], "inbound" if case["dir"] == "in" else "outbound")
    if case["expect"] == "clean":
        assert v is None, v
        return
    assert v is not None
    assert v.action == case["expect"]
    assert sorted(v.flags) == sorted(case["flags"])
    if "masked" in case:
        assert v.text == case["masked"]
    for h in v.hits:
        assert 0 <= h.start < h.end <= len(case["text"])


def test_corpus_covers_everything():
    notes = " ".join(c.get("note", "") for c in CORPUS)
    assert len(CORPUS) >= 110
    assert {c["dir"] for c in CORPUS} == {"in", "out"}
    assert {c["expect"] for c in CORPUS} == {"clean", "flag", "mask", "block"}
    flags = {f for c in CORPUS for f in c["flags"]}
    for source in ("phone_number", "qq_number", "wechat_id", "url"):
        assert f"sensitive:{source}" in flags
    for word in ("sensitive:微信", "sensitive:最好", "sensitive:傻逼", "sensitive:薇信", "sensitive:weixin"):
        assert word in flags
    for form in ("spaces", "hyphen", "dot", "asterisk", "zero-width", "full-width", "traditional",
                 "circled digits", "Chinese digits", "homophone", "pinyin", "allow-list"):
        assert form in notes or any(form in c.get("note", "") for c in CORPUS), form


# -- through the router --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_inbound_hook_through_the_router(fenliu_harness):
    h = fenliu_harness()
    d = await h.send(shop_id="pdd-1001", buyer_id="b-1", text="加我 微-信，电话13812345678")
    assert d.action in ("assigned", "queued", "answered")
    assert d.text == "加我 ＊＊＊，电话＊＊＊＊＊＊＊＊＊＊＊"
    assert {"sensitive:微信", "sensitive:phone_number"} <= set(d.flags)
    d = await h.send(shop_id="tb-2001", buyer_id="b-2", text="加我ＶＸ")
    assert d.action == "blocked" and d.text is None and "sensitive:VX" in d.flags
    d = await h.send(shop_id="pdd-1001", buyer_id="b-3", text="你们家最好的是哪款")
    assert not any(f.startswith("sensitive:") for f in d.flags)


@pytest.mark.anyio
async def test_outbound_hook_through_the_router(fenliu_harness):
    h = fenliu_harness()
    r = await h.check_reply("pdd-1001", "亲，我们家最好，加我微.信")
    assert not r.ok and r.reason == "违禁词: 最好、微信"
    assert [(x.word, x.start, x.end) for x in r.hits] == [("最好", 5, 7), ("微信", 10, 13)]
    r = await h.check_reply("tb-2001", "顶级音质")
    assert r.ok and r.text == "＊＊音质"
    r = await h.check_reply("pdd-1001", "亲，第一次购买可以领券")
    assert r.ok and r.text == "亲，第一次购买可以领券" and not r.hits


# -- end to end: the command line ----------------------------------------------------------------------


def test_route_end_to_end(tmp_path):
    lines = [
        {"shop_id": "pdd-1001", "msg_id": "s-1", "buyer_id": "b-1", "text": "这件羽绒服有XL码吗", "ts": T0},
        {"shop_id": "pdd-1001", "msg_id": "s-2", "buyer_id": "b-2", "text": "加我 V x，支付寶转你", "ts": T0 + 1},
        {"shop_id": "tb-2001", "msg_id": "s-3", "buyer_id": "b-3", "text": "加微\u200b信聊", "ts": T0 + 2},
        {"shop_id": "pdd-1001", "msg_id": "s-4", "buyer_id": "b-4", "text": "你们客服是傻 逼吗", "ts": T0 + 3},
        {"shop_id": "pdd-1001", "msg_id": "s-5", "buyer_id": "b-5", "text": "电话①③⑧一二三四五六七八", "ts": T0 + 4},
        {"shop_id": "pdd-1001", "msg_id": "s-6", "buyer_id": "b-6", "text": "看 https://t.cn/x1 这个", "ts": T0 + 5},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    result = run_fenliu("route", "--config", str(DEMO), str(path))
    assert result.returncode == 0, result.stderr
    out = {d["msg_id"]: d for d in map(json.loads, result.stdout.splitlines())}
    assert not any(f.startswith("sensitive:") for f in out["s-1"]["flags"])
    assert out["s-2"]["text"] == "加我 ＊＊＊，＊＊＊转你"
    assert {"sensitive:VX", "sensitive:支付宝"} <= set(out["s-2"]["flags"])
    assert out["s-3"]["action"] == "blocked" and out["s-3"]["text"] is None
    assert "sensitive:加微信" in out["s-3"]["flags"]
    assert out["s-4"]["text"] == "你们客服是＊＊＊吗"
    assert out["s-5"]["text"] == "电话＊＊＊＊＊＊＊＊＊＊＊" and "sensitive:phone_number" in out["s-5"]["flags"]
    assert out["s-6"]["text"] == "看 https://t.cn/x1 这个" and "sensitive:url" in out["s-6"]["flags"]
    for d in out.values():
        if d["action"] != "blocked":
            assert d["action"] in ("assigned", "queued", "answered")


def test_check_reply_exit_codes_and_output():
    clean = run_fenliu("check-reply", "--config", str(DEMO), "--shop", "pdd-1001", "亲，第一次购买可以领券哦")
    assert (clean.returncode, clean.stdout.strip()) == (0, "ok")
    bad = run_fenliu("check-reply", "--config", str(DEMO), "--shop", "pdd-1001", "亲，加我ＶＸ，全网最低价")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == "blocked: 违禁词: VX、全网最低、最低价"
    assert "'VX' at 4-6 (contact, 引流): 'ＶＸ' → 平台内沟通" in bad.stdout
    assert "'全网最低' at 7-11 (ad_law, 广告法)" in bad.stdout
    masked = run_fenliu("check-reply", "--config", str(DEMO), "--shop", "tb-2001", "顶级音质")
    assert (masked.returncode, masked.stdout.strip()) == (0, "ok (masked): ＊＊音质")
    unknown = run_fenliu("check-reply", "--config", str(DEMO), "--shop", "nope", "hi")
    assert unknown.returncode == 2


def test_check_reply_reports_config_errors(fenliu_config_dir):
    _replace_sensitive(fenliu_config_dir, '[sensitive]\npatterns = [{ name = "x", regex = "[" }]\n')
    r = run_fenliu("check-reply", "--config", str(fenliu_config_dir), "--shop", "pdd-1001", "hi")
    assert r.returncode == 1
    assert re.search(r"default\.toml: sensitive\.patterns\[0\]\.regex: invalid regular expression", r.stderr)


def test_policy_section_struct_contract():
    assert SensitiveConfig.__struct_config__.forbid_unknown_fields
    with pytest.raises(TypeError):
        SensitiveConfig(True)  # type: ignore[misc]
    assert msgspec.convert({}, SensitiveConfig).patterns == sensitive.DEFAULT_PATTERNS


# -- fast paths agree with the plain definition -------------------------------------------------------


def _reference_hits(f: sensitive.SensitiveFilter, text: str, direction: str = "inbound") -> list[Hit]:
    """``hits`` computed the slow, obvious way: one full ``str.translate`` (and the run map for a
    collapsing direction), per-character positions, containment and word boundaries tested pair
    by pair, every pattern run without gates."""
    m = f.matchers[direction]
    norm = normaliser()
    n = normalise(text)
    pos = norm.positions(text)
    if m.collapse:
        w, spans = norm.words(text), norm.word_spans(text)
    else:
        w, spans = n, [(p, p, 1) for p in pos]
    ms = m.ac.find_matches_as_indexes(w, overlapping=True)
    allowed = [(spans[a][0], spans[b - 1][1] + 1) for i, a, b in ms if m.n_words <= i < m.n_allow]

    def inside_word(i: int) -> bool:
        return 0 <= i < len(text) and normalise(text[i]).isascii() and normalise(text[i]).isalnum() \
            and unicodedata.category(text[i]) != "Lo"

    rows = []
    for i, a, b in ms:
        start, end = spans[a][0], spans[b - 1][1] + 1
        if i < m.n_words and not any(s <= start and end <= e for s, e in allowed):
            for word, source, tag, advice, left, right, runs in m.owners[i]:
                if runs and any(spans[a + k][2] < r for k, r in enumerate(runs)):
                    continue
                if not (left and inside_word(start - 1) or right and inside_word(end)):
                    rows.append((start, end, word, source, source, tag, advice))
    for r in f._rules[direction]:
        for mo in r.regex.finditer(text if r.original else n):
            a, b = mo.span()
            if b <= a:
                continue
            if not r.original:
                a, b = pos[a], pos[b - 1] + 1
            if not any(s <= a and b <= e for s, e in allowed):
                rows.append((a, b, text[a:b], r.name, "", r.tag, r.advice))
    rows.sort(key=lambda x: (x[0], -x[1]))  # stable: words before patterns, list order kept
    kept = [x for x in rows if not any(y[4] == x[4] and y[0] <= x[0] and x[1] <= y[1] and y[:2] != x[:2] for y in rows)]
    return [Hit(word, start, end, source, tag, advice) for start, end, word, source, _, tag, advice in kept]


_AGREE = list("微信加我VXvxQq支付寶宝扫码扣企鹅号 -.*_，。！？%：～、①③⑧ＶＸＱ一三八幺0123456789第最好次先时间"
              "\u200b\ufeffAbChttps:/wt.cnom🌹𝐕@五六九hae")


@pytest.fixture(scope="module")
def agree_filter():
    return SensitiveConfig(lists=(
        WordList(name="contact", words=("微信", "VX", "QQ", "支付宝", "扫码", "加微信", "扣扣", "qqq", "加我", "加V"),
                 inbound="mask", tag="引流"),
        WordList(name="ad_law", words=("第一 | advice=热销", "最好 | advice=很好", "第一次买"), inbound="off"),
        WordList(name="adult", words=("av", "69", "五星", "扣扣 | tag=引流")),
    ), allow=("第一次", "最好先", "第一时间", "扫码领券")).compile(DEMO)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_AGREE + ["av", "have", "69", "微微", "1.2.3.4", "五五", "qq", "扣扣扣"]), max_size=30)
       .map("".join))
def test_hits_agree_with_the_plain_definition(agree_filter, text):
    """The shortcuts of ``hits`` (matches sorted and sliced by kind, allow-list by set difference,
    ``str.find`` instead of the position map, the run-based position map, the pattern gates)
    change nothing, in either view."""
    assert agree_filter.hits(text, "inbound") == _reference_hits(agree_filter, text, "inbound")
    assert agree_filter.hits(text, "outbound") == _reference_hits(agree_filter, text, "outbound")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(_AGREE + list("（）【】…· \t\n")), max_size=60))
def test_locator_equals_positions(text):
    norm = normaliser()
    pos = norm.positions(text)
    locate = norm.locator(text, len(normalise(text)))
    assert [locate(j) for j in range(len(pos))] == pos


def test_table_is_idempotent_everywhere():
    """``_report`` finds words typed as listed with ``str.find``: that needs every character of a
    normalised text to be a fixed point of the table."""
    table = normaliser().table
    assert all(v is None or v >= len(table) or table[v] == v for v in table)


@pytest.mark.parametrize("text", ["qqq", "加微信加微信", "第一第一次第一", "微 信微信", "扣扣扣扣", "VXvx微信VX"])
def test_repeated_and_overlapping_words_keep_their_positions(agree_filter, text):
    for direction in ("inbound", "outbound"):
        assert agree_filter.hits(text, direction) == _reference_hits(agree_filter, text, direction)
