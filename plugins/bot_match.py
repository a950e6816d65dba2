"""Matching a buyer's message to FAQ entries by meaning (the bot's 语义匹配).

Built once per configuration (``fenliu_configure``), used on the hot path:

1. **Normalise**: NFKC (full-width letters and digits become ASCII), lower case.
2. **Segment** with jieba (``rjieba``, the Rust jieba-rs: ~5 µs a message), on a private
   dictionary that also knows every synonym, FAQ keyword and caution word as one word.
3. **Canonicalise** each token through the synonym list (寄出→发货, 号→码, 邮费→运费 …): the
   shipped defaults below plus ``config/synonyms.toml``. Single characters and stop words
   (的, 吗, 请问 …) are dropped unless the synonym list names them.
4. **Rank** with TF-IDF cosine similarity (scikit-learn's ``TfidfVectorizer``, sublinear tf,
   l2 norm) between the message and every document of the policy's entries: each entry's
   ``keywords`` and ``questions`` (相似问法) are its documents, the entry scores its best one.
   The fitted vocabulary, idf and normalised document matrix are turned into an inverted index
   (token → documents, weights), so a message costs a dictionary look-up per token and no
   scipy call (see bench/bench_bot.py).
5. **Decide**: ``answer`` when the best entry scores at least ``answer_threshold``, leads the
   runner-up (another entry) by ``margin`` and the message carries no caution word the entry
   itself lacks (投诉 aside, words of trouble: 还没, 为什么, 查不到, 不需要 …); ``suggest`` when it
   scores at least ``suggest_threshold``; otherwise ``none``.

Why TF-IDF cosine (measured on tests/data/bot_faq_labelled.jsonl, docs/plugins/bot.md): scores
in 0..1 make thresholds a shop can reason about, idf keeps filler words from deciding, and it
was the most precise of the three libraries tried (bm25s, rapidfuzz, scikit-learn).
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from router.core.textcache import text_cache

#: Synonym groups shipped by default; the first word of a group is what the others become.
DEFAULT_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("发货", "寄出", "寄出来", "寄出去", "发出", "发出来", "发出去", "出库", "出货", "寄走", "发走", "寄", "发",
     "安排发货", "寄过来", "发过来"),
    ("几天", "多久", "多长时间", "几时", "什么时候", "啥时候", "哪天", "几号", "多少天", "多少时间", "几日"),
    ("下单", "拍", "拍下", "拍了", "购买", "买", "付款", "付完款", "付钱", "买了", "下单后", "拍下后"),
    ("快递", "物流", "快递公司", "物流公司", "配送", "包裹", "件", "运单"),
    ("哪家", "哪一家", "哪个快递", "什么快递", "啥快递", "啥物流"),
    ("顺丰", "中通", "圆通", "韵达", "申通", "邮政", "京东", "京东物流", "ems", "极兔", "德邦"),
    ("到哪", "到哪里", "到哪儿", "在哪", "在哪里", "在哪儿", "什么位置", "什么地方", "哪一站", "到哪了",
     "运输进度", "进度", "更新", "运到哪", "查物流", "查快递", "查一下物流", "查下物流"),
    ("单号", "运单号", "快递单号", "物流单号"),
    ("修改", "改", "更改", "更正", "变更", "调整", "改成", "换成"),
    ("地址", "收货地址", "收件地址", "收货信息", "收件信息", "收货人", "收件人", "地方", "位置", "新家", "单位", "公司地址",
     "省市"),
    ("码", "号", "码数", "尺码", "尺寸", "大小", "码子", "尺码表", "尺寸表", "s", "m", "l", "xl", "xxl", "大一码",
     "大一号", "小一码", "小一号"),
    ("身高", "个子", "一米", "身材", "胸围", "腰围", "体重", "斤", "胖", "瘦"),
    ("偏大", "宽松", "偏小", "紧", "合身", "合适"),
    ("运费", "邮费", "快递费", "邮资", "来回邮费", "寄的钱", "寄回的钱"),
    ("退货", "退", "退回", "寄回", "寄回去", "寄回来", "退回去", "退换", "退掉", "返回", "换货", "换", "包退"),
    ("谁出", "谁付", "谁承担", "承担", "谁管", "谁包", "自己出", "报销运费", "你们包"),
    ("运费险", "退货险", "退换险", "保险"),
    ("优惠券", "券", "红包", "优惠", "折扣", "打折", "立减", "便宜", "降价", "少点", "低", "领券"),
    ("满减", "减免", "减钱", "少钱", "满多少减", "凑单", "合在一起", "多买", "几件", "两件"),
    ("发票", "开票", "票据", "凭证", "专票", "普票", "单据", "增值税", "单子", "报销", "抬头"),
    ("正品", "原装", "真货", "正版", "官方授权", "授权", "假货", "高仿", "防伪", "保真"),
    ("保修", "维修", "修", "质保", "联保", "管修", "包修", "保修期", "毛病", "故障"),
    ("充电功率", "快充", "充电速度", "充电快", "功率", "瓦", "w", "几w", "充满", "充满电"),
    ("充电器", "充电头", "充电插头"),
    ("口感", "甜", "甜度", "糖度", "酸", "口味", "味道", "好吃", "水分", "甜不甜", "酸不酸"),
    ("保存", "储存", "存放", "搁", "放得住", "保鲜", "放多久", "放几天"),
    ("冰箱", "冷藏", "冷冻", "冻"),
    ("洗", "清洗", "清洁", "洗涤", "水洗", "机洗", "手洗", "洗衣机", "打理", "搓", "泡", "干洗", "干洗店"),
    ("羽绒", "绒", "鸭绒", "鹅绒", "白鸭绒", "白鹅绒", "填充物", "填充", "填的", "鸭毛", "含绒量", "充绒量", "绒子",
     "棉花"),
    ("钻绒", "跑毛", "钻毛", "钻出来", "掉毛"),
    ("七天无理由", "7天无理由", "无理由", "无条件", "不喜欢", "不满意", "不合身", "不合适"),
)

#: Words of trouble: a message with one of them gets at most a suggestion (a human reads it),
#: unless the matched entry's own keywords or questions contain that word.
DEFAULT_CAUTION_WORDS: tuple[str, ...] = (
    "还没", "怎么还", "为什么", "凭什么", "到底", "太慢", "这么慢", "太久", "这么久", "这么多天", "态度", "查不到",
    "用不了", "不能用", "没到账", "没拿到", "没收到", "丢了", "过期", "过了", "结束了", "差价", "不要了", "不需要",
    "不用", "无所谓", "说好", "怎么做", "太差", "这么差", "这么低", "不标准", "不是原装", "冻坏", "少了", "一半",
    "但是", "不收", "充不进", "结块", "开错", "重开", "补发", "催",
)

STOP_WORDS: frozenset[str] = frozenset((
    "能不能", "会不会", "要不要", "是不是", "有没有", "可不可以", "给不给", "够不够",
    "的", "了", "吗", "呢", "啊", "呀", "吧", "嘛", "哦", "哈", "么", "我", "你", "你们", "您", "我们", "他", "它",
    "这", "那", "这个", "那个", "这件", "是", "有", "在", "能", "可以", "会", "要", "请问", "请", "亲", "一下",
    "下", "给", "帮", "把", "就", "都", "也", "还", "和", "跟", "啥", "什么", "怎么", "吗", "不", "没", "有没有",
    "能不能", "可不可以", "是不是", "会不会", "要不要", "一般", "大概", "平时", "现在", "自己", "我的", "你家",
    "店里", "东西", "商品", "宝贝", "给我", "帮我", "一个", "那种", "的话", "之后", "以后", "后", "多少",
    "帮我查", "我查", "支持", "需要", "不能", "不会", "不要", "已经", "比较", "直接", "还是", "时候", "收到",
    # the goods themselves say nothing about the question
    "衣服", "羽绒服", "这件", "这款", "款", "橙子", "水果", "果子", "手机", "耳机", "产品",
))

#: Compound filler the segmenter must see as one word (so 能不能 does not leave a 不能 behind).
COMPOUND_STOPS: tuple[str, ...] = ("能不能", "会不会", "要不要", "是不是", "有没有", "可不可以", "给不给", "够不够")

Outcome = Literal["answer", "suggest", "none"]


class SynonymsFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``config/synonyms.toml``: extra synonym groups (the first word of a group is what the
    others become) and caution words; ``use_defaults = false`` drops the shipped lists."""

    use_defaults: bool = True
    groups: tuple[tuple[str, ...], ...] = ()
    caution_words: tuple[str, ...] = ()


