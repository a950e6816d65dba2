// Small inline-SVG charts, drawn by hand (no chart library).
import { T } from './common.js';

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

function frame(width, height) {
  return s('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
}

function niceMax(v) {
  if (v <= 5) return 5;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// The viewBox height (its width is 400) that gives a chart the shape of its box, so a chart that
// fills what its card has left keeps its text undistorted; ``fallback`` before the box is laid out.
export function fitHeight(container, fallback) {
  const { clientWidth: w, clientHeight: h } = container;
  return w > 0 && h > 0 ? Math.round((400 * h) / w) : fallback;
}

// Lines over time: series [{name, color, points: [[t, y], …]}]; t in seconds.
export function lineChart(container, series, { height = 110, span = 300, now } = {}) {
  const width = 400;
  const pad = { l: 26, r: 6, t: 8, b: 16 };
  const svg = frame(width, height);
  svg.setAttribute('aria-label', T('ui.queue_depth_trend'));
  const end = now;
  const start = end - span;
  const maxY = niceMax(Math.max(1, ...series.flatMap((se) => se.points.map((p) => p[1]))));
  const x = (t) => pad.l + ((t - start) / span) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / maxY) * (height - pad.t - pad.b);
  for (const v of [0, maxY / 2, maxY]) {
    svg.append(s('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), stroke: '#eef0f3' }));
    svg.append(s('text', { x: 2, y: y(v) + 3 }, String(Math.round(v))));
  }
  for (const m of [5, 4, 3, 2, 1, 0]) {
    const t = end - m * 60;
    if (t >= start) {  // 现在 ends at the right edge (centred, half of it was cut off)
      svg.append(m ? s('text', { x: x(t) - 8, y: height - 3 }, T('ui.chart_minutes_ago', m))
        : s('text', { x: x(t), y: height - 3, 'text-anchor': 'end' }, T('ui.now')));
    }
  }
  for (const se of series) {
    const pts = se.points.filter((p) => p[0] >= start);
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    svg.append(s('path', { d, fill: 'none', stroke: se.color, 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }));
  }
  container.replaceChildren(svg);
}

// 24 hourly bars (messages) with a line for the 3-minute reply rate (0–100 %).
export function hourChart(container, hours, { height = 130, currentHour } = {}) {
  const width = 400;
  const pad = { l: 26, r: 28, t: 8, b: 16 };
  const svg = frame(width, height);
  svg.setAttribute('aria-label', T('ui.messages_per_hour_and_3_minute'));
  const maxY = niceMax(Math.max(1, ...hours.map((h) => h.messages)));
  const bw = (width - pad.l - pad.r) / 24;
  const y = (v) => height - pad.b - (v / maxY) * (height - pad.t - pad.b);
  const yr = (r) => height - pad.b - r * (height - pad.t - pad.b);
  for (const v of [0, maxY / 2, maxY]) {
    svg.append(s('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), stroke: '#eef0f3' }));
    svg.append(s('text', { x: 2, y: y(v) + 3 }, String(Math.round(v))));
  }
  for (const r of [0, 0.5, 1]) svg.append(s('text', { x: width - pad.r + 3, y: yr(r) + 3 }, `${r * 100}%`));
  const line = [];
  hours.forEach((hr, i) => {
    const x0 = pad.l + i * bw;
    if (hr.messages) {
      const rect = s('rect', { x: x0 + 1, y: y(hr.messages), width: Math.max(1, bw - 2), height: height - pad.b - y(hr.messages), fill: i === currentHour ? '#6f96ee' : '#9db8f5' });
      rect.append(s('title', null, T('ui.00_messages', i, hr.messages)));
      svg.append(rect);
    }
    if (i % 3 === 0) svg.append(s('text', { x: x0, y: height - 3 }, T('ui.chart_hour', i)));
    if (hr.judged) line.push([x0 + bw / 2, yr(hr.in_time / hr.judged)]);
  });
  if (line.length) {
    svg.append(s('path', { d: line.map((p, i) => `${i ? 'L' : 'M'}${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(''), fill: 'none', stroke: '#e02e24', 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }));
    for (const p of line) svg.append(s('circle', { cx: p[0], cy: p[1], r: 2.5, fill: '#e02e24' }));
  }
  container.replaceChildren(svg);
}

// Horizontal bars: load against cap per agent.
export function loadChart(container, agents) {
  const width = 400;
  const row = 16;
  const height = Math.max(row * agents.length + 6, 30);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': T('page.agent_load') });
  const maxCap = Math.max(1, ...agents.map((a) => a.max_concurrent));
  const left = 110;
  agents.forEach((a, i) => {
    const yy = 3 + i * row;
    const full = (width - left - 40) * (a.max_concurrent / maxCap);
    const used = full * (a.load / a.max_concurrent);
    svg.append(s('text', { x: 0, y: yy + 10 }, (a.name || a.id).slice(0, 9)));
    svg.append(s('rect', { x: left, y: yy + 2, width: full, height: 9, fill: '#eef0f3', rx: 2 }));
    const color = a.status !== 'online' ? '#b9bfcc' : a.load >= a.max_concurrent ? '#d62f2f' : '#1f9d55';
    if (used > 0) svg.append(s('rect', { x: left, y: yy + 2, width: used, height: 9, fill: color, rx: 2 }));
    svg.append(s('text', { x: left + full + 4, y: yy + 10 }, `${a.load}/${a.max_concurrent}`));
  });
  container.replaceChildren(svg);
}

// A ring for a rate (0–1).
export function ring(rate, { size = 34, color = '#1f9d55' } = {}) {
  const r = size / 2 - 4;
  const c = 2 * Math.PI * r;
  const svg = s('svg', { width: size, height: size, viewBox: `0 0 ${size} ${size}`, class: 'ring' });
  svg.append(s('circle', { cx: size / 2, cy: size / 2, r, fill: 'none', stroke: '#eef0f3', 'stroke-width': 5 }));
  if (rate != null) {
    svg.append(s('circle', {
      cx: size / 2, cy: size / 2, r, fill: 'none', stroke: rate < 0.8 ? '#d62f2f' : color, 'stroke-width': 5,
      'stroke-dasharray': `${(c * rate).toFixed(1)} ${c.toFixed(1)}`, transform: `rotate(-90 ${size / 2} ${size / 2})`,
    }));
  }
  return svg;
}
