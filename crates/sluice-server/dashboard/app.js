// Sluice's dashboard: one page, no framework, no outside asset. It reads the same JSON API as the CLI
// with the session cookie, follows the change stream (/api/v1/stream) to stay live without reloading,
// and sends people's decisions with their reason and the session's CSRF value. Every text from the server
// goes in through textContent: nothing it says is ever parsed as HTML.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const TERMINAL = ['completed', 'rolled_back', 'aborted'];
// Marks are characters every common system font has (the media-control symbols often render as boxes).
const STATE_MARK = {
  pending: '… pending', running: '▶ running', paused: '‖ paused', baking: '◐ baking',
  completed: '✔ completed', rolled_back: '✖ rolled back', aborted: '■ aborted',
};
let session = null;
let stream = null;
let refreshTimer = null;
let clockTimer = null;
// Each render takes the next number; a page paints only while its number is the newest, so a slow
// answer for a page the user already left (or an older refresh) never paints over the page on screen.
let renders = 0;
const superseded = mine => mine !== renders;

// ---- small helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function when(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function span(ms) {
  const t = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(t / 86400), hh = Math.floor((t % 86400) / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

function num(v) {
  if (v === null || v === undefined) return 'no value';
  if (v === 0 || (Math.abs(v) >= 0.001 && Math.abs(v) < 1e6)) return String(Number(v.toFixed(4)));
  return v.toExponential(2);
}

// Replaces an element's children, skipping the sections a page leaves out (null). A live page re-renders
// every time its rollout ticks, so the focused control (a keyboard user's place on the page) is found
// again in the new children and focused, rather than dropped to the top of the document: a field keeps
// what was typed in it and the cursor; of alike controls (the links of one rollout's audit rows), the
// one at the same place among them is focused.
function put(el, ...children) {
  const active = document.activeElement;
  const was = el !== active && el.contains(active) ? active : null;
  const key = was && focusKey(was);
  const alike = root => [...root.querySelectorAll('a, button, input, textarea, select')].filter(c => focusKey(c) === key);
  const nth = was ? alike(el).indexOf(was) : -1;
  el.replaceChildren(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
  if (!was) return;
  const same = alike(el);
  const again = same[Math.max(0, Math.min(nth, same.length - 1))];
  if (!again) return;
  if ('value' in was && 'value' in again && ['INPUT', 'TEXTAREA'].includes(was.tagName)) {
    again.value = was.value;
    try { again.setSelectionRange(was.selectionStart, was.selectionEnd); } catch { /* not a text field */ }
  }
  again.focus({ preventScroll: true });
}

function focusKey(e) {
  return e.id ? `#${e.id}` : `${e.tagName}|${e.getAttribute('href') || ''}|${e.textContent}`;
}

function notice(text) {
  const n = document.getElementById('notice');
  n.textContent = text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.textContent = ''; }, 6000);
}

async function api(path, options = {}) {
  const init = { credentials: 'same-origin', headers: {}, ...options };
  if (init.body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(init.body);
  }
  if (init.method && init.method !== 'GET' && session) init.headers['x-sluice-csrf'] = session.csrf;
  const r = await fetch(path, init);
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { message: text }; }
  // A session that ended (expired, or its token revoked): back to the login form.
  if (r.status === 401 && session && path !== '/ui/login') { session = null; render(); }
  if (!r.ok) throw new Error((body && (body.message || body.errorDetails)) || `HTTP ${r.status}`);
  return body;
}

// A check's verdict in words: a gate that holds passes, a trigger that holds fires.
function verdict(d) {
  if (d.outcome === 'inconclusive') return 'inconclusive';
  if (d.kind === 'gate') return d.outcome === 'holds' ? 'pass' : 'fail';
  return d.outcome === 'holds' ? 'fired' : 'quiet';
}

function verdictText(d) {
  const v = verdict(d);
  const run = d.outcome === 'holds' && d.needed > 1 ? ` ${d.run}/${d.needed} ticks` : '';
  const mark = { pass: '✔', quiet: '●', fail: '✖', fired: '✖', inconclusive: '○' }[v];
  return `${mark} ${v}${run}${d.dry_run ? ' (dry run)' : ''}`;
}

