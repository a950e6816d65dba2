// 主管数据看板: a snapshot every two seconds and each routing decision as it commits, over
// /v1/supervisors/ws; status changes and moves go through the HTTP API, which checks the
// supervisor's shops again.
import {
  api, h, label, logout, duration, percent, clock, now, toast, requireLogin, setServerTime, LiveSocket, T,
  PLATFORM, STATUS, SKILL, STATE, CAUSE, ACTION,
} from './common.js';
import { fitHeight, hourChart, lineChart, loadChart, ring } from './charts.js';

const $ = (id) => document.getElementById(id);
const state = { me: null, data: null, shops: new Map(), depth: [], moving: null, fresh: new Set() };
const COLORS = ['#e02e24', '#2f6fed', '#1f9d55', '#e08a00', '#8e44ad', '#16a5a5'];

function shopLabel(id) {
  const s = state.shops.get(id);
  return s ? `${label(PLATFORM, s.platform)}·${s.name}` : id;
}

function agentName(id) {
  const a = state.data && state.data.agents.find((x) => x.id === id);
  return a ? a.name : id || '—';
}

function hhmm(ts) { return clock(ts).slice(0, 5); }

// The alert thresholds when the server sends none (it sends [defaults]' wait_warn_s, wait_alert_s,
// queue_warn, queue_alarm with every snapshot; docs/workbench.md, "Alerts").
const ALERTS = { wait_warn_s: 60, wait_alert_s: 150, reply_within_s: 180, queue_warn: 5, queue_alarm: 10 };
function level(value, amber, red) {
  if (value == null) return '';
  return value >= red ? 'lvl-red' : value >= amber ? 'lvl-amber' : '';
}

function kpi(name, value, extra) {
  return h('div', { class: 'kpi' }, h('span', null, name), h('strong', null, value), extra || null);
}

function render() {
  const d = state.data;
  if (!d) return;
  const t = d.today;
  const totalAgents = d.agents.length;
  const next = (d.next_on || [])[0];
  $('kpis').replaceChildren(
    kpi(T('ui.3_minute_reply_rate_today'), percent(t.reply_rate), ring(t.reply_rate)),
    kpi(T('ui.first_response'), duration(t.first_response_s)),
    kpi(T('ui.average_response_time'), duration(t.avg_response_s)),
    kpi(T('ui.satisfaction'), percent(t.satisfaction_rate), h('small', null, T('ui.ratings', t.ratings || 0))),
    kpi(T('ui.queued'), d.totals.queued || 0),
    kpi(T('ui.serving'), (d.totals.assigned || 0) + (d.totals.reserved || 0)),
    kpi(T('ui.agents_online'), `${d.totals.agents_online}/${totalAgents}`),
    kpi(T('ui.next_on_shift'), next ? `${next.name} ${hhmm(next.at)}` : '—'),
    kpi(T('ui.messages_today'), t.messages),
    kpi(T('page.replies_today'), t.replies),
  );
  const cards = $('kpis').children;
  ['reply-rate', 'first-response', 'avg-response', 'satisfaction', 'queued', 'serving', 'online', 'next-on']
    .forEach((name, i) => { cards[i].dataset.kpi = name; });
  cards[7].title = (d.next_on || []).map((a) => `${a.name} ${hhmm(a.at)}`).join('\n');

  const A = { ...ALERTS, ...(d.alerts || {}) };
  $('queues').replaceChildren(...(d.queues.length ? d.queues.map((q) => h('tr', { dataset: { skill: q.skill } },
    h('td', null, label(SKILL, q.skill)),
    h('td', { class: level(q.depth, A.queue_warn, A.queue_alarm), dataset: { level: level(q.depth, A.queue_warn, A.queue_alarm) || 'ok' } }, String(q.depth)),
    h('td', { class: level(q.oldest_wait_s, A.wait_warn_s, A.wait_alert_s) }, duration(q.oldest_wait_s)),
    h('td', null, Object.entries(q.shops).map(([s, n]) => `${shopLabel(s)} ${n}`).join(T('ui.list_comma')))))
    : [h('tr', null, h('td', { colspan: 4, class: 'empty' }, T('ui.no_queued_conversations')))]));

  $('agents').replaceChildren(...d.agents.map((a) => {
    const select = h('select', { class: 'status-select', dataset: { agent: a.id }, 'aria-label': T('ui.status_of', a.name) },
      ...['online', 'break', 'offline'].map((st) => h('option', { value: st, selected: st === a.status }, STATUS[st])));
    select.addEventListener('change', () => setStatus(a.id, select.value));
    const pct = Math.min(100, (a.load / a.max_concurrent) * 100);
    const off = a.in_shift === false;
    return h('tr', { dataset: { agent: a.id, status: off ? 'off_shift' : a.status } },
      h('td', null, h('span', { class: `dot ${off ? 'off_shift' : a.status}` }), a.name, a.connected ? '' : h('small', { class: 'empty' }, T('ui.not_connected'))),
      h('td', null, select, off ? h('small', { class: 'off-shift', title: a.shift_starts ? T('ui.on_at', hhmm(a.shift_starts)) : '' }, T('ui.off_shift')) : null),
      h('td', null, h('span', { class: 'loadbar' }, h('i', { class: a.load >= a.max_concurrent ? 'full' : '', style: `width:${pct}%` })), `${a.load}/${a.max_concurrent}`),
      h('td', { class: 'wrap' }, a.shops.map((s) => state.shops.get(s)?.name || s).join(T('ui.list_enum_comma'))),
      h('td', null, a.today ? String(a.today.replies) : '0',
        a.today && a.today.reply_rate != null ? h('small', { class: 'empty' }, T('ui.3_min', percent(a.today.reply_rate))) : null),
      h('td', null, a.today ? duration(a.today.avg_response_s) : '—'));
  }));

  const t0 = d.server_time;
  renderAlerts(d, A, t0);
  $('conversations').replaceChildren(...(d.conversations.length ? d.conversations.slice(0, 80).map((c) => {
    const wait = c.waiting_since ? t0 - c.waiting_since : null;
    return h('tr', { dataset: { conversation: c.id }, class: wait != null && wait >= A.wait_alert_s ? 'alert-row' : '' },
      h('td', null, c.buyer_id), h('td', null, state.shops.get(c.shop_id)?.name || c.shop_id),
      h('td', null, `${label(STATE, c.state)}${c.skill ? `·${label(SKILL, c.skill)}` : ''}`),
      h('td', null, c.agent_id ? agentName(c.agent_id) : '—'),
      h('td', { class: wait != null ? level(wait, A.wait_warn_s, A.wait_alert_s) : '' }, wait != null ? duration(wait) : '—'),
      h('td', null, h('button', { type: 'button', class: 'move', onclick: () => openMove(c) }, T('ui.move'))));
  }) : [h('tr', null, h('td', { colspan: 6, class: 'empty' }, T('ui.no_open_conversations')))]));

  const skills = [...new Set(state.depth.flatMap((p) => Object.keys(p.q)))].sort();
  lineChart($('queue-chart'), skills.map((sk, i) => ({
    name: sk, color: COLORS[i % COLORS.length], points: state.depth.map((p) => [p.t, p.q[sk] || 0]),
  })), { now: t0, height: fitHeight($('queue-chart'), 110) });
  $('queue-legend').replaceChildren(...skills.map((sk, i) => h('span', null, h('i', { style: `background:${COLORS[i % COLORS.length]}` }), label(SKILL, sk))));
  hourChart($('hour-chart'), t.hours, { currentHour: new Date(t0 * 1000).getHours(), height: fitHeight($('hour-chart'), 130) });
  loadChart($('load-chart'), d.agents);
}