class Match(msgspec.Struct, frozen=True):
    """The matcher's verdict for one message: the best entry (its index in the matcher's entry
    list, -1 for none), its score (cosine, 0..1), the runner-up's score, and the outcome."""

    outcome: Outcome
    entry: int = -1
    score: float = 0.0
    second: float = 0.0
    caution: str = ""


class Vocabulary:
    """Normalisation, segmentation and synonyms: text → canonical tokens."""

    __slots__ = ("jieba", "canon", "caution", "_cache")

    def __init__(self, groups: Iterable[Sequence[str]], caution: Iterable[str], extra_words: Iterable[str] = ()) -> None:
        import rjieba

        self.jieba = rjieba.Jieba()
        self.canon: dict[str, str] = {}
        for group in groups:
            head = normalise(group[0])
            for word in group:
                self.canon[normalise(word)] = head
        self.caution = tuple(dict.fromkeys(normalise(w) for w in caution if w.strip()))
        for word in (*self.canon, *COMPOUND_STOPS, *(normalise(w) for w in extra_words)):
            if len(word) > 1 and not word.isascii():
                self.jieba.add_word(word, 200000, None)
        self._cache: dict[str, tuple[str, ...]] = {}

    def tokens(self, text: str) -> tuple[str, ...]:
        """Canonical content tokens of ``text`` (already normalised)."""
        canon = self.canon
        out: list[str] = []
        for tok in self.jieba.cut(text):
            c = canon.get(tok)
            if c is not None:
                out.append(c)
            elif len(tok) > 1 and tok not in STOP_WORDS and (tok.isalnum()):
                out.append(tok)
            elif len(tok) == 1 and tok.isdigit():
                continue
        return tuple(out)

    def caution_in(self, text: str) -> str:
        """The first caution word in ``text`` (normalised), ignoring yes-no compounds (是不是原装)."""
        for compound in COMPOUND_STOPS:
            if compound in text:
                text = text.replace(compound, " ")
        for word in self.caution:
            if word in text:
                return word
        return ""


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().strip()


