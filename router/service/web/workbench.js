// 客服工作台: the agent's conversations over the agent WebSocket (/v1/agents/ws), with the
// buyer's profile, order, quick replies and the outbound check over HTTP. The server checks
// every action again; the page only makes them convenient.
import {
  api, h, label, logout, mmss, duration, percent, clock, now, toast, highlight, requireLogin,
  setServerTime, session, LiveSocket, T, PLATFORM, STATUS, SKILL, STATE, CAUSE, ORDER_STATUS, GROUP,
} from './common.js';

const WINDOW = 180;
const $ = (id) => document.getElementById(id);

// The buyer's story: order, after-sale and parcel-scan states as the platforms' pushes name them.
const ORDER_STATE = {
  ...ORDER_STATUS, created: T('ui.unpaid'), refund_agreed: T('ui.refund_agreed'), refund_refused: T('ui.refund_refused'), return_shipped: T('ui.buyer_returned_the_goods'),
  refund_closed: T('ui.refund_closed'), address_changed: T('ui.address_changed'), cancelled: T('ui.cancelled'),
};
const AFTERSALE_STATE = {
  requested: T('ui.pending'), agreed: T('ui.agreed'), refused: T('ui.refused'), return_shipped: T('ui.buyer_returned_the_goods'), refunded: T('ui.refunded_2'), closed: T('ui.closed'),
};
const AFTERSALE_KIND = { refund: T('ui.refund_only'), return: T('ui.return_and_refund'), exchange: T('ui.exchange') };
const SCAN_STATUS = { collected: T('ui.picked_up'), in_transit: T('ui.in_transit'), delivering: T('ui.out_for_delivery'), signed: T('ui.delivered'), problem: T('ui.exception') };
const SCANS_SHOWN = 3;
const yuan = (v) => `¥${Number(v).toFixed(2)}`;

const state = {
  me: null,
  shops: new Map(),
  convs: new Map(),       // my conversations (from the socket)
  queued: new Map(),      // queued conversations of my shops (read-only, polled)
  selected: null,
  filter: 'all',
  sort: localStorage.getItem('fenliu.sort') || 'wait',  // 排序: wait | last | shop
  showQueued: false,      // 全部 lists every queued conversation, not only the first QUEUED_SHOWN
  status: 'offline',
  quick: new Map(),       // cid -> quick reply groups
  assist: new Map(),      // cid -> 智能辅助: the best FAQ answers / quick replies for the buyer's latest message
  drafted: new Set(),     // cids whose composer already got the bot's suggested answer
  profiles: new Map(),    // cid -> profile
  drafts: new Map(),      // cid -> what was typed for that buyer and not sent
  closing: new Set(),     // cids this agent is ending (their close is not news to them)
  agents: [],
  today: null,
  hellos: 0,
};

let socket = null;

// -- conversations -------------------------------------------------------------------------------

function waitingSince(conv) {
  let since = null;
  for (const item of conv.history || []) {
    if (item.who === 'buyer') { if (since === null) since = item.ts; }
    else if (item.who === 'agent') since = null;
  }
  return since;
}

function lastLine(conv) {
  const items = conv.history || [];
  const last = items[items.length - 1];
  if (!last) return '';
  const prefix = last.who === 'agent' ? T('ui.me') : last.who === 'bot' ? T('ui.bot_2') : '';
  const kinds = { image: T('ui.image'), goods_card: T('ui.goods_card'), order_card: T('ui.order_card'), voice: T('ui.voice'), video: T('ui.video') };
  if (!kinds[last.kind]) return prefix + last.text;
  const card = /_card$/.test(last.kind) ? cardData(last.text || '') : null;  // a card's title, not its JSON
  const words = card ? (card.title || card.goods || card.order_id || '') : /^(https?:|data:)/.test(last.text || '') ? '' : last.text;
  return `${prefix}${kinds[last.kind]} ${words || ''}`.trim();
}

function isVip(conv) {
  const tags = (conv.buyer && conv.buyer.tags) || [];
  return tags.includes('vip') || tags.includes('svip');
}

// Urgency: accept first (its reservation runs out), then the reply window that ends soonest,
// then priority (VIP), then the most recent activity. Queued conversations come last.
function urgency(conv) {
  const t = now();
  if (conv.readonly) return [3, -(conv.priority || 0), conv.queued_at || conv.opened_at || 0];
  if (conv.state === 'reserved') return [0, conv.reserved_until || 0, 0];
  const since = waitingSince(conv);
  if (since !== null) return [1, WINDOW - (t - since), -(conv.priority || 0)];
  const last = (conv.history || []).at(-1);
  return [2, -(conv.priority || 0), -(last ? last.ts : 0)];
}