// What an audit event without a reason says: a decision's evidence, an action's or delivery's result.
function gist(a) {
  const d = a.after || {};
  if (a.action === 'rollout.decision') return `${d.kind} ${d.check}: ${num(d.value)} ${d.threshold} → ${verdictText(d)}`;
  if (a.action === 'rollout.action') return `${d.purpose || ''} ${d.name || ''}: ${d.ok ? 'ok' : 'failed'}`;
  if (a.action === 'rollout.notification') return `${d.destination}: ${d.ok ? 'delivered' : 'not delivered'}`;
  return '';
}

// ---- charts ----------------------------------------------------------------------------------------

// A line chart of points [{t, v, mark}] with an optional threshold line; marks are told by shape (● pass
// or quiet, ✖ fail or fired, ○ no value), never by colour alone.
function chart(label, points, opts = {}) {
  const W = 560, H = 170, L = 56, R = 10, T = 10, B = 24;
  const t0 = opts.from ?? (points.length ? points[0].t : 0);
  let t1 = opts.to ?? (points.length ? points[points.length - 1].t : t0 + 1);
  if (t1 <= t0) t1 = t0 + 1;
  const vals = points.filter(p => p.v !== null && p.v !== undefined).map(p => p.v);
  if (opts.threshold !== null && opts.threshold !== undefined) vals.push(opts.threshold);
  (opts.extra || []).forEach(v => vals.push(v));
  let lo = vals.length ? Math.min(...vals) : 0, hi = vals.length ? Math.max(...vals) : 1;
  if (hi - lo < 1e-12) { lo -= Math.max(Math.abs(lo), 1) / 2; hi += Math.max(Math.abs(hi), 1) / 2; }
  lo = lo >= 0 && !opts.keepLow ? 0 : lo - (hi - lo) * 0.08;
  hi += (hi - lo) * 0.08;
  if (opts.range) [lo, hi] = opts.range;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => T + (hi - v) / (hi - lo) * (H - T - B);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label });
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#eaeef2' }));
    svg.append(s('text', { x: L - 6, y: y(v) + 4, 'font-size': 11, 'text-anchor': 'end', fill: '#57606a' }, num(v)));
  }
  svg.append(s('text', { x: L, y: H - 6, 'font-size': 11, fill: '#57606a' }, when(t0)));
  svg.append(s('text', { x: W - R, y: H - 6, 'font-size': 11, 'text-anchor': 'end', fill: '#57606a' }, when(t1)));
  if (opts.threshold !== null && opts.threshold !== undefined) {
    svg.append(s('line', { x1: L, x2: W - R, y1: y(opts.threshold), y2: y(opts.threshold), stroke: '#a40e26', 'stroke-dasharray': '6 4' }));
    svg.append(s('text', { x: W - R - 4, y: y(opts.threshold) - 4, 'font-size': 11, 'text-anchor': 'end', fill: '#a40e26' }, opts.thresholdLabel || 'threshold'));
  }
  if (opts.band) {
    const upper = opts.band.map(p => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
    const lower = opts.band.slice().reverse().map(p => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`);
    if (upper.length > 1) svg.append(s('polygon', { points: upper.concat(lower).join(' '), fill: '#ddf4ff', stroke: '#54aeff' }));
  }
  const line = points.filter(p => p.v !== null && p.v !== undefined).map(p => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
  if (opts.step && line.length) {
    const stepped = [];
    points.forEach((p, i) => {
      if (i > 0) stepped.push(`${x(p.t).toFixed(1)},${y(points[i - 1].v).toFixed(1)}`);
      stepped.push(`${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    });
    stepped.push(`${x(t1).toFixed(1)},${y(points[points.length - 1].v).toFixed(1)}`);
    svg.append(s('polyline', { points: stepped.join(' '), fill: 'none', stroke: '#0969da', 'stroke-width': 2 }));
  } else if (line.length > 1) {
    svg.append(s('polyline', { points: line.join(' '), fill: 'none', stroke: '#0969da', 'stroke-width': 1.5 }));
  }
  const step = Math.max(1, Math.floor(points.length / 200));
  points.forEach((p, i) => {
    if (i % step || !p.mark) return;
    const cx = x(p.t);
    if (p.v === null || p.v === undefined || p.mark === 'inconclusive') {
      svg.append(s('circle', { cx, cy: H - B, r: 3, fill: 'none', stroke: '#57606a' }));
    } else if (p.mark === 'fail' || p.mark === 'fired') {
      svg.append(s('path', { d: `M${cx - 3.5} ${y(p.v) - 3.5}l7 7m0 -7l-7 7`, stroke: '#a40e26', 'stroke-width': 2 }));
    } else {
      svg.append(s('circle', { cx, cy: y(p.v), r: 2.5, fill: '#116329' }));
    }
  });
  return h('div', { class: 'chart' }, svg);
}

