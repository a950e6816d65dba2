// Shared pieces of the workbench and the dashboard: the session, the API, a reconnecting
// WebSocket, labels and small DOM helpers. Plain ES modules, no build step.

// -- strings: one JSON catalogue per language (router/service/web/i18n/), zh-CN by default --------------------
// Every string a person reads comes from the catalogue: T(key, ...args) fills {0}, {1}…; the pages'
// HTML carries data-i18n (text), data-i18n-placeholder, data-i18n-aria-label and data-i18n-title
// keys. The language is the one chosen with the 中/EN switch (localStorage), else the browser's.
// Server error messages arrive translated already and are shown as they are.

export const LANGS = ['zh-CN', 'en'];
const LANG_KEY = 'fenliu.lang';

function pickLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (LANGS.includes(saved)) return saved;
  for (const l of navigator.languages || [navigator.language || '']) {
    const lower = String(l).toLowerCase();
    if (lower.startsWith('zh')) return 'zh-CN';
    if (lower.startsWith('en')) return 'en';
  }
  return 'zh-CN';
}

export const LANG = pickLang();
const CATALOGUE = await fetch(`/web/i18n/${LANG}.json`).then((r) => r.json()).catch(() => ({}));

export function T(key, ...args) {
  const text = CATALOGUE[key];
  if (text == null) return key;
  return args.length ? text.replace(/\{(\d+)\}/g, (m, i) => (args[i] == null ? '' : String(args[i]))) : text;
}

export function setLang(lang) {
  localStorage.setItem(LANG_KEY, lang);
  location.reload();
}

export function applyI18n(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = T(el.dataset.i18n);
  for (const attr of ['placeholder', 'aria-label', 'title']) {
    const data = `i18n${attr.replace(/(^|-)([a-z])/g, (m, d, c) => c.toUpperCase())}`;
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, T(el.dataset[data]));
  }
}

function addLangSwitch() {
  const host = document.querySelector('.toplinks') || document.querySelector('.login-card');
  if (!host || document.getElementById('lang-toggle')) return;
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.id = 'lang-toggle';
  btn.className = 'link lang-toggle';
  btn.textContent = T('lang.switch');
  btn.title = T('lang.switch_title');
  btn.addEventListener('click', () => setLang(LANG === 'en' ? 'zh-CN' : 'en'));
  host.prepend(btn);
}

document.documentElement.lang = LANG;
applyI18n();
addLangSwitch();

export const PLATFORM = { pinduoduo: T('ui.pinduoduo'), taobao: T('ui.taobao'), tmall: T('ui.tmall'), jd: T('ui.jd'), douyin: T('ui.douyin'), other: T('ui.other') };
export const STATUS = { online: T('page.online'), break: T('page.break'), offline: T('page.offline') };
export const SKILL = { presale: T('ui.pre_sale'), logistics: T('ui.logistics'), aftersale: T('page.after_sale'), vip: T('ui.vip') };
export const STATE = { queued: T('ui.queued'), reserved: T('ui.to_accept'), assigned: T('ui.serving'), bot: T('ui.bot') };
export const CAUSE = {
  message: T('ui.new_message'), queue_drain: T('ui.from_queue'), expansion: T('ui.wider_skill_group'), agent_offline: T('ui.agent_offline'),
  transfer: T('page.transfer'), reservation_timeout: T('ui.not_accepted_in_time'),
};
export const ACTION = { assigned: T('ui.assigned'), queued: T('page.queued'), answered: T('ui.bot_answered'), blocked: T('ui.blocked'), duplicate: T('ui.duplicate') };
export const ORDER_STATUS = {
  unpaid: T('ui.unpaid'), paid: T('ui.paid'), shipped: T('ui.shipped'), delivered: T('ui.delivered'), refund_requested: T('ui.refund_requested'),
  refunding: T('ui.refunding'), refunded: T('ui.refunded'), closed: T('ui.closed'), completed: T('ui.completed'),
};
export const GROUP = {
  common: T('ui.common_group'),
  shipping: T('ui.shipping'), size: T('ui.sizing'), freight_insurance: T('ui.return_shipping_insurance'), coupon: T('ui.promotions'), invoice: T('ui.invoices'),
  returns: T('ui.returns_and_exchanges'), fruit: T('ui.fresh_produce_after_sale'), digital: T('ui.electronics_warranty'),
};

export const label = (map, key) => (key == null ? '' : map[key] || key);

// -- session ----------------------------------------------------------------------------------------

const TOKEN = 'fenliu.token';
const LOGIN = 'fenliu.login';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get login() {
    try { return JSON.parse(sessionStorage.getItem(LOGIN) || 'null'); } catch { return null; }
  },
  save(login) {
    sessionStorage.setItem(TOKEN, login.token);
    sessionStorage.setItem(LOGIN, JSON.stringify(login));
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(LOGIN);
  },
};