function compare(a, b) {
  const x = urgency(a);
  const y = urgency(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return a.id < b.id ? -1 : 1;
}

// The list's order (排序): by wait (urgency, above), by the last message (newest first) or by shop;
// the conversations I hold always come before the read-only queued ones.
function lastTs(conv) {
  const last = (conv.history || []).at(-1);
  return last ? last.ts : conv.queued_at || conv.opened_at || 0;
}

const SORTS = {
  wait: compare,
  last: (a, b) => (!!a.readonly - !!b.readonly) || lastTs(b) - lastTs(a) || compare(a, b),
  shop: (a, b) => (!!a.readonly - !!b.readonly) || shopLabel(a.shop_id).localeCompare(shopLabel(b.shop_id)) || compare(a, b),
};

// 全部 shows at most this many read-only queued conversations; the rest fold into one line.
const QUEUED_SHOWN = 20;

function matches(conv, filter) {
  if (filter === 'all') return true;
  if (conv.readonly) return false;
  if (filter === 'unread') return conv.unread > 0;
  if (filter === 'waiting') return conv.state === 'reserved' || waitingSince(conv) !== null;
  return true;
}

function allConvs() {
  const out = [...state.convs.values()];
  for (const q of state.queued.values()) if (!state.convs.has(q.id)) out.push(q);
  return out;
}

function shopLabel(shopId) {
  const shop = state.shops.get(shopId);
  return shop ? `${label(PLATFORM, shop.platform)}·${shop.name}` : shopId;
}

function buyerName(conv) {
  return (conv.buyer && conv.buyer.nick) || conv.buyer_id;
}

function countdownText(conv) {
  if (conv.readonly) return { text: T('ui.queued'), cls: 'queued' };
  const t = now();
  if (conv.state === 'reserved' && conv.reserved_until) {
    const left = conv.reserved_until - t;
    return { text: T('ui.accept', mmss(left)), cls: left < 15 ? 'late' : 'soon' };
  }
  const since = waitingSince(conv);
  if (since === null) return { text: T('ui.replied'), cls: 'done' };
  const left = WINDOW - (t - since);
  if (left <= 0) return { text: T('ui.late', mmss(-left)), cls: 'late' };
  return { text: mmss(left), cls: left < 60 ? 'soon' : 'ok' };
}

function renderList() {
  const list = $('conv-list');
  const all = allConvs().sort(SORTS[state.sort] || compare);
  const counts = { all: all.length, unread: 0, waiting: 0, mine: 0 };
  for (const c of all) for (const f of ['unread', 'waiting', 'mine']) if (matches(c, f)) counts[f]++;
  for (const btn of document.querySelectorAll('.filter')) {
    btn.classList.toggle('active', btn.dataset.filter === state.filter);
    btn.querySelector('span:not([data-i18n])').textContent = counts[btn.dataset.filter] ? `(${counts[btn.dataset.filter]})` : '';
  }
  let shown = all.filter((c) => matches(c, state.filter));
  const queued = shown.filter((c) => c.readonly);
  const folded = state.showQueued ? 0 : Math.max(0, queued.length - QUEUED_SHOWN);
  if (folded) {
    const keep = new Set(queued.slice(0, QUEUED_SHOWN));
    shown = shown.filter((c) => !c.readonly || keep.has(c));
  }
  list.replaceChildren(...shown.map((conv) => {
    const cd = countdownText(conv);
    return h('li', {
      class: `conv${conv.id === state.selected ? ' selected' : ''}${conv.readonly ? ' readonly' : ''}`,
      dataset: { id: conv.id }, onclick: () => select(conv.id),
    },
      h('div', { class: 'conv-top' },
        h('span', { class: `shop ${state.shops.get(conv.shop_id)?.platform || ''}` }, shopLabel(conv.shop_id)),
        h('span', { class: `countdown ${cd.cls}`, dataset: { id: conv.id } }, cd.text)),
      h('div', { class: 'conv-name' },
        h('strong', null, buyerName(conv)),
        isVip(conv) ? h('span', { class: 'badge vip' }, 'VIP') : null,
        conv.skill ? h('span', { class: 'badge' }, label(SKILL, conv.skill)) : null,
        conv.state === 'reserved' ? h('span', { class: 'badge warn' }, T('ui.to_accept')) : null,
        conv.unread > 0 ? h('span', { class: 'unread' }, String(conv.unread)) : null),
      h('div', { class: 'conv-last' }, conv.readonly ? `${label(STATE, conv.state)} · ${conv.buyer_id}` : lastLine(conv)));
  }), ...(folded || (state.showQueued && queued.length > QUEUED_SHOWN) ? [h('li', { class: 'conv-more', id: 'conv-more', dataset: { folded } },
    folded ? T('ui.more_queued_conversations_not_shown', folded) : '',
    h('button', { type: 'button', class: 'link', onclick: () => { state.showQueued = !state.showQueued; renderList(); } },
      folded ? T('ui.show_all') : T('ui.hide_queued')))] : []));
  $('conv-empty').hidden = shown.length > 0;
}

function tickCountdowns() {
  for (const el of document.querySelectorAll('.countdown')) {
    const conv = state.convs.get(el.dataset.id) || state.queued.get(el.dataset.id);
    if (!conv) continue;
    const cd = countdownText(conv);
    el.textContent = cd.text;
    el.className = `countdown ${cd.cls}`;
  }
  const conv = current();
  if (conv && conv.state === 'reserved' && conv.reserved_until) {
    $('accept-text').textContent = T('ui.new_conversation_accept_within_or_it', mmss(conv.reserved_until - now()));
  }
}

function current() {
  return state.convs.get(state.selected) || state.queued.get(state.selected)
    || (state.peek && state.peek.id === state.selected ? state.peek : null);
}

// -- the chat ------------------------------------------------------------------------------------------

function renderItem(item, conv) {
  const who = item.who;
  const when = h('time', null, clock(item.ts));
  let body;
  const text = item.text || '';
  if (item.kind === 'image') {
    body = /^(https?:|data:image\/)/.test(text)
      ? h('img', { src: text, alt: T('ui.buyer_s_picture'), class: 'pic', loading: 'lazy', onclick: (ev) => ev.target.classList.toggle('zoom') })
      : h('div', { class: 'card' }, h('b', null, T('ui.image_2')), h('span', null, text));
  } else if (item.kind === 'goods_card') {
    body = goodsCard(text, conv);
  } else if (item.kind === 'order_card') {
    body = orderCard(text, conv);
  } else if (item.kind === 'voice' || item.kind === 'video') {
    const voice = item.kind === 'voice';
    body = /^(https?:|data:(audio|video)\/)/.test(text)
      ? h(voice ? 'audio' : 'video', { src: text, controls: true, preload: 'metadata', class: voice ? 'voice' : 'video' })
      : h('div', { class: 'card' }, h('b', null, voice ? T('ui.voice_2') : T('ui.video_2')), h('span', null, text));
  } else {
    body = h('div', { class: 'bubble' }, text);
  }
  const name = who === 'buyer' ? buyerName(conv) : who === 'bot' ? T('ui.bot') : (item.agent_id && item.agent_id !== state.me.agent_id ? item.agent_id : T('ui.me_label'));
  return h('li', { class: `msg ${who}` }, h('div', { class: 'msg-head' }, name, ' ', when), body);
}

// A card's text is the platform's JSON (title, price, picture; an order's id, goods, amount,
// status) or plain words; either way the card shows what the buyer sent, untouched.
function cardData(text) {
  if (!/^\s*\{/.test(text)) return null;
  try { const v = JSON.parse(text); return v && typeof v === 'object' ? v : null; } catch { return null; }
}

function goodsCard(text, conv) {
  const d = cardData(text);
  if (!d) return h('div', { class: 'card goods' }, h('b', null, T('ui.goods_card_2')), h('span', null, text || (conv.order && conv.order.goods) || ''));
  const pic = d.pic || d.image || d.thumb;
  const price = d.price ?? d.amount;
  return h('div', { class: 'card goods rich' },
    pic && /^(https?:|data:image\/)/.test(pic) ? h('img', { src: pic, alt: T('ui.goods_picture'), class: 'thumb' }) : null,
    h('div', { class: 'card-body' }, h('b', null, T('ui.goods_card_2')), h('span', { class: 'title' }, d.title || d.goods || d.name || ''),
      price != null ? h('span', { class: 'price' }, yuan(price)) : null));
}

function orderCard(text, conv) {
  const d = cardData(text);
  const o = d || conv.order || {};
  return h('div', { class: 'card order' }, h('b', null, T('ui.order_card_2')),
    d ? h('span', { class: 'title' }, o.goods || o.title || '') : h('span', null, text),
    o.order_id ? h('span', { class: 'sub' }, T('ui.order', o.order_id, o.status ? ` · ${label(ORDER_STATE, o.status)}` : '', o.amount ? ` · ${yuan(o.amount)}` : '')) : null);
}

function renderChat() {
  const conv = current();
  $('chat-empty').hidden = !!conv;
  $('chat-main').hidden = !conv;
  renderList();
  if (!conv) { renderSide(); return; }
  $('chat-title').textContent = buyerName(conv);
  $('chat-meta').textContent = ` ${shopLabel(conv.shop_id)} · ${label(STATE, conv.state)}${conv.skill ? ` · ${label(SKILL, conv.skill)}` : ''}${conv.priority ? T('ui.priority', conv.priority) : ''}`;
  const hist = $('history');
  hist.replaceChildren(...(conv.history || []).map((item) => renderItem(item, conv)));
  hist.scrollTop = hist.scrollHeight;
  const mine = !conv.readonly;
  $('accept-bar').hidden = !(mine && conv.state === 'reserved');
  $('composer').hidden = !mine;
  $('transfer-btn').hidden = !mine;
  $('close-btn').hidden = !mine;
  const locked = conv.state === 'reserved';
  $('draft').disabled = locked;
  $('send').disabled = locked;
  $('draft-hint').textContent = locked ? T('ui.accept_the_conversation_to_reply') : '';
  tickCountdowns();
  renderSide();
  renderAssist(conv);
}

// The composer holds one buyer's draft at a time: switching saves it under the conversation it was
// typed for and restores the next one's, so nothing typed for one buyer can be sent to another.
function setSelected(cid) {
  if (state.selected === cid) return;
  const draft = $('draft');
  if (state.selected) {
    if (draft.value) state.drafts.set(state.selected, draft.value);
    else state.drafts.delete(state.selected);
  }
  hideBlocked();
  state.selected = cid;
  draft.value = (cid && state.drafts.get(cid)) || '';
  $('draft-hint').textContent = '';
}

async function select(cid) {
  setSelected(cid);
  const conv = current();
  if (!conv) return renderChat();
  conv.unread = 0;
  if (conv.readonly && !conv.loaded) {
    try {
      const full = await api('GET', `/v1/conversations/${encodeURIComponent(cid)}`);
      Object.assign(conv, { history: full.history, buyer: full.buyer, order: full.order, loaded: true });
    } catch (err) {
      toast(T('ui.cannot_open_the_conversation', err.message), 'error');
    }
  }
  renderChat();
  loadProfile(conv);
  loadQuick(conv);
  loadAssist(conv);
}

// -- side panel: buyer, order, quick replies --------------------------------------------------------------

function facts(target, rows) {
  target.replaceChildren(...rows.filter((r) => r[1] !== undefined && r[1] !== null && r[1] !== '')
    .flatMap(([k, v]) => [h('dt', null, k), h('dd', null, String(v))]));
}

function renderSide() {
  const conv = current();
  const side = $('side');
  side.classList.toggle('disabled', !conv);
  if (!conv) {
    facts($('buyer-facts'), []);
    facts($('order-facts'), []);
    $('tags').replaceChildren();
    $('notes').replaceChildren();
    $('quick').replaceChildren(h('p', { class: 'empty' }, T('ui.select_a_conversation_to_see_quick')));
    return;
  }
  const b = conv.buyer || {};
  facts($('buyer-facts'), [[T('ui.nickname'), b.nick || '—'], [T('ui.buyer_id'), conv.buyer_id], [T('page.shop'), shopLabel(conv.shop_id)],
    [T('ui.member_level'), b.level || 0], [T('ui.total_spent'), b.lifetime_spend ? `¥${b.lifetime_spend}` : '—']]);
  const o = conv.order || {};
  const profile = state.profiles.get(conv.id);
  const story = (profile && profile.orders) || [];
  facts($('order-facts'), story.length ? [] : conv.order
    ? [[T('page.order_no'), o.order_id], [T('page.status'), label(ORDER_STATE, o.status)], [T('page.goods'), o.goods], [T('page.amount'), o.amount ? `¥${o.amount}` : null]]
    : [[T('page.orders'), T('ui.no_order_information')]]);
  renderBuyerOrders(story);
  const open = story.flatMap((x) => x.aftersales).filter((a) => !['refunded', 'closed', 'refused'].includes(a.state));
  if (story.length) {
    $('buyer-facts').append(h('dt', null, T('page.orders')), h('dd', null, T('ui.orders', story.length, open.length ? T('ui.after_sale', open.length) : '')));
  }
  const tags = [...new Set([...(b.tags || []), ...((profile && profile.tags) || [])])];
  const supervisor = state.me.role !== 'agent';
  $('tags').replaceChildren(...tags.map((t) => h('span', { class: `tag${t === 'vip' || t === 'svip' ? ' vip' : ''}` }, t,
    supervisor && profile && profile.tags.includes(t)
      ? h('button', { type: 'button', class: 'x', title: T('ui.remove_tag'), onclick: () => removeTag(conv, t) }, '×') : null)));
  $('vip-btn').hidden = tags.includes('vip');
  const notes = (profile && profile.notes) || [];
  $('notes').replaceChildren(...notes.slice(-20).reverse().map((n) => h('li', null,
    h('span', { class: 'note-meta' }, `${n.by || ''} ${n.ts ? clock(n.ts) : ''}`), h('span', null, n.text))));
  renderQuick(conv);
}

function scanItem(e, latest) {
  return h('li', { class: `scan${latest ? ' latest' : ''}${e.status ? ` ${e.status}` : ''}` },
    h('time', null, dateTime(e.ts)), e.status ? h('b', null, label(SCAN_STATUS, e.status)) : null, h('span', null, e.text));
}

function dateTime(ts) {
  const d = new Date(ts * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

// 订单 tab of the buyer panel: every order of this buyer at the shop, newest activity first, with
// courier, tracking number, the latest scans (the rest folded) and any after-sale request.
function renderBuyerOrders(story) {
  $('buyer-orders').replaceChildren(...story.map((x) => {
    const o = x.order;
    const scans = x.logistics || [];
    return h('article', { class: 'buyer-order', dataset: { order: o.order_id } },
      h('header', null, h('b', null, T('ui.order_id', o.order_id)),
        o.status ? h('span', { class: `badge st-${o.status}` }, label(ORDER_STATE, o.status)) : null),
      o.goods ? h('div', { class: 'goods' }, o.goods) : null,
      h('div', { class: 'meta' }, [shopLabel(x.shop_id), o.amount ? T('ui.paid_amount', yuan(o.amount)) : null].filter(Boolean).join(' · ')),
      o.courier || o.tracking_no
        ? h('div', { class: 'ship' }, h('span', { class: 'courier' }, o.courier || T('ui.courier')), ' ',
          h('span', { class: 'tracking' }, o.tracking_no || ''),
          o.tracking_no ? h('button', { type: 'button', class: 'link copy', title: T('ui.copy_tracking_number'),
            onclick: () => navigator.clipboard?.writeText(o.tracking_no).then(() => toast(T('ui.tracking_number_copied')), () => {}) }, T('ui.copy')) : null)
        : null,
      scans.length ? h('ol', { class: 'trace' }, ...scans.slice(0, SCANS_SHOWN).map((e, i) => scanItem(e, i === 0))) : null,
      scans.length > SCANS_SHOWN ? h('details', { class: 'trace-more' }, h('summary', null, T('ui.full_logistics_trace_events', scans.length)),
        h('ol', { class: 'trace' }, ...scans.slice(SCANS_SHOWN).map((e) => scanItem(e, false)))) : null,
      ...(x.aftersales || []).map((a) => h('div', { class: `aftersale as-${a.state}` },
        h('b', null, T('ui.after_sale_2', label(AFTERSALE_KIND, a.kind))), ' ',
        h('span', { class: 'badge' }, label(AFTERSALE_STATE, a.state)),
        a.amount ? T('ui.refund', yuan(a.amount)) : '', a.reason ? ` · ${a.reason}` : '',
        a.opened ? h('time', null, T('ui.requested', dateTime(a.opened))) : null)));
  }));
}

async function loadProfile(conv) {
  try {
    const p = await api('GET', `/v1/shops/${encodeURIComponent(conv.shop_id)}/buyers/${encodeURIComponent(conv.buyer_id)}`);
    state.profiles.set(conv.id, p);
    if (p.order && !conv.order) conv.order = p.order;
    if (state.selected === conv.id) renderSide();
  } catch (err) {
    toast(T('ui.loading_the_customer_failed', err.message), 'error');
  }
}

async function addTags(conv, tags) {
  try {
    const p = await api('PUT', `/v1/shops/${encodeURIComponent(conv.shop_id)}/buyers/${encodeURIComponent(conv.buyer_id)}`, { add_tags: tags });
    state.profiles.set(conv.id, { ...(state.profiles.get(conv.id) || {}), ...p });
    toast(T('ui.tag_added_applies_from_the_buyer', tags.join(T('ui.list_enum_comma'))));
    renderSide();
    renderList();
  } catch (err) {
    toast(T('ui.adding_the_tag_failed', err.message), 'error');
  }
}

async function removeTag(conv, tag) {
  const profile = state.profiles.get(conv.id);
  try {
    const p = await api('PUT', `/v1/shops/${encodeURIComponent(conv.shop_id)}/buyers/${encodeURIComponent(conv.buyer_id)}`,
      { tags: profile.tags.filter((t) => t !== tag) });
    state.profiles.set(conv.id, { ...profile, ...p });
    renderSide();
  } catch (err) {
    toast(T('ui.removing_the_tag_failed', err.message), 'error');
  }
}

async function loadQuick(conv) {
  try {
    const q = await api('GET', `/v1/quick-replies?conversation_id=${encodeURIComponent(conv.id)}`);
    state.quick.set(conv.id, q.groups);
    if (state.selected === conv.id) renderQuick(conv);
  } catch (err) {
    toast(T('ui.loading_quick_replies_failed', err.message), 'error');
  }
}

// 智能辅助: for the buyer's latest message, the three best FAQ answers and quick replies (filled for
// this buyer and order); a click or Alt+1..3 puts one in the composer, never sends it. The bot's
// `suggest` mode also leaves its answer as the draft of an empty composer.
async function loadAssist(conv) {
  const last = [...(conv.history || [])].reverse().find((it) => it.who === 'buyer' && it.text);
  if (!last || conv.readonly) { state.assist.delete(conv.id); if (state.selected === conv.id) renderAssist(conv); return; }
  try {
    const q = await api('GET', `/v1/quick-replies?conversation_id=${encodeURIComponent(conv.id)}&text=${encodeURIComponent(last.text)}`);
    state.assist.set(conv.id, q.assist || []);
    if (state.selected !== conv.id) return;
    const draft = $('draft');
    if (q.draft && !draft.value && !state.drafted.has(conv.id)) {
      draft.value = q.draft;
      $('draft-hint').textContent = T('ui.the_bot_has_a_reply_ready');
    }
    if (q.draft) state.drafted.add(conv.id);
    renderAssist(conv);
  } catch (err) {
    state.assist.delete(conv.id);
  }
}

function renderAssist(conv) {
  const box = $('assist');
  const items = (conv && state.assist.get(conv.id)) || [];
  box.hidden = !items.length;
  box.replaceChildren(h('span', { class: 'assist-label' }, T('ui.smart_assist')), ...items.map((it, i) => h('button', {
    type: 'button', class: 'assist-item', dataset: { id: it.id, kind: it.kind }, title: it.text,
    onclick: () => insertQuick(it, null),
  }, h('kbd', null, `Alt+${i + 1}`), it.text)));
}

function quickItems(conv) {
  return (state.quick.get(conv.id) || []).flatMap((g) => g.items.map((it) => ({ ...it, group: g.group })));
}

function renderQuick(conv) {
  const all = state.quick.get(conv.id) || [];
  const box = $('quick');
  if (!all.length) { box.replaceChildren(h('p', { class: 'empty' }, T('ui.no_quick_replies_for_this_shop'))); return; }
  // The search box (话术搜索) keeps the items whose title, keywords or text hold every word typed.
  const words = $('quick-search').value.toLowerCase().split(/\s+/).filter(Boolean);
  const hit = (it) => words.every((w) => [it.title, it.text, ...it.keywords].some((f) => (f || '').toLowerCase().includes(w)));
  const groups = all.map((g) => ({ ...g, items: g.items.filter(hit) })).filter((g) => g.items.length);
  if (!groups.length) { box.replaceChildren(h('p', { class: 'empty' }, T('ui.no_matching_quick_reply'))); return; }
  box.replaceChildren(...groups.map((g) => h('details', { class: 'quick-group', open: true },
    h('summary', null, label(GROUP, g.group)),
    ...g.items.map((it) => h('button', {
      type: 'button', class: 'quick-item', dataset: { id: it.id }, title: it.text,
      onclick: () => insertQuick(it, null),
    }, h('b', null, it.title), h('span', { class: 'kw' }, it.keywords.join(' / ')), h('span', { class: 'qt' }, it.text))))));
}

// -- the composer -------------------------------------------------------------------------------------------

let suggestions = [];
let suggestIndex = 0;

function insertQuick(item, typed) {
  const draft = $('draft');
  const text = draft.value;
  if (typed && text.lastIndexOf(typed) >= 0) {
    const at = text.lastIndexOf(typed);
    draft.value = text.slice(0, at) + item.text + text.slice(at + typed.length);
  } else {
    draft.value = text ? `${text}${item.text}` : item.text;
  }
  hideSuggestions();
  hideBlocked();
  draft.focus();
  const gap = draft.value.indexOf('{');
  $('draft-hint').textContent = gap >= 0 ? T('ui.the_quick_reply_still_has_placeholders') : '';
}

function suggest() {
  const conv = current();
  const text = $('draft').value;
  if (!conv || !text.trim()) return hideSuggestions();
  const items = quickItems(conv);
  const slash = text.match(/\/([^\s/]*)$/);
  const found = [];
  if (slash) {
    const q = slash[1].toLowerCase();
    for (const it of items) {
      if (!q || it.title.toLowerCase().includes(q) || it.keywords.some((k) => k.toLowerCase().startsWith(q))) {
        found.push({ item: it, typed: slash[0] });
      }
    }
  } else {
    const lower = text.toLowerCase();
    for (const it of items) {
      const kw = it.keywords.find((k) => lower.endsWith(k.toLowerCase()));
      if (kw) found.push({ item: it, typed: text.slice(text.length - kw.length) });
    }
  }
  suggestions = found.slice(0, 6);
  suggestIndex = 0;
  const box = $('suggestions');
  if (!suggestions.length) return hideSuggestions();
  box.replaceChildren(...suggestions.map((s, i) => h('li', {
    class: `suggestion${i === 0 ? ' active' : ''}`, dataset: { id: s.item.id },
    onmousedown: (ev) => { ev.preventDefault(); insertQuick(s.item, s.typed); },
  }, h('b', null, s.item.title), ' ', h('span', null, s.item.text))));
  box.append(h('li', { class: 'suggest-hint' }, T('ui.tab_inserts_choose_esc_closes')));
  box.hidden = false;
}

function hideSuggestions() {
  suggestions = [];
  $('suggestions').hidden = true;
}

function hideBlocked() {
  $('blocked').hidden = true;
  $('draft').classList.remove('has-hits');
}

function showBlocked(text, reason, hits) {
  $('blocked-reason').textContent = T('ui.reply_not_sent', reason || T('ui.forbidden_words'));
  $('blocked-text').replaceChildren(...highlight(text, hits));
  $('blocked-text').title = [...new Set((hits || []).map((x) => x.tag).filter(Boolean))].join(T('ui.list_enum_comma'));
  showAdvice(text, hits || []);
  $('blocked').hidden = false;
  $('draft').classList.add('has-hits');
}

// Each hit with a category (tag) and a compliant alternative (advice): one click puts the
// alternative in the draft in place of the word, "全部替换" does it for every hit at once.
function showAdvice(text, hits) {
  let box = $('blocked-advice');
  if (!box) {
    box = h('div', { id: 'blocked-advice', class: 'blocked-advice' });
    $('blocked').append(box);
  }
  const fix = (chosen) => {
    const chars = Array.from(text);  // hit positions count code points, as the server's do
    for (const x of [...chosen].sort((a, b) => b.start - a.start)) chars.splice(x.start, x.end - x.start, x.advice);
    $('draft').value = chars.join('');
    hideBlocked();
    $('draft').focus();
  };
  const fixable = [];  // no two replacements over the same characters: the longer hit wins
  for (const x of hits.filter((y) => y.advice).sort((a, b) => (b.end - b.start) - (a.end - a.start))) {
    if (!fixable.some((y) => x.start < y.end && y.start < x.end)) fixable.push(x);
  }
  const rows = hits.filter((x) => x.tag || x.advice).map((x) => h('div', { class: 'advice' },
    h('span', { class: 'advice-word' }, x.word), x.tag ? ` ${x.tag} ` : ' ',
    x.advice ? h('button', { type: 'button', class: 'link', onclick: () => fix([x]) }, `→ ${x.advice}`) : ''));
  const all = fixable.length > 1 ? h('button', { type: 'button', onclick: () => fix(fixable) }, T('ui.replace_all')) : '';
  box.replaceChildren(...rows, all);
  box.hidden = !rows.length;
}

async function send() {
  const conv = current();
  const draft = $('draft');
  const text = draft.value.trim();
  if (!conv || conv.readonly || !text) return;
  if (/\{[a-z_]+\}/.test(text)) {
    $('draft-hint').textContent = T('ui.fill_in_the_placeholders_of_the');
    return;
  }
  $('send').disabled = true;
  try {
    const check = await api('POST', '/v1/replies/check', { conversation_id: conv.id, text });
    if (!check.ok) { showBlocked(text, check.reason, check.hits); return; }
    const result = await socket.request({ type: 'reply', conversation_id: conv.id, text });
    if (!result.ok) {
      if (result.hits && result.hits.length) showBlocked(result.text || text, result.reason, result.hits);
      else toast(T('ui.sending_failed', result.reason), 'error');
      return;
    }
    state.drafts.delete(conv.id);
    if (state.selected === conv.id) {  // the agent may have moved on while the reply was checked
      hideBlocked();
      if (draft.value.trim() === text) draft.value = '';
    }
    conv.history.push({ who: 'agent', text: result.text || text, ts: now(), agent_id: state.me.agent_id });
    renderChat();
    refreshToday();
  } catch (err) {
    toast(T('ui.sending_failed', err.message), 'error');
  } finally {
    $('send').disabled = conv.state === 'reserved';
  }
}

// -- actions over the socket -----------------------------------------------------------------------------

async function act(frame, done) {
  const result = await socket.request(frame);
  if (!result.ok) { toast(T('ui.action_failed', result.reason), 'error'); return false; }
  if (done) toast(done);
  return true;
}

async function accept() {
  const conv = current();
  if (!conv) return;
  if (await act({ type: 'accept', conversation_id: conv.id }, T('ui.conversation_accepted'))) {
    conv.state = 'assigned';
    conv.reserved_until = null;
    renderChat();
    $('draft').focus();
  }
}

let closeArmed = null;
async function closeConversation() {
  const conv = current();
  if (!conv) return;
  const btn = $('close-btn');
  if (closeArmed !== conv.id) {
    closeArmed = conv.id;
    btn.textContent = T('ui.end_it');
    setTimeout(() => { closeArmed = null; btn.textContent = T('page.end_conversation'); }, 3000);
    return;
  }
  closeArmed = null;
  btn.textContent = T('page.end_conversation');
  state.closing.add(conv.id);
  if (!await act({ type: 'close', conversation_id: conv.id }, T('ui.conversation_ended'))) state.closing.delete(conv.id);
}

async function openTransfer() {
  const conv = current();
  if (!conv) return;
  try {
    state.agents = (await api('GET', '/v1/agents')).agents;
  } catch (err) {
    toast(T('ui.loading_agents_failed', err.message), 'error');
  }
  const agents = state.agents.filter((a) => a.id !== state.me.agent_id && a.shops.includes(conv.shop_id));
  const usable = (a) => a.status === 'online' && a.in_shift !== false && a.load < a.max_concurrent;
  $('transfer-agent').replaceChildren(...agents.map((a) => h('option', { value: a.id, disabled: !usable(a) },
    T('ui.agent_option', a.name || a.id, a.in_shift === false ? T('ui.off_shift_2') : label(STATUS, a.status), a.load, a.max_concurrent))));
  const firstFree = agents.find(usable);
  if (firstFree) $('transfer-agent').value = firstFree.id;
  // The conversation's own skill group first and chosen: a 物流 question stays with 物流 unless the
  // agent picks another group.
  const skills = [...new Set([conv.skill, ...state.me.skills].filter(Boolean))];
  $('transfer-skill').replaceChildren(...skills.map((s) => h('option', { value: s }, label(SKILL, s))));
  if (conv.skill) $('transfer-skill').value = conv.skill;
  $('transfer-error').hidden = true;
  $('transfer-dialog').showModal();
}

async function doTransfer(target) {
  const conv = current();
  if (!conv) return;
  const result = await socket.request({ type: 'transfer', conversation_id: conv.id, ...target });
  if (!result.ok) {
    $('transfer-error').textContent = T('ui.transfer_failed', result.reason);
    $('transfer-error').hidden = false;
    return;
  }
  $('transfer-dialog').close();
  toast(T('ui.conversation_transferred'));
}

async function saveNote() {
  const conv = current();
  const text = $('note-input').value.trim();
  if (!conv || !text) return;
  if (conv.readonly) { toast(T('ui.notes_only_on_conversations_you_serve'), 'error'); return; }
  if (await act({ type: 'note', conversation_id: conv.id, text }, T('ui.note_saved'))) {
    $('note-input').value = '';
    loadProfile(conv);
  }
}

async function setStatus(status) {
  const result = await socket.request({ type: 'status', status });
  if (!result.ok) { toast(T('ui.status_change_failed_2', result.reason), 'error'); return; }
  state.status = status;
  renderStatus();
}

// -- the socket ---------------------------------------------------------------------------------------------

function adopt(frame) {
  const old = state.convs.get(frame.conversation_id);
  const conv = {
    id: frame.conversation_id, shop_id: frame.shop_id, buyer_id: frame.buyer_id, state: frame.state,
    skill: frame.skill, priority: frame.priority || 0, cause: frame.cause, reserved_until: frame.reserved_until,
    buyer: frame.buyer, order: frame.order, history: frame.history || [],
    unread: old ? old.unread : (frame.history || []).filter((i) => i.who === 'buyer').length,
  };
  state.convs.set(conv.id, conv);
  state.queued.delete(conv.id);
  return conv;
}

function onFrame(frame) {
  switch (frame.type) {
    case 'hello': {
      const held = frame.conversations || [];
      const ids = new Set(held.map((c) => c.conversation_id));
      for (const id of [...state.convs.keys()]) if (!ids.has(id)) state.convs.delete(id);
      for (const c of held) adopt(c);
      state.status = frame.status;
      state.hellos++;
      renderStatus();
      break;
    }
    case 'assigned': {
      const conv = adopt(frame);
      soonToday();
      toast(T('ui.new_conversation', buyerName(conv), shopLabel(conv.shop_id), frame.cause !== 'message' ? ` · ${label(CAUSE, frame.cause)}` : ''));
      if (!state.selected) { select(conv.id); return; }
      break;
    }
    case 'message': {
      const conv = state.convs.get(frame.conversation_id);
      if (!conv) return;
      // A batch's later messages can already be in the history the conversation was assigned with.
      if (frame.msg_id && conv.history.some((i) => i.msg_id === frame.msg_id)) return;
      conv.history.push({ who: 'buyer', text: frame.text, ts: frame.ts, kind: frame.kind || 'text', msg_id: frame.msg_id });
      if (state.selected === conv.id) loadAssist(conv);
      if (state.selected !== conv.id || document.hidden) conv.unread++;
      break;
    }
    case 'transferred':
    case 'closed': {
      const conv = state.convs.get(frame.conversation_id);
      state.convs.delete(frame.conversation_id);
      if (conv && frame.type === 'transferred') {
        toast(T('ui.conversation_transferred_out', buyerName(conv), label(CAUSE, frame.cause), frame.to_agent ? ` → ${frame.to_agent}` : ''));
      } else if (conv && !state.closing.delete(frame.conversation_id)) {
        toast(T('ui.conversation_closed_by_itself', buyerName(conv)));  // e.g. the buyer's silence ended it (router/service/lifecycle.py)
      }
      // What was typed for a buyer who left goes with them: neither restored if they come back later
      // nor left in the composer for the conversation selected next.
      if (state.selected === frame.conversation_id) $('draft').value = '';
      state.drafts.delete(frame.conversation_id);
      if (state.selected === frame.conversation_id) setSelected(null);
      soonToday();
      break;
    }
    case 'context': {
      const conv = state.convs.get(frame.conversation_id);
      if (conv) conv.order = frame.order;
      if (conv && state.selected === conv.id) loadProfile(conv);  // the story changed: orders, scans, 售后
      break;
    }
    default:
      return;
  }
  if (frame.type === 'message' && state.selected === frame.conversation_id) renderChat();
  else if (frame.type === 'hello' || frame.type === 'closed' || frame.type === 'transferred' || frame.type === 'context') renderChat();
  else renderList();
  renderStatus();
}

function onSocketState(s) {
  const conn = $('conn');
  const text = { connecting: T('page.connecting'), open: T('ui.connected'), closed: T('ui.disconnected_reconnecting'), replaced: T('ui.logged_in_in_another_window') }[s];
  conn.textContent = text;
  conn.className = `conn ${s}`;
  document.body.dataset.socket = s;
}

// -- bottom bar ---------------------------------------------------------------------------------------------

function renderStatus() {
  for (const btn of document.querySelectorAll('.status-btn')) btn.classList.toggle('active', btn.dataset.status === state.status);
  const mine = [...state.convs.values()].length;
  const cap = state.me.agent ? state.me.agent.max_concurrent : 0;
  $('load').textContent = T('ui.serving_load', mine, cap);
  const t = state.today;
  $('today').textContent = t
    ? T('ui.served_today_replies_3_minute_reply', t.in_shift === false ? T('ui.off_shift_prefix') : '', t.conversations, t.replies, percent(t.reply_rate), duration(t.first_response_s), duration(t.avg_response_s))
    : '';
}

let todayTimer = null;
// A new or ended conversation changes 今日接待 at once: read the figures shortly after the frame
// (they are folded when the routing is committed, before the frame is sent), not at the next tick.
function soonToday() {
  clearTimeout(todayTimer);
  todayTimer = setTimeout(refreshToday, 300);
}

async function refreshToday() {
  clearTimeout(todayTimer);
  try {
    state.today = await api('GET', '/v1/today');
    if (state.today.status) state.status = state.today.status;
    renderStatus();
    renderData();
  } catch { /* shown as missing figures */ }
  todayTimer = setTimeout(refreshToday, 5000);
}

async function refreshQueued() {
  try {
    const data = await api('GET', '/v1/conversations?state=queued');
    const seen = new Set();
    for (const c of data.conversations) {
      seen.add(c.id);
      const old = state.queued.get(c.id);
      state.queued.set(c.id, { ...c, readonly: true, unread: 0, history: old ? old.history : [], loaded: old ? old.loaded : false, buyer: old && old.buyer, order: old && old.order });
    }
    for (const id of [...state.queued.keys()]) if (!seen.has(id)) state.queued.delete(id);
    if (state.selected && !current()) setSelected(null);
    renderList();
  } catch { /* next round */ }
}

// -- other panes ----------------------------------------------------------------------------------------------

function renderOrders() {
  const rows = [...state.convs.values()].filter((c) => c.order).map((c) => h('tr', null,
    h('td', null, shopLabel(c.shop_id)), h('td', null, buyerName(c)), h('td', null, c.order.order_id || '—'),
    h('td', null, c.order.goods || '—'), h('td', null, c.order.amount ? `¥${c.order.amount}` : '—'),
    h('td', null, label(ORDER_STATUS, c.order.status))));
  $('orders-body').replaceChildren(...(rows.length ? rows : [h('tr', null, h('td', { colspan: 6, class: 'empty' }, T('ui.no_order_information_for_the_open')))]));
}

// 售后: the open after-sale requests of my shops (GET /v1/aftersales); a row opens the buyer's
// conversation when one is open.
async function loadAftersales() {
  let items;
  try {
    items = (await api('GET', '/v1/aftersales')).aftersales;
  } catch (err) {
    toast(T('ui.loading_after_sale_requests_failed', err.message), 'error');
    return;
  }
  const convState = (it) => {
    if (!it.conversation_state) return T('ui.no_open_conversation');
    if (state.convs.has(it.conversation_id)) return T('ui.my_conversation');
    return it.agent_id ? T('ui.serving_by', it.agent_id) : label(STATE, it.conversation_state);
  };
  $('aftersale-count').textContent = items.length ? T('ui.sep_4', items.length) : '';
  $('aftersale-body').replaceChildren(...(items.length ? items.map((it) => h('tr', {
    class: it.conversation_state ? 'clickable' : '', dataset: { cid: it.conversation_id || '', aftersale: it.aftersale.aftersale_id },
    onclick: () => openAftersale(it),
  },
    h('td', null, shopLabel(it.shop_id)),
    h('td', null, state.convs.has(it.conversation_id) ? buyerName(state.convs.get(it.conversation_id)) : it.buyer_id || '—'),
    h('td', null, it.order.order_id, it.order.goods ? h('div', { class: 'sub' }, it.order.goods) : null),
    h('td', null, label(AFTERSALE_KIND, it.aftersale.kind)),
    h('td', null, h('span', { class: `badge as-${it.aftersale.state}` }, label(AFTERSALE_STATE, it.aftersale.state))),
    h('td', null, it.aftersale.amount ? yuan(it.aftersale.amount) : '—'), h('td', null, it.aftersale.reason || '—'),
    h('td', null, it.aftersale.opened ? dateTime(it.aftersale.opened) : '—'),
    h('td', null, it.conversation_state ? h('button', { type: 'button', class: 'link' }, T('ui.open_conversation')) : h('span', { class: 'sub' }, convState(it)),
      it.conversation_state ? h('div', { class: 'sub' }, convState(it)) : null)))
    : [h('tr', null, h('td', { colspan: 9, class: 'empty' }, T('ui.no_pending_after_sale_requests')))]));
}

async function openAftersale(it) {
  const cid = it.conversation_id;
  if (!cid || !it.conversation_state) { toast(T('ui.the_buyer_has_no_open_conversation'), 'error'); return; }
  if (!state.convs.has(cid) && !state.queued.has(cid)) {  // someone else's: read-only
    try {
      const full = await api('GET', `/v1/conversations/${encodeURIComponent(cid)}`);
      state.peek = { ...full, readonly: true, unread: 0, loaded: true };
    } catch (err) {
      toast(T('ui.cannot_open_the_conversation', err.message), 'error');
      return;
    }
  }
  showPane('chat');
  await select(cid);
  document.querySelector('.side-tab[data-side="order"]').click();
}

function renderData() {
  const t = state.today;
  if (!t) return;
  const kpi = (name, value) => h('div', { class: 'kpi' }, h('span', null, name), h('strong', null, value));
  $('data-kpis').replaceChildren(kpi(T('ui.served_today'), t.conversations), kpi(T('ui.replies'), t.replies),
    kpi(T('page.3_minute_reply_rate'), percent(t.reply_rate)), kpi(T('page.avg_response'), duration(t.avg_response_s)),
    kpi(T('ui.replied_within_3_minutes'), t.in_time), kpi(T('ui.late_label'), t.missed));
}

function renderSettings() {
  const me = state.me;
  facts($('settings-facts'), [[T('ui.account'), me.account], [T('ui.role'), { agent: T('page.agent'), supervisor: T('ui.supervisor'), admin: T('ui.administrator') }[me.role]],
    [T('page.agent'), me.agent ? T('ui.sep_5', me.agent.name, me.agent.id) : '—'], [T('page.skill_group'), me.agent ? me.agent.skills.map((s) => label(SKILL, s)).join(T('ui.list_enum_comma')) : '—'],
    [T('ui.concurrent_limit'), me.agent ? me.agent.max_concurrent : '—'], [T('page.shop'), me.shops.map((s) => `${label(PLATFORM, s.platform)}·${s.name}`).join(T('ui.list_enum_comma'))]]);
}

function showPane(name) {
  for (const btn of document.querySelectorAll('.nav')) btn.classList.toggle('active', btn.dataset.pane === name);
  for (const pane of document.querySelectorAll('.pane')) pane.hidden = pane.id !== `pane-${name}`;
  if (name === 'orders') renderOrders();
  if (name === 'aftersale') loadAftersales();
  if (name === 'data') renderData();
  if (name === 'settings') renderSettings();
}

// -- start -------------------------------------------------------------------------------------------------------

async function start() {
  requireLogin();
  state.me = await api('GET', '/v1/me');
  setServerTime(state.me.server_time);
  for (const s of state.me.shops) state.shops.set(s.id, s);
  $('who').textContent = `${state.me.account}${state.me.agent ? ` · ${state.me.agent.name}` : ''}`;
  $('to-dashboard').hidden = state.me.role === 'agent';
  $('logout').addEventListener('click', () => { if (socket) socket.stop(); logout(); });
  if (!state.me.agent_id) {
    $('chat-empty').textContent = T('ui.this_account_is_not_linked_to');
    return;
  }
  for (const btn of document.querySelectorAll('.filter')) btn.addEventListener('click', () => { state.filter = btn.dataset.filter; renderList(); });
  $('conv-sort').value = state.sort;
  $('conv-sort').addEventListener('change', () => { state.sort = $('conv-sort').value; localStorage.setItem('fenliu.sort', state.sort); renderList(); });
  $('quick-search').addEventListener('input', () => { const conv = current(); if (conv) renderQuick(conv); });
  for (const btn of document.querySelectorAll('.nav')) btn.addEventListener('click', () => showPane(btn.dataset.pane));
  for (const btn of document.querySelectorAll('.side-tab')) {
    btn.addEventListener('click', () => {
      for (const b of document.querySelectorAll('.side-tab')) b.classList.toggle('active', b === btn);
      for (const id of ['buyer', 'order', 'quick']) $(`side-${id}`).hidden = id !== btn.dataset.side;
    });
  }
  for (const btn of document.querySelectorAll('.status-btn')) btn.addEventListener('click', () => setStatus(btn.dataset.status));
  $('accept').addEventListener('click', accept);
  $('close-btn').addEventListener('click', closeConversation);
  $('transfer-btn').addEventListener('click', openTransfer);
  $('transfer-agent-go').addEventListener('click', () => $('transfer-agent').value && doTransfer({ to_agent: $('transfer-agent').value }));
  $('transfer-skill-go').addEventListener('click', () => $('transfer-skill').value && doTransfer({ to_skill: $('transfer-skill').value }));
  $('save-note').addEventListener('click', saveNote);
  $('aftersale-refresh').addEventListener('click', loadAftersales);
  $('add-tag').addEventListener('click', () => {
    const conv = current();
    const tag = $('tag-input').value.trim();
    if (conv && tag) { $('tag-input').value = ''; addTags(conv, [tag]); }
  });
  $('vip-btn').addEventListener('click', () => { const conv = current(); if (conv) addTags(conv, ['vip']); });
  $('composer').addEventListener('submit', (ev) => { ev.preventDefault(); send(); });
  const draft = $('draft');
  draft.addEventListener('input', () => { hideBlocked(); suggest(); });
  // A blur hides the list a moment later (a click on a suggestion lands first), unless the composer
  // has the focus again by then: a stale timer from an earlier blur must not empty the list the
  // agent is about to Tab into.
  draft.addEventListener('blur', () => setTimeout(() => { if (document.activeElement !== draft) hideSuggestions(); }, 150));
  draft.addEventListener('keydown', (ev) => {
    if (ev.altKey && /^[1-3]$/.test(ev.key)) {
      const item = (state.assist.get(state.selected) || [])[Number(ev.key) - 1];
      if (item) { ev.preventDefault(); insertQuick(item, null); return; }
    }
    if (suggestions.length && (ev.key === 'Tab' || (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing))) {
      ev.preventDefault();
      const s = suggestions[suggestIndex];
      insertQuick(s.item, s.typed);
      return;
    }
    if (suggestions.length && (ev.key === 'ArrowDown' || ev.key === 'ArrowUp')) {
      ev.preventDefault();
      suggestIndex = (suggestIndex + (ev.key === 'ArrowDown' ? 1 : suggestions.length - 1)) % suggestions.length;
      document.querySelectorAll('.suggestion').forEach((el, i) => el.classList.toggle('active', i === suggestIndex));
      return;
    }
    if (ev.key === 'Escape') { hideSuggestions(); return; }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
  });
  renderChat();
  renderStatus();
  socket = new LiveSocket('/v1/agents/ws', { onFrame, onState: onSocketState });
  window.fenliuWorkbench = { socket, state };
  socket.connect();
  setInterval(tickCountdowns, 1000);
  setInterval(refreshQueued, 5000);
  refreshQueued();
  refreshToday();
}

start().catch((err) => {
  if (session.token) toast(T('ui.the_workbench_failed_to_start', err.message), 'error');
});