// ---- pages -----------------------------------------------------------------------------------------

function loginPage(message) {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'bad', role: 'alert' }, message || '');
  const form = h('form', { class: 'login', onsubmit: async e => {
    e.preventDefault();
    try {
      session = await api('/ui/login', { method: 'POST', body: { token: input.value } });
      input.value = '';
      render();
    } catch (err) {
      error.textContent = `Not logged in: ${err.message}`;
    }
  } },
  h('h1', {}, 'Log in to Sluice'),
  h('p', { class: 'muted' }, 'With a viewer, operator or admin token (sluice token create NAME --role operator). The token is not kept in this browser: the server sets a session cookie.'),
  h('label', { for: 'token' }, 'Token', input),
  h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Log in')),
  error);
  return form;
}

// The environment the dashboard looks at ('' for every one), kept across visits.
function currentEnv() {
  return localStorage.getItem('sluice.env') || '';
}

// The environment switcher: every environment the session may see, and "every environment".
async function envSwitcher() {
  const envs = (await api('/api/v1/environments')).data.map(e => e.name);
  if (currentEnv() && !envs.includes(currentEnv())) localStorage.removeItem('sluice.env');
  const select = h('select', { id: 'env', 'aria-label': 'Environment', onchange: e => {
    if (e.target.value) localStorage.setItem('sluice.env', e.target.value); else localStorage.removeItem('sluice.env');
    render();
  } }, h('option', { value: '' }, envs.length > 1 ? 'All environments' : envs[0] || 'All environments'),
  envs.length > 1 ? envs.map(n => h('option', { value: n, selected: n === currentEnv() }, n)) : []);
  return { envs, select };
}

// Every flag with its state in every environment side by side: the definition is shared, the state is not.
async function flagsPage(main, mine, envs) {
  const [perEnv, rollouts] = await Promise.all([
    Promise.all(envs.map(e => api(`/api/v1/flags?env=${encodeURIComponent(e)}`))),
    api('/api/v1/rollouts'),
  ]);
  if (superseded(mine)) return;
  const driving = {};
  for (const r of rollouts.data) if (!TERMINAL.includes(r.status.state)) driving[`${r.env}/${r.flag}`] = r;
  const flags = perEnv.length ? perEnv[0].data : [];
  const stateIn = (env, key) => perEnv[envs.indexOf(env)].data.find(f => f.key === key);
  const rows = flags.map(f => h('tr', {},
    h('td', {}, h('code', {}, f.key), f.description ? h('div', { class: 'muted' }, f.description) : null),
    h('td', {}, (f.variants || []).map(v => v.name).join(', ')),
    envs.map(env => {
      const x = stateIn(env, f.key);
      if (!x) return h('td', { class: 'muted' }, '—');
      const r = driving[`${env}/${f.key}`];
      return h('td', { class: env === currentEnv() ? 'current' : null },
        h('div', { class: x.enabled ? 'good' : 'bad' }, x.enabled ? '● on' : '■ off (kill switch)'),
        h('div', {}, h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { 'data-w': x.ramp.percent })), `${x.ramp.percent}% ${x.ramp.ramped}, else ${x.ramp.base}`),
        (x.overrides || []).length ? h('div', { class: 'muted' }, `${x.overrides.length} override${x.overrides.length > 1 ? 's' : ''}`) : null,
        r ? h('div', {}, 'driven by ', h('a', { href: `#/rollouts/${encodeURIComponent(r.id)}` }, `${r.plan} (${STATE_MARK[r.status.state] || r.status.state})`)) : null);
    })));
  put(main,
    h('h1', {}, `Flags (${flags.length})`),
    h('table', {}, h('thead', {}, h('tr', {}, ['Flag', 'Variants', ...envs].map(t => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows)));
  fillBars(main);
}

// Bar widths are set from script (the page's policy allows no inline style attribute).
function fillBars(root) {
  root.querySelectorAll('[data-w]').forEach(el => { el.style.width = `${Math.min(100, Number(el.dataset.w))}%`; });
}

async function rolloutsPage(main, mine, switching) {
  const env = currentEnv();
  const [list, { envs }] = await Promise.all([api('/api/v1/rollouts'), switching]);
  if (superseded(mine)) return;
  const rollouts = list.data.filter(r => !env || r.env === env);
  const several = envs.length > 1;
  const active = rollouts.filter(r => !TERMINAL.includes(r.status.state));
  const ended = rollouts.filter(r => TERMINAL.includes(r.status.state));
  const table = list => h('table', {},
    h('thead', {}, h('tr', {}, ['Rollout', 'Plan', several ? 'Environment' : null, 'Flag', 'State', 'Phase', 'Percent', 'Started'].filter(Boolean).map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.map(r => h('tr', {},
      h('td', {}, h('a', { href: `#/rollouts/${encodeURIComponent(r.id)}` }, r.id)),
      h('td', {}, r.plan), several ? h('td', {}, r.env) : null, h('td', {}, h('code', {}, r.flag)),
      h('td', { class: `status ${stateClass(r.status.state)}` }, STATE_MARK[r.status.state] || r.status.state, r.waiting_for ? h('div', { class: 'muted' }, `waiting for ${r.waiting_for}`) : null),
      h('td', {}, `${r.phase} of ${r.phases}`),
      h('td', {}, h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { 'data-w': r.percent })), `${r.percent}%`),
      h('td', {}, r.created_at.replace('T', ' ').slice(0, 19))))));
  put(main, 
    h('h1', {}, env ? `Rollouts in ${env}` : 'Rollouts'),
    h('h2', {}, `Active (${active.length})`), active.length ? table(active) : h('p', { class: 'muted' }, 'None running.'),
    h('h2', {}, `Ended (${ended.length})`), ended.length ? table(ended) : h('p', { class: 'muted' }, 'None yet.'));
  fillBars(main);
}