export function logout() {
  session.clear();
  location.replace('/web/');
}

export function requireLogin() {
  if (!session.token) {
    location.replace('/web/');
    throw new Error('not logged in');
  }
  return session.login;
}

// -- clock: the server's, so countdowns agree with the router's deadlines ---------------------------

let offsetMs = 0;
export function setServerTime(serverSeconds) { offsetMs = serverSeconds * 1000 - Date.now(); }
export function now() { return (Date.now() + offsetMs) / 1000; }

// -- HTTP -------------------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json', 'Accept-Language': LANG };  // the server's messages in the page's language
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (resp.status === 401 && path !== '/v1/auth/login') {
    logout();
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// -- a WebSocket that comes back ---------------------------------------------------------------------

export class LiveSocket {
  // onFrame(frame) for every server frame; onState('connecting' | 'open' | 'closed' | 'replaced').
  constructor(path, { onFrame, onState }) {
    this.path = path;
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.ws = null;
    this.pending = new Map();
    this.seq = 0;
    this.delay = 500;
    this.stopped = false;
    this.timer = null;
  }

  // A browser's WebSocket cannot send the Authorization header, and a token in a URL ends up in
  // logs: each connection trades the token for a single-use ticket that lives a few seconds.
  async url() {
    const { ticket } = await api('POST', '/v1/auth/ws-ticket');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}${this.path}?ticket=${encodeURIComponent(ticket)}&lang=${encodeURIComponent(LANG)}`;
  }

  retry() {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 5000);
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.onState('connecting');
    let url;
    try {
      url = await this.url();
    } catch (err) {
      if (err.status === 401) { this.stopped = true; return; }  // api() has logged out
      this.onState('closed');
      this.retry();
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.onState('open');
    };
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (frame.type === 'result' && frame.ref && this.pending.has(frame.ref)) {
        const resolve = this.pending.get(frame.ref);
        this.pending.delete(frame.ref);
        resolve(frame);
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const resolve of this.pending.values()) resolve({ type: 'result', ok: false, reason: T('ui.connection_lost_please_retry') });
      this.pending.clear();
      if (ev.code === 4000) {
        this.stopped = true;
        this.onState('replaced');
        return;
      }
      if (ev.code === 4401) {  // the password changed, the account was disabled or the token expired
        this.stopped = true;
        logout();
        return;
      }
      this.onState('closed');
      this.retry();
    };
  }

  // Drops the connection as a network failure would; the socket reconnects by itself.
  drop() {
    if (this.ws) this.ws.close(4999, 'dropped');
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  request(frame) {
    if (!this.open) return Promise.resolve({ type: 'result', ok: false, reason: T('ui.not_connected_to_the_server_reconnecting') });
    const ref = `w${++this.seq}`;
    return new Promise((resolve) => {
      this.pending.set(ref, resolve);
      this.ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, 'bye');
  }
}

// -- DOM ------------------------------------------------------------------------------------------------

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function mmss(seconds) {
  const s = Math.max(0, Math.floor(Math.abs(seconds)));
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

export function duration(seconds) {
  if (seconds == null) return '—';
  if (seconds < 60) return T('ui.duration_s', Math.round(seconds));
  if (seconds < 3600) return T('ui.duration_min_s', Math.floor(seconds / 60), Math.round(seconds % 60));
  return T('ui.duration_h_min', Math.floor(seconds / 3600), Math.floor((seconds % 3600) / 60));
}

export function clock(ts) {
  const d = new Date(ts * 1000);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}:${String(d.getSeconds()).padStart(2, '0')}`;
}

export function percent(rate) { return rate == null ? '—' : `${(rate * 100).toFixed(1)}%`; }

export function toast(text, kind = 'info') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const item = h('div', { class: `toast ${kind}` }, text);
  box.append(item);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => item.remove(), 3000);
}

// Highlights [start, end) ranges given in code points (the server's string indices) with <mark>.
export function highlight(text, hits) {
  const chars = Array.from(text);
  const marks = new Array(chars.length).fill(false);
  for (const hit of hits || []) {
    for (let i = Math.max(0, hit.start); i < Math.min(chars.length, hit.end); i++) marks[i] = true;
  }
  const out = [];
  let i = 0;
  while (i < chars.length) {
    const on = marks[i];
    let j = i;
    while (j < chars.length && marks[j] === on) j++;
    const piece = chars.slice(i, j).join('');
    out.push(on ? h('mark', { class: 'hit' }, piece) : document.createTextNode(piece));
    i = j;
  }
  return out;
}