// 即将超时: buyers waiting at least wait_alert_s for a human reply (the 3-minute window is about to
// lapse), most waiting first, each with a one-click move to the least-loaded agent who can take it.
function usableFor(conv) {
  return state.data.agents.filter((a) => a.shops.includes(conv.shop_id) && a.id !== conv.agent_id
    && a.status === 'online' && a.in_shift !== false && a.load < a.max_concurrent)
    .sort((a, b) => a.load / a.max_concurrent - b.load / b.max_concurrent || a.id.localeCompare(b.id));
}

function renderAlerts(d, A, t0) {
  const late = d.conversations.filter((c) => c.state !== 'bot' && c.waiting_since && t0 - c.waiting_since >= A.wait_alert_s);
  $('alerts-count').textContent = late.length ? String(late.length) : '';
  $('alerts-box').dataset.level = late.length ? 'red' : 'ok';
  $('alerts').replaceChildren(...(late.length ? late.slice(0, 20).map((c) => {
    const wait = t0 - c.waiting_since;
    const to = usableFor(c)[0];
    return h('tr', { dataset: { conversation: c.id }, class: 'alert-row' },
      h('td', null, c.buyer_id), h('td', null, state.shops.get(c.shop_id)?.name || c.shop_id),
      h('td', null, c.agent_id ? agentName(c.agent_id) : label(STATE, c.state)),
      h('td', { class: level(wait, A.wait_warn_s, A.wait_alert_s) }, duration(wait),
        wait >= A.reply_within_s ? h('small', null, T('ui.missed')) : h('small', null, T('ui.s_left', Math.max(0, Math.ceil(A.reply_within_s - wait))))),
      h('td', null, to
        ? h('button', { type: 'button', class: 'primary quick-move', dataset: { agent: to.id }, onclick: () => { state.moving = c; move({ to_agent: to.id }); } }, T('ui.move_to', to.name))
        : h('button', { type: 'button', class: 'move', onclick: () => openMove(c) }, T('ui.move'))));
  }) : [h('tr', null, h('td', { colspan: 5, class: 'empty' }, T('ui.no_conversation_about_to_miss_the')))]));
}