function stateClass(state) {
  return { running: 'good', completed: 'good', baking: 'good', paused: 'warn', pending: 'warn' }[state] || 'bad';
}

// The buttons a person may press now, each asking for a reason before it is sent.
function commands(r) {
  if (!session.can_operate) return [];
  const out = [];
  // What waits for a person whether or not the rollout has ended: an action that failed for good or was
  // cut off, notifications given up.
  if ((r.pending || []).some(p => p.state === 'failed' || p.state === 'unknown')) {
    out.push(['settle', 'Retry the action', '', { pending: 'retry' }]);
    out.push(['settle', 'Accept it as it is', '', { pending: 'failed' }]);
  }
  const undelivered = (r.undelivered || []).length;
  if (undelivered) out.push(['redeliver', `Send ${undelivered} undelivered notification${undelivered > 1 ? 's' : ''} again`, '']);
  if (TERMINAL.includes(r.status.state)) return out;
  const st = r.status.state;
  if (st === 'running' || st === 'baking') out.push(['pause', 'Pause', '']);
  if (st === 'paused') out.push(['resume', 'Resume', 'primary']);
  if (st === 'running') out.push(['promote', 'Promote now', '']);
  for (const item of r.approvals_needed || []) {
    if (!(r.approvals_signed || []).includes(item)) out.push(['approve', `Approve ${item}`, '', { item }]);
  }
  out.push(['rollback', 'Roll back', 'danger']);
  return out;
}

