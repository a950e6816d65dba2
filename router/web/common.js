// Shared pieces of the workbench and the dashboard: the session, the API, a reconnecting
// WebSocket, labels and small DOM helpers. Plain ES modules, no build step.

export const PLATFORM = { pinduoduo: '拼多多', taobao: '淘宝', tmall: '天猫', jd: '京东', douyin: '抖音', other: '其他' };
export const STATUS = { online: '在线', break: '小休', offline: '离线' };
export const SKILL = { presale: '售前', logistics: '物流', aftersale: '售后', vip: 'VIP专属' };
export const STATE = { queued: '排队中', reserved: '待接入', assigned: '接待中', bot: '机器人' };
export const CAUSE = {
  message: '新消息', queue_drain: '排队分配', expansion: '扩大技能组', agent_offline: '客服离线',
  transfer: '转接', reservation_timeout: '超时未接入',
};
export const ACTION = { assigned: '分配', queued: '排队', answered: '机器人应答', blocked: '拦截', duplicate: '重复' };
export const ORDER_STATUS = {
  unpaid: '待付款', paid: '已付款', shipped: '已发货', delivered: '已签收', refund_requested: '申请退款',
  refunding: '退款中', refunded: '已退款', closed: '已关闭', completed: '已完成',
};
export const GROUP = {
  shipping: '物流发货', size: '尺码推荐', freight_insurance: '运费险', coupon: '优惠活动', invoice: '发票',
  returns: '退换货', fruit: '生鲜售后', digital: '数码保修',
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
  const headers = { Accept: 'application/json' };
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
    return `${proto}//${location.host}${this.path}?ticket=${encodeURIComponent(ticket)}`;
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
      for (const resolve of this.pending.values()) resolve({ type: 'result', ok: false, reason: '连接已断开，请重试' });
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
    if (!this.open) return Promise.resolve({ type: 'result', ok: false, reason: '未连接到服务器，正在重连…' });
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
  if (seconds < 60) return `${Math.round(seconds)}秒`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}分${Math.round(seconds % 60)}秒`;
  return `${Math.floor(seconds / 3600)}时${Math.floor((seconds % 3600) / 60)}分`;
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