function renderFeed() {
  const items = (state.data ? state.data.decisions : []).slice(-50).reverse();
  $('feed').replaceChildren(...items.map((x) => h('li', { class: state.fresh.has(x) ? 'fresh' : '' },
    h('time', null, clock(x.ts)),
    h('span', { class: `act-${x.action}` }, label(ACTION, x.action)),
    h('span', null, `${x.conversation_id.split(':')[1]}@${state.shops.get(x.shop_id)?.name || x.shop_id}`),
    x.agent_id ? h('span', null, `→ ${agentName(x.agent_id)}`) : null,
    x.skill ? h('span', { class: 'empty' }, label(SKILL, x.skill)) : null,
    x.cause !== 'message' ? h('span', { class: 'empty' }, label(CAUSE, x.cause)) : null)));
  state.fresh.clear();
}

function sample(d) {
  const q = {};
  for (const item of d.queues) q[item.skill] = item.depth;
  state.depth.push({ t: d.server_time, q });
  while (state.depth.length && state.depth[0].t < d.server_time - 300) state.depth.shift();
}

function onFrame(frame) {
  if (frame.type === 'dashboard') {
    const decisions = state.data ? state.data.decisions : frame.decisions;
    state.data = { ...frame, decisions: state.data ? decisions : frame.decisions };
    for (const s of frame.shops) state.shops.set(s.id, s);
    setServerTime(frame.server_time);
    sample(frame);
    render();
    renderFeed();
  } else if (frame.type === 'decision' && state.data) {
    const item = { ...frame };
    delete item.type;
    state.data.decisions.push(item);
    if (state.data.decisions.length > 200) state.data.decisions.splice(0, state.data.decisions.length - 200);
    state.fresh.add(item);
    renderFeed();
  }
}

async function refresh() {
  try { onFrame(await api('GET', '/v1/dashboard')); } catch (err) { toast(T('ui.refresh_failed', err.message), 'error'); }
}

async function setStatus(agentId, status) {
  try {
    const r = await api('PUT', `/v1/agents/${encodeURIComponent(agentId)}/status`, { status });
    toast(T('ui.set_to', agentName(agentId), STATUS[status], r.moved.length ? T('ui.conversations_reassigned', r.moved.length) : ''));
  } catch (err) {
    toast(T('ui.status_change_failed', err.message), 'error');
  }
  refresh();
}

function openMove(conv) {
  state.moving = conv;
  $('move-title').textContent = `${conv.buyer_id} · ${shopLabel(conv.shop_id)}`;
  const agents = state.data.agents.filter((a) => a.shops.includes(conv.shop_id) && a.id !== conv.agent_id);
  const usable = (a) => a.status === 'online' && a.in_shift !== false && a.load < a.max_concurrent;
  $('move-agent').replaceChildren(...agents.map((a) => h('option', { value: a.id, disabled: !usable(a) },
    T('ui.agent_option', a.name, a.in_shift === false ? T('ui.off_shift_2') : STATUS[a.status], a.load, a.max_concurrent))));
  const free = agents.find(usable);
  if (free) $('move-agent').value = free.id;
  const skills = [...new Set([conv.skill, ...state.me.skills].filter(Boolean))];  // its own group first
  $('move-skill').replaceChildren(...skills.map((s) => h('option', { value: s }, label(SKILL, s))));
  if (conv.skill) $('move-skill').value = conv.skill;
  $('move-error').hidden = true;
  $('move-dialog').showModal();
}

async function move(target) {
  const conv = state.moving;
  if (!conv) return;
  try {
    await api('POST', `/v1/conversations/${encodeURIComponent(conv.id)}/transfer`, target);
    $('move-dialog').close();
    toast(T('ui.conversation_moved'));
    refresh();
  } catch (err) {
    if (!$('move-dialog').open) { toast(T('ui.move_failed', err.message), 'error'); return; }  // a one-click move
    $('move-error').textContent = T('ui.move_failed', err.message);
    $('move-error').hidden = false;
  }
}

async function start() {
  const login = requireLogin();
  if (login.role === 'agent') { location.replace('/web/workbench.html'); return; }
  state.me = await api('GET', '/v1/me');
  setServerTime(state.me.server_time);
  for (const s of state.me.shops) state.shops.set(s.id, s);
  $('who').textContent = state.me.account;
  $('to-workbench').hidden = !state.me.agent_id;
  $('logout').addEventListener('click', logout);
  $('move-agent-go').addEventListener('click', () => $('move-agent').value && move({ to_agent: $('move-agent').value }));
  $('move-skill-go').addEventListener('click', () => $('move-skill').value && move({ to_skill: $('move-skill').value }));
  window.addEventListener('resize', render);  // the charts take their cards' new shape
  await refresh();
  const socket = new LiveSocket('/v1/supervisors/ws', {
    onFrame,
    onState: (st) => {
      const el = $('feed-state');
      el.textContent = { connecting: T('page.connecting'), open: T('ui.live'), closed: T('ui.reconnecting'), replaced: T('ui.disconnected') }[st];
      el.className = `conn ${st}`;
      document.body.dataset.socket = st;
    },
  });
  window.fenliuDashboard = { socket, state };
  socket.connect();
  setInterval(() => { if (state.data) { state.data.server_time = now(); } }, 1000);
}

start().catch((err) => toast(T('ui.the_dashboard_failed_to_start', err.message), 'error'));
