"""``fenliu faq mine``: learn FAQ questions from the team's own history (docs/plugins/bot.md).

Reads the store for a period — the instance's SQLite file, or with ``storage.records =
"postgres"`` the history every instance shares — and prints TOML a shop can paste; changes nothing.

- ``[[proposal]]``: buyer messages that an agent answered with an FAQ entry's answer or one of
  its group's quick replies, while the bot did not answer them itself: new ``questions`` for
  that entry.
- ``[[cluster]]``: frequent buyer questions the bot neither answered nor suggested, grouped by
  their canonical words (synonyms applied), with counts and examples.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from router.core import i18n
from router.core.i18n import gettext

if TYPE_CHECKING:
    from router.core.config import Config
    from router.storage.mining import MineRows

#: How close an agent's reply must be to an answer or quick reply text (difflib ratio, with the
#: template's placeholders removed) to count as "answered with it".
REPLY_SIMILARITY = 0.6
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


class Proposal(msgspec.Struct):
    entry: str
    file: str
    questions: list[str]
    counts: list[int]


class Cluster(msgspec.Struct):
    count: int
    words: list[str]
    shops: list[str]
    examples: list[str]


def register(add: Callable[[str, str], argparse.ArgumentParser], command: Callable[[str], Any]) -> None:
    p = add("faq", i18n.gettext("FAQ tools: `faq mine` proposes questions from the store's history"))
    sub = p.add_subparsers(dest="faq_command", required=True, metavar="SUBCOMMAND")
    m = sub.add_parser("mine", help=i18n.gettext("propose FAQ questions and new entries from a period's conversations (TOML)"),
                       description=i18n.gettext("propose FAQ questions and new entries from a period's conversations (TOML)"))
    m.add_argument("--config", default=argparse.SUPPRESS, type=Path, help=i18n.gettext("configuration folder"))
    m.add_argument("--from", dest="since", default=None, help=i18n.gettext("start: YYYY-MM-DD, ISO date-time or epoch (shop time zone)"))
    m.add_argument("--to", dest="until", default=None, help=i18n.gettext("end (exclusive), same forms as --from"))
    m.add_argument("--shop", default=None, help=i18n.gettext("only this shop"))
    m.add_argument("--store", default=None, help=i18n.gettext("SQLite file (default: storage.path)"))
    m.add_argument("--min-count", type=int, default=3, help=i18n.gettext("smallest cluster shown (default 3)"))
    m.add_argument("--examples", type=int, default=5, help=i18n.gettext("examples per cluster (default 5)"))
    command("faq")(faq_command)


def faq_command(args: argparse.Namespace) -> int:
    from router.tools.stats_cli import open_period

    read = open_period(args)
    if read is None:
        return 1
    with _period_rows(args, read) as rows:
        if rows is None:
            return 1
        proposals, clusters, seen = mine(rows, read.config, read.since, read.until, args.shop, args.min_count, args.examples)
    sys.stdout.write(to_toml(proposals, clusters, seen, args.since, args.until))
    return 0


@contextlib.contextmanager
def _period_rows(args: argparse.Namespace, read: Any) -> Iterator[MineRows | None]:
    """What the miner reads: the shared PostgreSQL history (what every instance routed, not only
    the one whose file is here), or one SQLite file, read without a lock (``serve`` may be writing
    it). ``None`` after printing why the database cannot be opened."""
    if read.config.main.storage.records == "postgres" and not args.store:
        from router.storage.mining import postgres_rows
        from router.storage.pg.records import open_records

        store = open_records(read.config)
        if store is None:
            yield None
            return
        try:
            yield store.run_sync(lambda conn: postgres_rows(conn, read.since, read.until))
        finally:
            store.close_sync()
        return
    from router.storage.mining import sqlite_rows
    from router.storage.store import connect

    conn = connect(read.path)
    try:
        yield sqlite_rows(conn)  # cursors, read while the miner runs
    finally:
        conn.close()


def mine(rows: MineRows, config: Config, since: float | None, until: float | None, shop: str | None = None,
         min_count: int = 3, examples: int = 5) -> tuple[list[Proposal], list[Cluster], int]:
    """Proposals for existing entries, clusters of unanswered questions, buyer messages read."""
    from plugins import bot
    from plugins.bot_match import normalise
    from router.core.models import Message

    decode = msgspec.json.Decoder(Message)
    lo, hi = since if since is not None else float("-inf"), until if until is not None else float("inf")
    # buyer messages of the period, by conversation, in order; the bot's verdict on each
    msgs: dict[str, list[tuple[float, int, Message]]] = defaultdict(list)
    for seq, clock, body in rows.messages:
        if body is None or not lo <= clock < hi:
            continue
        msg = decode.decode(body)
        if (shop is not None and msg.shop_id != shop) or msg.shop_id not in config.shops or msg.kind != "text":
            continue
        msgs[msg.conversation_id].append((clock, seq, msg))
    verdict = rows.verdicts
    seen = sum(len(v) for v in msgs.values())

    # (a) agents' replies that are an entry's answer or a quick reply of its group
    library = bot.load_faq(config.dir)
    files = {e.id: f for f, _, e in library.located}
    group_of = {e.id: g for g, e in library.faq}
    known = {e.id: {normalise(q) for q in (*e.questions, *e.keywords)} for _, e in library.faq}
    templates: list[tuple[str, str, str]] = []  # (kind, id, text without placeholders)
    templates += [("faq", e.id, _PLACEHOLDER.sub("", e.answer)) for _, e in library.faq]
    templates += [("quick", q.id, _PLACEHOLDER.sub("", q.text)) for q in library.quick]
    quick_group = {q.id: q.group for q in library.quick}
    found: dict[str, Counter[str]] = defaultdict(Counter)
    answered_seqs: set[int] = set()
    for cid, _agent, text, ts in rows.replies:
        history = msgs.get(cid)
        if not history or not lo <= ts < hi:
            continue
        before = [h for h in history if h[0] <= ts]
        if not before:
            continue
        clock, seq, msg = before[-1]
        kind, tid = _closest(_PLACEHOLDER.sub("", text), templates)
        if tid is None:
            continue
        if kind == "quick":
            tid = _entry_for_quick(config, msg, quick_group[tid], group_of)
            if tid is None:
                continue
        answered_seqs.add(seq)
        flag = verdict.get(seq, "")
        if flag.startswith(("bot:settle:", "bot:answer_and_handoff:")) and flag.endswith(":" + tid):
            continue  # the bot answered it already
        if normalise(msg.text) in known.get(tid, ()):
            continue
        found[tid][msg.text.strip()] += 1
    proposals = [Proposal(eid, files.get(eid, ""), [q for q, _ in c.most_common()], [n for _, n in c.most_common()])
                 for eid, c in sorted(found.items(), key=lambda kv: -sum(kv[1].values()))]

    # (b) questions with no entry: neither answered nor suggested by the bot nor answered by an
    # agent with an FAQ text; grouped by canonical words
    vocab = _vocabulary(config)
    groups: dict[tuple[str, ...], list[Message]] = defaultdict(list)
    for history in msgs.values():
        for _, seq, msg in history:
            if seq in answered_seqs or seq in verdict:
                continue
            words = tuple(sorted(set(vocab.tokens(normalise(msg.text)))))
            if words:
                groups[words].append(msg)
    clusters = _merge(groups)
    out = []
    for words, members in clusters:
        if len(members) < min_count:
            continue
        texts = Counter(m.text.strip() for m in members)
        out.append(Cluster(len(members), list(words), sorted({m.shop_id for m in members}),
                           [t for t, _ in texts.most_common(examples)]))
    out.sort(key=lambda c: (-c.count, c.words))
    return proposals, out, seen


def _closest(text: str, templates: list[tuple[str, str, str]]) -> tuple[str, str | None]:
    best, best_kind, best_id = REPLY_SIMILARITY, "", None
    for kind, tid, template in templates:
        m = difflib.SequenceMatcher(None, text, template, autojunk=False)
        if m.real_quick_ratio() < best or m.quick_ratio() < best:
            continue
        r = m.ratio()
        if r >= best:
            best, best_kind, best_id = r, kind, tid
    return best_kind, best_id


def _entry_for_quick(config: Config, msg: Any, group: str, group_of: dict[str, str]) -> str | None:
    """The FAQ entry of a quick reply's group that the buyer's message is closest to."""
    from plugins import bot

    state = bot._state(config.policy_for(msg.shop_id).bot, config)
    for i, _ in state.matcher.top(msg.text, msg.shop_id, k=5, floor=0.0):
        e = state.faq[i]
        if group_of.get(e.id) == group:
            return e.id
    return None


def _vocabulary(config: Config) -> Any:
    from plugins.bot_match import build_vocabulary

    return build_vocabulary(config.dir)


def _merge(groups: dict[tuple[str, ...], list[Any]]) -> list[tuple[tuple[str, ...], list[Any]]]:
    """Greedy clustering, biggest word-set first: a word set joins a cluster whose words it shares
    at least half of (Jaccard ≥ 0.5), else starts one."""
    clusters: list[tuple[set[str], tuple[str, ...], list[Any]]] = []
    for words, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ws = set(words)
        for cset, _, cmembers in clusters:
            if len(ws & cset) / len(ws | cset) >= 0.5:
                cmembers.extend(members)
                break
        else:
            clusters.append((ws, words, list(members)))
    return [(words, members) for _, words, members in clusters]


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def to_toml(proposals: list[Proposal], clusters: list[Cluster], seen: int, since: str | None, until: str | None) -> str:
    # The comments are for the person pasting (in the current language); the keys are TOML's.
    lines = ["# " + gettext("fenliu faq mine --from {since} --to {until}: {seen} buyer messages read.",
                            since=since or gettext("(start)"), until=until or gettext("(end)"), seen=seen),
             "# " + gettext("Nothing was changed. Paste what you agree with into config/faq/*.toml."), ""]
    if not proposals:
        lines += ["# " + gettext("No agent reply matched an FAQ answer or quick reply for a question the bot missed."), ""]
    for p in proposals:
        lines += ["# " + gettext("{file}: add to the `questions` of entry {entry!r}", file=p.file, entry=p.entry),
                  "[[proposal]]", f"entry = {_s(p.entry)}",
                  f"questions = [{', '.join(_s(q) for q in p.questions)}]",
                  f"counts = [{', '.join(map(str, p.counts))}]", ""]
    if not clusters:
        lines += ["# " + gettext("No frequent unanswered question."), ""]
    for c in clusters:
        lines += ["# " + gettext("asked {n} times; a new [[faq]] entry could take these as its questions", n=c.count),
                  "[[cluster]]",
                  f"count = {c.count}", f"words = [{', '.join(map(_s, c.words))}]",
                  f"shops = [{', '.join(map(_s, c.shops))}]", f"examples = [{', '.join(map(_s, c.examples))}]", ""]
    return "\n".join(lines)


__all__ = ["Cluster", "Proposal", "mine", "register", "to_toml"]