def load_synonyms(config_dir: Path) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """The synonym groups and caution words of a configuration: the shipped defaults (unless
    ``use_defaults = false``) plus ``config_dir/synonyms.toml``. Raises ``ConfigError``."""
    from router.core.config import ConfigError, _error_from_validation, _read_toml

    path = config_dir / "synonyms.toml"
    data = SynonymsFile()
    if path.is_file():
        errors: list[ConfigError] = []
        raw = _read_toml(path, errors)
        if errors:
            raise errors[0]
        try:
            data = msgspec.convert(raw, SynonymsFile, strict=True)
        except msgspec.ValidationError as exc:
            raise _error_from_validation(str(path), exc) from None
        for i, group in enumerate(data.groups):
            if len(group) < 2:
                raise ConfigError(path, f"groups[{i}]", "a synonym group needs at least two words")
            for j, word in enumerate(group):
                if not word.strip():
                    raise ConfigError(path, f"groups[{i}][{j}]", "empty word")
        for i, word in enumerate(data.caution_words):
            if not word.strip():
                raise ConfigError(path, f"caution_words[{i}]", "empty word")
    groups = (DEFAULT_SYNONYMS if data.use_defaults else ()) + data.groups
    caution = (DEFAULT_CAUTION_WORDS if data.use_defaults else ()) + data.caution_words
    return groups, caution


