"""Who could take a conversation where: the agents' pools, kept ordered by each shop's strategy.

One *pool* per ``(shop, skill)``: a heap of the agents who could take a conversation there,
keyed by the shop's strategy (:mod:`policies`), so a pick is O(log n) in the number of agents.
Entries are invalidated lazily: each carries the agent's ``version`` when pushed, and an agent
whose key or availability changes is pushed again (a change that keeps both, such as a
round-robin release below capacity, pushes nothing). An entry is one flat tuple (the key's
fields, the version, the agent's id) or, under a strategy that offers ``packed_key`` (the
built-in ``least_load`` and ``round_robin``), one integer that sorts the same way (see
:class:`Pool`): each assignment re-keys the agent in every pool it is in, a sift of some ten
comparisons each, and integers compare several times faster than tuples.

:class:`AgentPools` also keeps what the pools are built from (which shops each agent serves),
the agents refused by the shared claim function (skipped until refreshed), and how many agents
are online per shop. It holds plain data only (the dispatcher's snapshot pickles it).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from router.core.models import AgentState

if TYPE_CHECKING:
    from router.core.config import Config, DispatchConfig

_COMPACT_MIN = 64
_heappop, _heapreplace = heapq.heappop, heapq.heapreplace

#: A strategy's sort key for an agent (``policies``' ``Strategy.key``).
Key = Callable[[AgentState], tuple[Any, ...]]
#: A strategy's key as one integer, without the agent's id (``policies``' ``Strategy.packed_key``).
Packed = Callable[[AgentState], int]

#: Bits of a packed entry: ``key << SHIFT | rank << (VERSION_BITS + RANK_BITS) | version << RANK_BITS | rank``.
RANK_BITS = 24
VERSION_BITS = 40
SHIFT = 2 * RANK_BITS + VERSION_BITS
RANK_MASK = (1 << RANK_BITS) - 1
VERSION_MASK = (1 << VERSION_BITS) - 1
#: the version's place in a packed entry: two entries of one agent have the same version when
#: their ``^`` has no bit here (their ranks are the same)
VERSION_FIELD = VERSION_MASK << RANK_BITS


def packed_of(strategy: type) -> Packed | None:
    """The strategy's ``packed_key``, if the class that defines its ``key`` defines it too."""
    for cls in strategy.__mro__:
        if "key" in vars(cls):
            return vars(cls).get("packed_key") and strategy.packed_key  # type: ignore[attr-defined,no-any-return]
    return None


