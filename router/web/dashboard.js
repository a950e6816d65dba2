// 主管数据看板: a snapshot every two seconds and each routing decision as it commits, over
// /v1/supervisors/ws; status changes and moves go through the HTTP API, which checks the
// supervisor's shops again.
import {
  api, h, label, logout, duration, percent, clock, now, toast, requireLogin, setServerTime, LiveSocket,
  PLATFORM, STATUS, SKILL, STATE, CAUSE, ACTION,
} from './common.js';
import { hourChart, lineChart, loadChart, ring } from './charts.js';

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
    kpi('今日3分钟回复率', percent(t.reply_rate), ring(t.reply_rate)),
    kpi('首次响应', duration(t.first_response_s)),
    kpi('平均响应时长', duration(t.avg_response_s)),
    kpi('满意度', percent(t.satisfaction_rate), h('small', null, `${t.ratings || 0}条评价`)),
    kpi('排队中', d.totals.queued || 0),
    kpi('接待中', (d.totals.assigned || 0) + (d.totals.reserved || 0)),
    kpi('在线客服', `${d.totals.agents_online}/${totalAgents}`),
    kpi('下一班', next ? `${next.name} ${hhmm(next.at)}` : '—'),
    kpi('今日消息', t.messages),
    kpi('今日回复', t.replies),
  );
  const cards = $('kpis').children;
  ['reply-rate', 'first-response', 'avg-response', 'satisfaction', 'queued', 'serving', 'online', 'next-on']
    .forEach((name, i) => { cards[i].dataset.kpi = name; });
  cards[7].title = (d.next_on || []).map((a) => `${a.name} ${hhmm(a.at)}`).join('\n');

  $('queues').replaceChildren(...(d.queues.length ? d.queues.map((q) => h('tr', { dataset: { skill: q.skill } },
    h('td', null, label(SKILL, q.skill)), h('td', null, String(q.depth)),
    h('td', { class: q.oldest_wait_s > 60 ? 'wait-late' : '' }, duration(q.oldest_wait_s)),
    h('td', null, Object.entries(q.shops).map(([s, n]) => `${shopLabel(s)} ${n}`).join('，'))))
    : [h('tr', null, h('td', { colspan: 4, class: 'empty' }, '没有排队的会话'))]));

  $('agents').replaceChildren(...d.agents.map((a) => {
    const select = h('select', { class: 'status-select', dataset: { agent: a.id }, 'aria-label': `${a.name}的状态` },
      ...['online', 'break', 'offline'].map((st) => h('option', { value: st, selected: st === a.status }, STATUS[st])));
    select.addEventListener('change', () => setStatus(a.id, select.value));
    const pct = Math.min(100, (a.load / a.max_concurrent) * 100);
    const off = a.in_shift === false;
    return h('tr', { dataset: { agent: a.id, status: off ? 'off_shift' : a.status } },
      h('td', null, h('span', { class: `dot ${off ? 'off_shift' : a.status}` }), a.name, a.connected ? '' : h('small', { class: 'empty' }, ' 未连接')),
      h('td', null, select, off ? h('small', { class: 'off-shift', title: a.shift_starts ? `${hhmm(a.shift_starts)} 上班` : '' }, ' 排班外') : null),
      h('td', null, h('span', { class: 'loadbar' }, h('i', { class: a.load >= a.max_concurrent ? 'full' : '', style: `width:${pct}%` })), `${a.load}/${a.max_concurrent}`),
      h('td', { class: 'wrap' }, a.shops.map((s) => state.shops.get(s)?.name || s).join('、')),
      h('td', null, a.today ? String(a.today.replies) : '0',
        a.today && a.today.reply_rate != null ? h('small', { class: 'empty' }, ` · 3分钟 ${percent(a.today.reply_rate)}`) : null),
      h('td', null, a.today ? duration(a.today.avg_response_s) : '—'));
  }));

  const t0 = d.server_time;
  $('conversations').replaceChildren(...(d.conversations.length ? d.conversations.slice(0, 80).map((c) => {
    const wait = c.waiting_since ? t0 - c.waiting_since : null;
    return h('tr', { dataset: { conversation: c.id } },
      h('td', null, c.buyer_id), h('td', null, state.shops.get(c.shop_id)?.name || c.shop_id),
      h('td', null, `${label(STATE, c.state)}${c.skill ? `·${label(SKILL, c.skill)}` : ''}`),
      h('td', null, c.agent_id ? agentName(c.agent_id) : '—'),
      h('td', { class: wait != null && wait > 180 ? 'wait-late' : '' }, wait != null ? duration(wait) : '—'),
      h('td', null, h('button', { type: 'button', class: 'move', onclick: () => openMove(c) }, '移交')));
  }) : [h('tr', null, h('td', { colspan: 6, class: 'empty' }, '暂无进行中的会话'))]));

  const skills = [...new Set(state.depth.flatMap((p) => Object.keys(p.q)))].sort();
  lineChart($('queue-chart'), skills.map((sk, i) => ({
    name: sk, color: COLORS[i % COLORS.length], points: state.depth.map((p) => [p.t, p.q[sk] || 0]),
  })), { now: t0 });
  $('queue-legend').replaceChildren(...skills.map((sk, i) => h('span', null, h('i', { style: `background:${COLORS[i % COLORS.length]}` }), label(SKILL, sk))));
  hourChart($('hour-chart'), t.hours, { currentHour: new Date(t0 * 1000).getHours() });
  loadChart($('load-chart'), d.agents);
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
  try { onFrame(await api('GET', '/v1/dashboard')); } catch (err) { toast(`刷新失败：${err.message}`, 'error'); }
}