function ask(r, command, label, extra) {
  const reason = h('textarea', { id: 'reason', name: 'reason', 'aria-required': 'true' });
  const error = h('p', { class: 'bad', role: 'alert' });
  const dialog = h('dialog', { 'aria-labelledby': 'ask-title' });
  const form = h('form', { onsubmit: async e => {
    e.preventDefault();
    if (!reason.value.trim()) { error.textContent = 'A reason is required: it goes to the audit log.'; return; }
    try {
      const body = { reason: reason.value.trim(), ...(extra || {}) };
      await api(`/api/v1/rollouts/${encodeURIComponent(r.id)}/${command}`, { method: 'POST', body });
      dialog.close();
      dialog.remove();
      notice(`${label}: done.`);
      refresh();
    } catch (err) {
      error.textContent = `Refused: ${err.message}`;
    }
  } },
  h('h2', { id: 'ask-title' }, `${label} — ${r.id}`),
  h('label', { for: 'reason' }, 'Why? (kept in the audit log under your name)'), reason, error,
  h('div', { class: 'actions' },
    h('button', { type: 'submit', class: command === 'rollback' ? 'danger' : 'primary' }, label),
    h('button', { type: 'button', onclick: () => { dialog.close(); dialog.remove(); } }, 'Cancel')));
  dialog.append(form);
  // However it closes (Escape included), it leaves nothing behind.
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

async function rolloutPage(main, id, mine) {
  const [one, decisions, audit] = await Promise.all([
    api(`/api/v1/rollouts/${encodeURIComponent(id)}`),
    api(`/api/v1/rollouts/${encodeURIComponent(id)}/decisions?limit=5000`),
    api(`/api/v1/audit?entity=${encodeURIComponent(`rollout:${id}`)}&limit=500`),
  ]);
  if (superseded(mine)) return;
  const r = one.data;
  const ds = decisions.data;
  const start = r.history.length ? r.history[0].at : Date.now();
  const ended = TERMINAL.includes(r.status.state);
  const end = ended ? r.history[r.history.length - 1].at : Date.now();

  const buttons = commands(r).map(([cmd, label, cls, extra]) =>
    h('button', { type: 'button', class: cls || null, onclick: () => ask(r, cmd, label, extra) }, label));

  const holdLeft = h('span', { id: 'hold-left' });
  const phases = h('ol', { class: 'phases', 'aria-label': 'Phases' }, r.phase_percents.map((p, i) => {
    const n = i + 1;
    const done = ended ? r.status.state === 'completed' || n < r.phase : n < r.phase;
    const now = !ended && n === r.phase;
    const stopped = ended && !done && n === r.phase;
    const mark = done ? '✔ done' : now ? '▶ now' : stopped ? (r.status.state === 'aborted' ? '■ aborted here' : '✖ rolled back here') : '○ not reached';
    return h('li', { class: done ? 'done' : now ? 'now' : stopped ? 'stopped' : '' },
      h('div', {}, ended || now || done ? mark : '○ next'),
      h('strong', {}, `Phase ${n}: ${p}%`),
      now && r.hold_ms ? h('div', {}, holdLeft) : null);
  }));
  const tickHold = () => {
    if (!r.hold_ms) return;
    const left = r.phase_started_ms + r.hold_ms - Date.now();
    holdLeft.textContent = left > 0 ? `hold: ${span(left)} left` : 'hold over';
  };
  tickHold();
  clearInterval(clockTimer);
  clockTimer = setInterval(tickHold, 1000);

  // The flag's traffic split over time: the percentage each transition left.
  const split = r.history.map(e => ({ t: e.at, v: e.percent }));
  const byCheck = new Map();
  for (const d of ds) {
    const key = `${d.kind}:${d.check}`;
    if (!byCheck.has(key)) byCheck.set(key, []);
    byCheck.get(key).push(d);
  }
  const charts = [...byCheck.entries()].map(([key, list]) => {
    const last = list[list.length - 1];
    // The server says where the threshold's line is (`line`) and what kind of threshold it is (`rule`).
    const comparison = !!(last.rule && last.rule.compared);
    // A comparison's interval of canary − reference − margin, narrowing as samples come in: within the
    // margin once it is all below 0, worse than the margin allows once it is all above.
    const band = list.filter(d => d.interval).map(d => ({ t: d.at, lo: d.interval[0], hi: d.interval[1] }));
    return h('section', { 'aria-label': `${last.kind} ${last.check}` },
      h('h3', {}, `${last.kind} ${last.check} `, h('code', {}, last.threshold)),
      h('p', {}, 'Last: ', h('strong', {}, num(last.value)), ' — ', verdictText(last), last.note ? h('span', { class: 'muted' }, ` (${last.note})`) : null),
      last.interval ? h('p', { class: 'muted' }, `Interval of canary − reference − margin: ${num(last.interval[0])} to ${num(last.interval[1])} (shaded)`) : null,
      chart(`${key} over time against ${last.threshold}`, list.map(d => ({ t: d.at, v: d.value, mark: verdict(d) })),
        { from: start, to: end, threshold: last.line ?? null, thresholdLabel: comparison ? 'margin (0)' : `threshold ${last.threshold}`, keepLow: comparison,
          band: band.length > 1 ? band : null, extra: band.flatMap(b => [b.lo, b.hi]) }));
  });

  let lastOutcome = {};
  const turning = ds.filter(d => {
    const key = `${d.kind}:${d.check}`;
    const changed = lastOutcome[key] !== d.outcome;
    lastOutcome[key] = d.outcome;
    return changed || (d.action && d.action !== 'none');
  }).reverse().slice(0, 200);

  const actions = audit.data.filter(a => a.action === 'rollout.action' || a.action === 'rollout.notification');
  const signedBy = r.approvals_signed_by || {};
  put(main, 
    h('p', {}, h('a', { href: '#/rollouts' }, '← Rollouts')),
    h('h1', {}, `${r.plan} `, h('code', {}, r.id)),
    h('p', { class: `status ${stateClass(r.status.state)}`, id: 'state' }, STATE_MARK[r.status.state] || r.status.state,
      r.status.reason ? h('span', {}, ` — ${r.status.reason}`) : null),
    r.waiting_for ? h('p', { class: 'warn' }, `Waiting for ${r.waiting_for}`) : null,
    r.status.decide_by ? h('p', { class: 'warn' }, `Decide by ${when(r.status.decide_by)}; then the plan's default (${r.status.default || 'rollback'}) applies.`) : null,
    h('p', {}, `Flag `, h('code', {}, r.flag), ` in `, h('strong', {}, r.env), ended ? ` — ended in phase ${r.phase} of ${r.phases} (${r.percent}%), ${when(end)}, after ${span(end - start)}.` : ` at ${r.percent}%, phase ${r.phase} of ${r.phases}.`, ` Started ${when(start)} by ${r.created_by}.`),
    buttons.length ? h('div', { class: 'actions', role: 'group', 'aria-label': 'Decisions' }, buttons) : null,
    h('h2', {}, 'Phases'), phases,
    h('h2', {}, 'Approvals'),
    (r.approvals_needed || []).length
      ? h('ul', {}, r.approvals_needed.map(i => h('li', {}, (r.approvals_signed || []).includes(i) ? `✔ ${i} — signed by ${signedBy[i] || '?'}` : `○ ${i} — not signed`)))
      : h('p', { class: 'muted' }, 'This phase needs none.'),
    h('h2', {}, 'Traffic split'),
    chart('the flag\'s percentage over time', split.concat([{ t: end, v: r.percent }]), { from: start, to: end, step: true, range: [0, 100] }),
    h('h2', {}, 'Gates and triggers'),
    (r.blind_triggers || []).length ? h('p', { class: 'warn', id: 'blind' }, `Blind: ${r.blind_triggers.join(', ')} — no conclusive value for a while, so ${r.blind_triggers.length > 1 ? 'they' : 'it'} cannot fire until there is one.`) : null,
    Object.keys(r.baselines || {}).length ? h('p', { id: 'baselines' }, 'Baselines captured: ',
      Object.entries(r.baselines).flatMap(([key, v], i) => [i ? ', ' : '', h('code', {}, baselineName(key)), ` ${num(v)}`])) : null,
    charts.length ? h('div', { class: 'grid' }, charts) : h('p', { class: 'muted' }, 'No decisions yet.'),
    h('p', { class: 'legend' }, 'Marks: ● pass (gate) or quiet (trigger) · ✖ fail or fired · ○ no value. Dashed: the threshold (for a comparison, the margin at 0). Shaded: a comparison\'s confidence interval.'),
    h('h2', {}, 'Why: the decisions that changed something'),
    turning.length ? h('table', {},
      h('thead', {}, h('tr', {}, ['Time', 'Check', 'Value', 'Threshold', 'Verdict', 'What the tick did'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, turning.map(d => h('tr', {},
        h('td', {}, when(d.at)), h('td', {}, `${d.kind} ${d.check}`), h('td', {}, num(d.value), d.note ? h('div', { class: 'muted' }, d.note) : null),
        h('td', {}, h('code', {}, d.threshold)), h('td', { class: ['fail', 'fired'].includes(verdict(d)) ? 'bad' : '' }, verdictText(d)),
        h('td', {}, (d.action || '').replaceAll(',', ', '))))))
      : h('p', { class: 'muted' }, 'None yet.'),
    h('h2', {}, 'History'),
    h('table', {}, h('thead', {}, h('tr', {}, ['Time', 'Event', 'Phase', 'Percent', 'Why'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, r.history.slice().reverse().map(e => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.kind.replaceAll('_', ' ')), h('td', {}, String(e.phase + 1)), h('td', {}, `${e.percent}%`), h('td', {}, e.reason))))),
    h('h2', {}, 'Actions and notifications'),
    (r.pending || []).length ? h('ul', {}, r.pending.map(p => h('li', { class: p.state === 'failed' || p.state === 'unknown' ? 'bad' : '' },
      `${p.state.replace('_', ' ')}: ${p.what}`, p.error ? h('div', { class: 'muted' }, p.error) : null))) : null,
    (r.undelivered || []).length ? h('div', { id: 'undelivered' },
      h('h3', {}, 'Notifications given up'),
      h('p', { class: 'warn' }, 'Nobody heard these: each failed for good (a permanent error) or too many times. Fix the receiver, then send them again.'),
      h('ul', {}, r.undelivered.map(u => h('li', {}, `${u.destination} — ${u.id}, ${u.attempts} attempt${u.attempts > 1 ? 's' : ''}: `, h('code', {}, u.error || ''))))) : null,
    actions.length ? h('table', {},
      h('thead', {}, h('tr', {}, ['Time', 'What', 'Result', 'Detail'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, actions.map(a => {
        const d = a.after || {};
        const what = a.action === 'rollout.action' ? `${d.purpose || ''} ${d.name || ''}` : `notify ${d.destination || ''}`;
        return h('tr', {}, h('td', {}, a.at.replace('T', ' ').slice(0, 19)), h('td', {}, what), h('td', { class: d.ok ? 'good' : 'bad' }, d.ok ? '✔ ok' : '✖ failed'), h('td', {}, h('code', {}, String(d.detail || d.error || '').slice(0, 300))));
      }))) : h('p', { class: 'muted' }, 'None yet.'));
}

// `gate:p99@1` → `gate p99 (phase 2)`: the key the engine keeps a captured baseline under.
function baselineName(key) {
  const [kind, rest] = key.split(/:(.*)/s);
  const at = rest.lastIndexOf('@');
  return at < 0 ? `${kind} ${rest}` : `${kind} ${rest.slice(0, at)} (phase ${Number(rest.slice(at + 1)) + 1})`;
}

async function auditPage(main, query, mine) {
  const params = new URLSearchParams(query);
  const field = (name, label, type = 'text') => h('label', { for: `f-${name}` }, label, h('input', { id: `f-${name}`, name, type, value: params.get(name) || '' }));
  const form = h('form', { class: 'filters', role: 'search', onsubmit: e => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.querySelectorAll('input')) if (el.value) q.set(el.name, el.value);
    location.hash = `#/audit?${q}`;
  } },
  field('actor', 'Actor'), field('entity', 'Entity (flag:KEY, rollout:ID)'), field('action', 'Action (prefix)'), field('since', 'Since', 'datetime-local'),
  h('button', { type: 'submit' }, 'Filter'));
  const q = new URLSearchParams();
  for (const k of ['actor', 'entity', 'action']) if (params.get(k)) q.set(k, params.get(k));
  if (params.get('since')) q.set('since', new Date(params.get('since')).toISOString());
  q.set('limit', '300');
  const [events, chain] = await Promise.all([api(`/api/v1/audit?${q}`), api('/api/v1/audit/verify').catch(e => ({ error: e.message }))]);
  if (superseded(mine)) return;
  const v = chain.data || {};
  const chainText = chain.error ? `○ chain not checked: ${chain.error}`
    : v.status === 'intact' ? `✔ chain intact: ${v.events} events, head ${v.head.slice(0, 16)}…`
      : v.status === 'broken' ? `✖ chain broken at event ${v.seq}: ${v.problem}`
        : `✖ chain not intact: ${v.status}`;
  put(main, 
    h('h1', {}, 'Audit log'),
    h('p', { class: chainText.startsWith('✔') ? 'good' : 'bad', id: 'chain' }, chainText),
    form,
    h('table', {}, h('thead', {}, h('tr', {}, ['#', 'Time', 'Actor', 'Action', 'Entity', 'Reason'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, events.data.map(a => h('tr', {},
        h('td', {}, String(a.seq)), h('td', {}, a.at.replace('T', ' ').slice(0, 19)), h('td', {}, a.actor), h('td', {}, a.action),
        h('td', {}, a.entity.startsWith('rollout:') ? h('a', { href: `#/rollouts/${encodeURIComponent(a.entity.slice(8))}` }, a.entity) : a.entity),
        h('td', {}, a.reason || gist(a)))))));
}

// ---- routing, live updates ---------------------------------------------------------------------------

// The render in flight, if any: a live refresh waits for it rather than superseding it, so a page whose
// answers take longer than the refresh interval still paints.
let painting = null;
let paintingSince = 0;

function render() {
  const p = draw();
  painting = p;
  paintingSince = Date.now();
  p.finally(() => { if (painting === p) painting = null; }).catch(() => {});
  return p;
}

async function draw() {
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const mine = ++renders;
  if (!session) {
    try { session = await api('/ui/session'); } catch { session = null; }
    if (superseded(mine)) return;
  }
  if (!session) {
    nav.hidden = true;
    who.replaceChildren();
    if (stream) { stream.close(); stream = null; }
    put(main, loginPage());
    return;
  }
  nav.hidden = false;
  const live = h('span', { class: 'live', id: 'live' }, stream && stream.readyState === 1 ? '● live' : '○ connecting');
  // Asked beside the page's own requests, not before them: a page left before its answers came must
  // still have sent them (and its late answers must still not paint).
  const switching = envSwitcher().catch(() => ({ envs: [], select: null }));
  switching.then(sw => { if (!superseded(mine) && sw.select) who.prepend(sw.select); });
  put(who, live, h('span', {}, `${session.name} (${session.role})`),
    h('button', { type: 'button', onclick: async () => { await api('/ui/logout', { method: 'POST' }).catch(() => {}); session = null; render(); } }, 'Log out'));
  follow();
  const hash = location.hash || '#/rollouts';
  const [path, query] = hash.slice(1).split('?');
  for (const a of nav.querySelectorAll('a')) {
    if (path.startsWith(a.getAttribute('href').slice(1))) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (path.startsWith('/rollouts/')) await rolloutPage(main, decodeURIComponent(path.slice(10)), mine);
    else if (path.startsWith('/flags')) await flagsPage(main, mine, (await switching).envs);
    else if (path.startsWith('/audit')) await auditPage(main, query || '', mine);
    else await rolloutsPage(main, mine, switching);
    if (superseded(mine)) return;
    document.title = `Sluice — ${main.querySelector('h1')?.textContent || ''}`;
  } catch (err) {
    if (superseded(mine)) return;
    put(main, h('h1', {}, 'Could not load this page'), h('p', { class: 'bad' }, err.message));
  }
}

// Re-renders the page at most every 300 ms while changes flow, and always within 300 ms of the first
// (a debounce would starve: twenty rollouts ticking on their own timers never leave 300 ms of quiet),
// without reloading and without losing an open dialog.
function refresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    // A render whose answers have not come in 10 s (a connection stalled by a laptop's sleep) no longer
    // holds the page: a new one starts, and supersedes it.
    const inFlight = painting && Date.now() - paintingSince < 10000;
    if (document.querySelector('dialog[open]') || inFlight) { refresh(); return; }
    render();
  }, 300);
}

// Whether a change matters to the page on screen: a rollout page follows its own rollout (and flag
// edits); the other pages follow everything.
function concerns(event) {
  const path = (location.hash || '').slice(1).split('?')[0];
  if (!path.startsWith('/rollouts/') || event.type !== 'rollout') return true;
  try {
    const change = JSON.parse(event.data);
    return !change.rollout || change.rollout.id === decodeURIComponent(path.slice(10));
  } catch {
    return true;
  }
}

function follow() {
  if (stream) return;
  stream = new EventSource('/api/v1/stream');
  const mark = text => { const el = document.getElementById('live'); if (el) el.textContent = text; };
  stream.onopen = () => mark('● live');
  stream.onerror = () => mark('○ reconnecting');
  const changed = e => { if (concerns(e)) refresh(); };
  stream.addEventListener('change', changed);
  stream.addEventListener('rollout', changed);
}

window.addEventListener('hashchange', () => { render(); document.getElementById('main').focus(); });
window.addEventListener('DOMContentLoaded', render);