class Thresholds(msgspec.Struct, frozen=True):
    """``[bot]``'s ``answer_threshold``, ``suggest_threshold``, ``margin`` and ``min_coverage``."""

    answer: float = 0.5
    suggest: float = 0.3
    margin: float = 0.05
    coverage: float = 0.5


class Matcher:
    """Ranks a policy's FAQ entries for a message (see the module docstring)."""

    __slots__ = ("vocab", "thresholds", "doc_entry", "postings", "entry_texts", "n_entries", "shops", "_idf",
                 "_masks", "_by_shop", "_by_mask")

    #: idf given to a message word no FAQ document has (as rare as the rarest known word)
    _idf: float

    def __init__(self, vocab: Vocabulary, entries: Sequence[Sequence[str]], shops: Sequence[Sequence[str]] = (),
                 thresholds: Thresholds = Thresholds()) -> None:
        """``entries[i]`` is entry i's documents (keywords and questions); ``shops[i]`` the shop
        ids it is limited to (empty: all)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vocab = vocab
        self.thresholds = thresholds
        self.n_entries = len(entries)
        self.shops = [frozenset(s) for s in shops] if shops else [frozenset()] * len(entries)
        self.entry_texts = ["\n".join(normalise(d) for d in docs) for docs in entries]
        docs: list[tuple[str, ...]] = []
        self.doc_entry: list[int] = []
        for i, texts in enumerate(entries):
            for text in texts:
                toks = vocab.tokens(normalise(text))
                if toks:
                    docs.append(toks)
                    self.doc_entry.append(i)
        #: token → (idf, {document: weight in its l2-normalised tf-idf vector})
        self.postings: dict[str, tuple[float, dict[int, float]]] = {}
        self._idf = 0.0
        self._masks: dict[str, list[bool]] = {}
        #: per shop, :meth:`match` behind an exact-text cache shared by the shops that may use
        #: the same entries (the verdict depends on the text and that set only)
        self._by_shop: dict[str, Callable[[str], Match]] = {}
        self._by_mask: dict[tuple[bool, ...], Callable[[str], Match]] = {}
        if not docs:
            return
        tfidf = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, norm="l2")
        matrix = tfidf.fit_transform(docs).tocsc()
        idf = tfidf.idf_
        for term, col in tfidf.vocabulary_.items():
            start, end = matrix.indptr[col], matrix.indptr[col + 1]
            rows = matrix.indices[start:end].tolist()
            vals = matrix.data[start:end].tolist()
            self.postings[term] = (float(idf[col]), dict(zip(rows, vals, strict=True)))
        self._idf = float(idf.max())

    def _scores(self, text: str, shop_id: str) -> tuple[str, dict[int, tuple[float, int]], dict[str, int]] | None:
        """(normalised text, entry → (best score, its document), token counts) for ``text``
        among the entries shop ``shop_id`` may use; ``None`` when no word of it is known."""
        norm = normalise(text)
        toks = self.vocab.tokens(norm)
        if not toks or not self.postings:
            return None
        # query vector: sublinear tf × idf, l2-normalised; a word no FAQ document has counts in
        # the norm as the rarest known word, so a long message about something else scores low
        counts: dict[str, int] = {}
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
        postings = self.postings
        scores: dict[int, float] = {}
        get = scores.get
        norm2 = 0.0
        for t, n in counts.items():
            p = postings.get(t)
            w = (1.0 + math.log(n)) * (p[0] if p is not None else self._idf) if n > 1 else (p[0] if p is not None else self._idf)
            norm2 += w * w
            if p is not None:
                for doc, v in p[1].items():
                    scores[doc] = get(doc, 0.0) + w * v
        if not scores:
            return None
        inv = 1.0 / math.sqrt(norm2)
        doc_entry = self.doc_entry
        allowed = self._allowed(shop_id)
        best: dict[int, tuple[float, int]] = {}
        for doc, sc in scores.items():
            e = doc_entry[doc]
            if allowed[e] and sc > best.get(e, (0.0, 0))[0]:
                best[e] = (sc, doc)
        return norm, {e: (sc * inv, doc) for e, (sc, doc) in best.items()}, counts

    def _allowed(self, shop_id: str) -> list[bool]:
        mask = self._masks.get(shop_id)
        if mask is None:
            mask = self._masks[shop_id] = [not s or shop_id in s for s in self.shops]
        return mask

    def match(self, text: str, shop_id: str = "") -> Match:
        """The best entry for ``text`` (raw buyer text) in shop ``shop_id``."""
        cached = self._by_shop.get(shop_id)
        return (cached if cached is not None else self.for_shop(shop_id))(text)

    def for_shop(self, shop_id: str) -> Callable[[str], Match]:
        """:meth:`match` for one shop, behind the exact-text cache it shares with the shops that
        may use the same entries: a caller that knows the shop keeps it and skips the look-up."""
        cached = self._by_shop.get(shop_id)
        if cached is None:
            key = tuple(self._allowed(shop_id))
            cached = self._by_mask.get(key)
            if cached is None:
                cached = self._by_mask[key] = text_cache(functools.partial(self._match, shop_id=shop_id), "bot")
            self._by_shop[shop_id] = cached
        return cached

    def _match(self, text: str, shop_id: str = "") -> Match:
        found = self._scores(text, shop_id)
        if found is None:
            return Match("none")
        norm, best, counts = found
        if not best:
            return Match("none")
        entry, score, doc, second = -1, 0.0, 0, 0.0
        for e, (sc, d) in best.items():
            if sc > score:
                entry, score, doc, second = e, sc, d, score
            elif sc > second:
                second = sc
        th = self.thresholds
        if score < th.suggest:
            return Match("none", entry, score, second)
        caution = self.vocab.caution_in(norm)
        if caution and caution in self.entry_texts[entry]:
            caution = ""
        # the message must also say most of what the matched question says (its tf-idf mass):
        # one shared word (明天) of a four-word question is not the question
        postings = self.postings
        covered = 0.0
        for t in counts:
            p = postings.get(t)
            if p is not None:
                v = p[1].get(doc, 0.0)
                covered += v * v
        outcome: Outcome = ("answer" if score >= th.answer and score - second >= th.margin and not caution
                            and covered >= th.coverage else "suggest")
        return Match(outcome, entry, score, second, caution)

    def top(self, text: str, shop_id: str = "", k: int = 3, floor: float = 0.0) -> list[tuple[int, float]]:
        """Up to ``k`` (entry, score) pairs, best first, scoring at least ``floor`` (and above 0)."""
        found = self._scores(text, shop_id)
        if found is None:
            return []
        ranked = sorted(((sc, e) for e, (sc, _) in found[1].items() if sc >= floor), reverse=True)[:k]
        return [(e, sc) for sc, e in ranked]


def _identity(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tokens


def build_vocabulary(config_dir: Path, extra_words: Iterable[str] = ()) -> Vocabulary:
    groups, caution = load_synonyms(config_dir)
    return Vocabulary(groups, caution, extra_words)


__all__ = ["DEFAULT_CAUTION_WORDS", "DEFAULT_SYNONYMS", "Match", "Matcher", "SynonymsFile", "Thresholds",
           "Vocabulary", "build_vocabulary", "load_synonyms", "normalise"]


_ = Mapping  # re-exported names used in annotations only