async function setStatus(agentId, status) {
  try {
    const r = await api('PUT', `/v1/agents/${encodeURIComponent(agentId)}/status`, { status });
    toast(`${agentName(agentId)} 已设为${STATUS[status]}${r.moved.length ? `，${r.moved.length} 个会话重新分配` : ''}`);
  } catch (err) {
    toast(`状态修改失败：${err.message}`, 'error');
  }
  refresh();
}

function openMove(conv) {
  state.moving = conv;
  $('move-title').textContent = `${conv.buyer_id} · ${shopLabel(conv.shop_id)}`;
  const agents = state.data.agents.filter((a) => a.shops.includes(conv.shop_id) && a.id !== conv.agent_id);
  const usable = (a) => a.status === 'online' && a.in_shift !== false && a.load < a.max_concurrent;
  $('move-agent').replaceChildren(...agents.map((a) => h('option', { value: a.id, disabled: !usable(a) },
    `${a.name}（${a.in_shift === false ? '排班外' : STATUS[a.status]} ${a.load}/${a.max_concurrent}）`)));
  const free = agents.find(usable);
  if (free) $('move-agent').value = free.id;
  $('move-skill').replaceChildren(...state.me.skills.map((s) => h('option', { value: s }, label(SKILL, s))));
  $('move-error').hidden = true;
  $('move-dialog').showModal();
}

async function move(target) {
  const conv = state.moving;
  if (!conv) return;
  try {
    await api('POST', `/v1/conversations/${encodeURIComponent(conv.id)}/transfer`, target);
    $('move-dialog').close();
    toast('会话已移交');
    refresh();
  } catch (err) {
    $('move-error').textContent = `移交失败：${err.message}`;
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
  await refresh();
  const socket = new LiveSocket('/v1/supervisors/ws', {
    onFrame,
    onState: (st) => {
      const el = $('feed-state');
      el.textContent = { connecting: '连接中…', open: '● 实时', closed: '○ 重连中…', replaced: '○ 已断开' }[st];
      el.className = `conn ${st}`;
      document.body.dataset.socket = st;
    },
  });
  window.fenliuDashboard = { socket, state };
  socket.connect();
  setInterval(() => { if (state.data) { state.data.server_time = now(); } }, 1000);
}

start().catch((err) => toast(`看板启动失败：${err.message}`, 'error'));