class Pool:
    """Available agents of one (shop, skill), smallest strategy key first. An entry is the
    key's fields followed by the agent's version and id, one flat tuple (comparing nested key
    tuples was a tenth of all instructions routing a message), or with ``packed`` (the
    strategy's key as an integer) one integer: the key, the agent's rank in id order (the
    tie-break ``key`` ends with), the version, and the rank again, where it is cheap to read
    (:meth:`AgentPools.aid`)."""

    __slots__ = ("heap", "key", "members", "limit", "packed")

    def __init__(self, key: Key, packed: Packed | None = None) -> None:
        self.heap: list[Any] = []
        self.key = key
        self.packed = packed
        self.members = 0
        self.limit = _COMPACT_MIN

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickle (a snapshot); one taken before packed entries keeps its tuples."""
        self.packed = None
        for name, value in state[1].items():
            setattr(self, name, value)

    def add_member(self) -> None:
        self.members += 1
        self.limit = 4 * self.members + _COMPACT_MIN


class AgentPools:
    """The pools of every (shop, skill), and the agents' places in them."""

    def __init__(self, agents: dict[str, AgentState], refused: set[str] | None = None) -> None:
        self.agents = agents
        #: agents the shared claim function refused, skipped until refreshed or their status changes
        self.refused: set[str] = refused if refused is not None else set()
        self.pools: dict[tuple[str, str], Pool] = {}
        #: per agent, its pools grouped by strategy key: ``((key, pools), …)``
        self.groups: dict[str, tuple[tuple[Key, tuple[Pool, ...]], ...]] = {}
        #: per agent, the ``(shop, skill)`` queues it drains
        self.queue_keys: dict[str, list[tuple[str, str]]] = {}
        #: per agent, the shops it may serve
        self.shops: dict[str, tuple[str, ...]] = {}
        #: per shop, the agents online and in shift who may serve it
        self.online: dict[str, int] = {}
        #: per available agent, the highest of its current entries: each of its pools holds one
        #: entry of its version with this key or a lower one (an agent under several strategies:
        #: its keys, one per strategy, each pushed into every pool of that strategy)
        self.listed: dict[str, tuple[Any, ...]] = {}
        #: per available agent, its entry as it would be pushed now (its current key and
        #: version); under several strategies, one per strategy key function
        self.current: dict[str, Any] = {}
        #: agents' ids by rank (id order), for packed entries; per agent, its rank's two
        #: places in a packed entry (``rank << (VERSION_BITS + RANK_BITS) | rank``)
        self.ids: list[str] = []
        self.ranks: dict[str, int] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle (a snapshot); one taken before the pools kept each agent's current entry
        has every available agent pushed anew, which makes its older entries stale."""
        self.ids = []
        self.ranks = {}  # a snapshot from before packed entries has none
        self.__dict__.update(state)
        if "current" not in state:
            self.current = {}
            self.listed = {}
            for st in self.agents.values():
                self.touch(st, force=True)

    @classmethod
    def for_config(cls, agents: dict[str, AgentState], config: Config, policy: dict[str, DispatchConfig],
                   refused: set[str]) -> AgentPools:
        """The pools of ``config``'s agents (``policy``: each shop's dispatch policy), adding the
        agents new to ``agents`` and updating the others' capacity and weight."""
        self = cls(agents, refused)
        self.ids = sorted(config.agents)
        self.ranks = {aid: r << (VERSION_BITS + RANK_BITS) | r for r, aid in enumerate(self.ids)}
        all_shops = tuple(config.shops)
        for aid, acfg in config.agents.items():
            st = agents.get(aid)
            if st is None:
                st = agents[aid] = AgentState(aid, acfg.max_concurrent, acfg.weight)
            st.max_concurrent, st.weight = acfg.max_concurrent, acfg.weight
            shops = all_shops if "*" in acfg.shops else tuple(s for s in acfg.shops if s in config.shops)
            self.join(aid, shops, acfg.skills, lambda sid: config.strategies[policy[sid].strategy])
        return self

    def join(self, aid: str, shops: tuple[str, ...], skills: Iterable[str], strategy_of: Callable[[str], type]) -> None:
        """Place agent ``aid`` in the pools of ``shops`` × ``skills`` (``strategy_of(shop)`` is
        the shop's strategy, a ``policies.Strategy``; packed entries need ``aid`` ranked)."""
        self.shops[aid] = shops
        pools = []
        keys = []
        skills = tuple(skills)
        for sid in shops:
            strategy = strategy_of(sid)
            key = strategy.key  # type: ignore[attr-defined]
            packed = packed_of(strategy) if self.ranks else None  # ranked by for_config
            for skill in skills:
                pool = self.pools.get((sid, skill))
                if pool is None:
                    pool = self.pools[(sid, skill)] = Pool(key, packed)
                pool.add_member()
                pools.append(pool)
                keys.append((sid, skill))
        self.queue_keys[aid] = keys
        groups: dict[Key, list[Pool]] = {}
        for pool in pools:
            groups.setdefault(pool.key, []).append(pool)
        self.groups[aid] = tuple((k, tuple(v)) for k, v in groups.items())

    # -- online counts --------------------------------------------------------------------------

    def recount(self, shops: Iterable[str]) -> None:
        counts = {sid: 0 for sid in shops}
        for aid, served in self.shops.items():
            st = self.agents[aid]
            if st.status == "online" and st.in_shift:
                for sid in served:
                    counts[sid] += 1
        self.online = counts

    def set_online(self, st: AgentState, change: Callable[[], Any]) -> None:
        """Apply ``change`` (to the agent's status or shift) and follow it in the online counts."""
        before = st.status == "online" and st.in_shift
        change()
        after = st.status == "online" and st.in_shift
        if before != after:
            for sid in self.shops.get(st.id, ()):
                self.online[sid] += 1 if after else -1

    # -- keys -------------------------------------------------------------------------------------

    def touch(self, st: AgentState, force: bool = False) -> None:
        """Re-key the agent in all its pools after a change to its state. Lazy: the entries
        already in the heaps stay valid while the agent stays available and none of them is
        above its key, so only a key below one of them (a release after a pool re-keyed the
        agent's entry past it) or a return to availability pushes; becoming unavailable bumps
        the version, which invalidates them (stale entries are skipped when they reach the top,
        and swept when a heap grows past 4× its members). Under ``least_load`` a conversation
        that closes before the agent's entries surface again pushes nothing: they still hold the
        key from before its assignment. ``force`` pushes anyway, for heaps that may have lost
        the agent's entries (rebuilt pools, an agent no longer refused)."""
        aid = st.id
        listed = self.listed
        if not st.available or aid in self.refused:
            if aid in listed:
                del listed[aid]
                del self.current[aid]
                st.version += 1
            return
        groups = self.groups.get(aid, ())
        if len(groups) == 1:
            # one strategy among the agent's shops (the usual case): one entry for all its pools
            pools = groups[0][1]
            packed = pools[0].packed
            if packed is not None:
                high = packed(st) << SHIFT | self.ranks[aid]
                entry = high | st.version << RANK_BITS  # a version stays far below 2**40
            else:
                entry = (*groups[0][0](st), st.version, aid)
            old = listed.get(aid)
            if not force and old is not None:
                if entry >= old:
                    # no entry of the agent sits above its key (an assignment, under every
                    # built-in strategy, or a release back to a key no pool has re-keyed it
                    # past): the entries already pushed sit too low or right, and ``top``
                    # re-keys one when it surfaces, instead of a push into each pool now
                    self.current[aid] = old if entry == old else entry
                    return
            st.version += 1
            if packed is not None:
                entry = high | st.version << RANK_BITS
            else:
                entry = (*entry[:-2], st.version, aid)
            listed[aid] = self.current[aid] = entry
            self._push(entry, pools)
            return
        keys = tuple([key(st) for key, _ in groups])
        if not force and listed.get(aid) == keys:
            return
        listed[aid] = keys
        st.version += 1
        entries = {}
        for key, pools in groups:
            packed = pools[0].packed
            if packed is not None:
                entry = packed(st) << SHIFT | self.ranks[aid] | st.version << RANK_BITS
            else:
                entry = (*key(st), st.version, aid)
            entries[key] = entry
            self._push(entry, pools)
        self.current[aid] = entries

    def _push(self, entry: tuple[Any, ...], pools: tuple[Pool, ...]) -> None:
        push = heapq.heappush
        for pool in pools:
            heap = pool.heap
            push(heap, entry)
            if len(heap) > pool.limit:
                self.compact(pool)

    def refuse(self, st: AgentState) -> None:
        """The shared claim function refused the agent: skipped here until :meth:`readmit`."""
        self.refused.add(st.id)
        self.touch(st)

    def readmit(self, st: AgentState) -> None:
        """Consider the agent again after a refusal (its status changed, or capacity was freed
        elsewhere): push it into its pools anew."""
        self.refused.discard(st.id)
        self.touch(st, force=True)

    def compact(self, pool: Pool) -> None:
        agents = self.agents
        refused = self.refused
        if pool.packed is not None:
            ids = self.ids
            pool.heap = [e for e in pool.heap if (a := agents.get(ids[e & RANK_MASK])) is not None
                         and a.version == e >> RANK_BITS & VERSION_MASK and a.id not in refused]
        else:
            pool.heap = [e for e in pool.heap if (a := agents.get(e[-1])) is not None and a.version == e[-2]
                         and a.id not in refused]
        heapq.heapify(pool.heap)

    def aid(self, pool: Pool, entry: Any) -> str:
        """The id of the agent of ``entry``, an entry of ``pool``."""
        return self.ids[entry & RANK_MASK] if pool.packed is not None else entry[-1]  # type: ignore[no-any-return]

    # -- picking ----------------------------------------------------------------------------------

    def top(self, pool: Pool) -> Any:
        """The pool's best entry that is still current. An entry is pushed only while its agent
        is available, and a loss of availability or a smaller key bumps its version, so a
        matching version means the agent is still available with that key or a larger one (a
        key that grew is not pushed, see :meth:`touch`): such an entry is re-keyed when it
        reaches the top, and the top is right because no agent's key is below its entry's.
        The agent's current entry is the very entry pushed or re-keyed last, so the usual check
        is one identity test, without computing the strategy's key. Packed entries (the usual
        pool) are looked at here, tuples in :meth:`_top_tuples`: one frame a pick, not two."""
        if pool.packed is None:
            return self._top_tuples(pool)
        heap = pool.heap
        current = self.current
        ids = self.ids
        while heap:
            entry = heap[0]
            aid = ids[entry & RANK_MASK]  # the rank in the low bits, the version above it
            cur = current.get(aid)
            if cur is entry:
                return entry
            if cur is not None:
                if type(cur) is dict:  # an agent under several strategies: its entry for this pool's
                    cur = cur[pool.key]
                    if cur is entry or cur == entry:  # (equal: unpickled, as integers are not memoised)
                        return entry
                elif not (cur ^ entry) & VERSION_FIELD:
                    # the agent's key grew since the entry was pushed: re-keyed, now its highest
                    _heapreplace(heap, cur)
                    self.listed[aid] = cur
                    continue
            _heappop(heap)
        return None

    def _top_tuples(self, pool: Pool) -> Any:
        """:meth:`top` for a pool of tuple entries (the version and the agent's id last)."""
        heap = pool.heap
        current = self.current
        while heap:
            entry = heap[0]
            cur = current.get(entry[-1])
            if cur is entry:
                return entry
            if cur is not None:
                if type(cur) is dict:  # an agent under several strategies: its entry for this pool's
                    cur = cur[pool.key]
                    if cur is entry or cur == entry:
                        return entry
                elif cur[-2] == entry[-2]:
                    # the agent's key grew since the entry was pushed: re-keyed, now its highest
                    _heapreplace(heap, cur)
                    self.listed[entry[-1]] = cur
                    continue
            _heappop(heap)
        return None

    def pick(self, shop_id: str, skills: tuple[str, ...], exclude: str | None = None) -> AgentState | None:
        """The strategy's choice among available agents of any of ``skills`` at the shop (the
        caller checks that the shop is open)."""
        pools = self.pools
        if len(skills) == 1:
            pool = pools.get((shop_id, skills[0]))
            if pool is None:
                return None
            best = self.top(pool)
            if best is None:
                return None
            if exclude is not None and self.aid(pool, best) == exclude:
                best = self._second(pool, exclude)
                if best is None:
                    return None
        else:
            best = None
            for skill in skills:
                found = pools.get((shop_id, skill))
                if found is None:
                    continue
                entry = self.top(found)
                if entry is not None and exclude is not None and self.aid(found, entry) == exclude:
                    entry = self._second(found, exclude)
                if entry is not None and (best is None or entry < best):
                    best, pool = entry, found  # a shop's pools share its strategy: entries compare
            if best is None:
                return None
        return self.agents[self.aid(pool, best)]

    def _second(self, pool: Pool, exclude: str) -> Any:
        held = []
        heap = pool.heap
        found = None
        while (entry := self.top(pool)) is not None:
            if self.aid(pool, entry) != exclude:
                found = entry
                break
            held.append(heapq.heappop(heap))
        for e in held:
            heapq.heappush(heap, e)
        return found

    def eligible(self, st: AgentState | None, shop_id: str) -> bool:
        """Whether the agent is available, not refused, and may serve the shop (the caller
        checks that the shop is open)."""
        return (
            st is not None
            and st.available
            and st.id not in self.refused
            and shop_id in self.shops.get(st.id, ())
        )

    def has_skill(self, skill: str) -> bool:
        return any(s == skill for (_, s) in self.pools)

    def available(self, shop_id: str, skill: str, open_: bool) -> int:
        """Agents of ``skill`` at the shop who could take a conversation now."""
        pool = self.pools.get((shop_id, skill))
        if pool is None or not open_:
            return 0
        aids = {self.aid(pool, e) for e in pool.heap}
        return sum(1 for aid in aids if self.eligible(self.agents.get(aid), shop_id))
