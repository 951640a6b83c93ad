// osprey-console page: plain DOM, no framework, nothing loaded from elsewhere.
// Every value from the server is put into the page as text (never as HTML).
'use strict';

const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];
const state = { user: null, role: null, csrf: null, canAct: false, live: null, view: null };

// ---------- helpers ----------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const $ = (sel) => document.querySelector(sel);
const main = () => $('#main');

function svgEl(tag, attrs) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const opts = { credentials: 'same-origin', headers: {}, ...options };
  if (opts.body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(opts.body);
  }
  if (opts.method && opts.method !== 'GET' && state.csrf) opts.headers['X-CSRF-Token'] = state.csrf;
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (res.status === 401 && !path.endsWith('/login')) { showLogin(); throw new HttpError(401, 'logged out'); }
  if (!res.ok) throw new HttpError(res.status, (data && data.error) || res.statusText);
  return data;
}

function nanosToDate(n) { return new Date(Number(n) / 1e6); }
function fmtTime(t) {
  const d = typeof t === 'string' ? new Date(t) : nanosToDate(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleString(undefined, { hour12: false });
}
function ago(nanos) {
  const s = Math.max(0, Math.round((Date.now() - Number(nanos) / 1e6) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
function sev(s) { return el('span', { class: 'sev sev-' + s }, s); }
function sum(obj) { return Object.values(obj || {}).reduce((a, b) => a + Number(b || 0), 0); }
function ageToMs(a) {
  const m = /^(\d+)([smhd])$/.exec(a || '');
  if (!m) return null;
  return Number(m[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[m[2]];
}
function table(headers, rows, attrs) {
  return el('table', attrs || {}, el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, rows));
}
function resultLine(node, ok, text) {
  node.className = 'result ' + (ok ? 'ok' : 'bad');
  node.textContent = text;
}

// ---------- confirm dialog ----------
function confirmAction(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const modal = $('#modal');
    $('#modal-title').textContent = title;
    $('#modal-text').textContent = text;
    $('#modal-confirm').textContent = confirmLabel || 'Confirm';
    modal.hidden = false;
    const done = (answer) => {
      modal.hidden = true;
      $('#modal-confirm').removeEventListener('click', yes);
      $('#modal-cancel').removeEventListener('click', no);
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    $('#modal-confirm').addEventListener('click', yes);
    $('#modal-cancel').addEventListener('click', no);
    $('#modal-cancel').focus();
  });
}

// ---------- charts (SVG) ----------
function stackedBars(buckets, bucketNanos) {
  const W = 900, H = 180, pad = 24;
  const svg = svgEl('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  const max = Math.max(1, ...buckets.map((b) => b.counts.reduce((a, c) => a + c, 0)));
  const bw = (W - pad) / Math.max(1, buckets.length);
  svg.append(svgEl('line', { class: 'axis', x1: pad, y1: H - pad, x2: W, y2: H - pad }));
  const label = svgEl('text', { x: 2, y: 12 }); label.textContent = String(max); svg.append(label);
  buckets.forEach((b, i) => {
    let y = H - pad;
    SEVERITIES.forEach((s, si) => {
      const n = b.counts[si];
      if (!n) return;
      const h = (n / max) * (H - pad - 14);
      y -= h;
      const r = svgEl('rect', { class: 's-' + s, x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: h });
      const t = svgEl('title', {}); t.textContent = `${fmtTime(b.start)}: ${n} ${s}`; r.append(t);
      svg.append(r);
    });
  });
  [0, Math.floor(buckets.length / 2), buckets.length - 1].forEach((i, n) => {
    if (!buckets[i]) return;
    const anchor = ['start', 'middle', 'end'][n];
    const x = n === 2 ? W : pad + i * bw + (n === 1 ? bw / 2 : 0);
    const t = svgEl('text', { x, y: H - 8, 'text-anchor': anchor });
    t.textContent = nanosToDate(buckets[i].start).toLocaleTimeString(undefined, { hour12: false, hour: '2-digit', minute: '2-digit' });
    svg.append(t);
  });
  return svg;
}

function sparkline(values, cls) {
  const W = 160, H = 32;
  const svg = svgEl('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none' });
  if (values.length === 0) return svg;
  const max = Math.max(...values), min = Math.min(0, ...values);
  const span = max - min || 1;
  const pts = values.map((v, i) => {
    const x = values.length === 1 ? W / 2 : (i / (values.length - 1)) * W;
    const y = H - 2 - ((v - min) / span) * (H - 4);
    return x.toFixed(1) + ',' + y.toFixed(1);
  });
  svg.append(svgEl('polyline', { class: 'line ' + (cls || ''), points: pts.join(' ') }));
  const t = svgEl('title', {}); t.textContent = `last ${values[values.length - 1]}, max ${max}`; svg.append(t);
  return svg;
}

function legend() {
  return el('div', { class: 'legend' }, SEVERITIES.map((s) => el('span', {}, el('i', { class: 's-' + s }), s)));
}

// ---------- login ----------
function showLogin(message) {
  if (state.live) { state.live.close(); state.live = null; }
  state.user = null; state.csrf = null;
  $('#top').hidden = true;
  const error = el('p', { id: 'login-error', class: 'error' }, message || '');
  const user = el('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true });
  const pass = el('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        const s = await api('/api/v1/login', { method: 'POST', body: { username: user.value, password: pass.value } });
        await start(s);
      } catch (err) {
        error.textContent = err.message;
        pass.value = '';
      }
    },
  }, el('label', {}, 'User', user), el('label', {}, 'Password', pass),
  el('button', { id: 'login-submit', class: 'primary', type: 'submit' }, 'Log in'), error);
  main().replaceChildren(el('div', { class: 'login panel' }, el('h1', {}, 'Osprey console'), form));
  user.focus();
}

async function start(session) {
  state.user = session.user; state.role = session.role; state.csrf = session.csrf;
  state.canAct = session.can_act !== false && session.role === 'operator';
  $('#who').textContent = `${session.user} (${session.role})`;
  $('#top').hidden = false;
  openLive();
  if (!location.hash || location.hash === '#/login') location.hash = '#/overview';
  else route();
  refreshPendingCount();
}

$('#logout') && $('#logout').addEventListener('click', async () => {
  try { await api('/api/v1/logout', { method: 'POST' }); } catch (_) { /* logged out anyway */ }
  showLogin('Logged out.');
});

// ---------- live updates ----------
const liveHandlers = { finding: [], audit: [], heartbeat: [], resync: [] };
function onLive(kind, fn) { liveHandlers[kind].push(fn); }
function openLive() {
  if (state.live) state.live.close();
  const es = new EventSource('/api/v1/stream');
  state.live = es;
  es.onopen = () => $('#live').classList.add('on');
  es.onerror = () => $('#live').classList.remove('on');
  for (const kind of Object.keys(liveHandlers)) {
    es.addEventListener(kind, (e) => {
      let data = null;
      try { data = JSON.parse(e.data); } catch (_) { data = e.data; }
      for (const fn of liveHandlers[kind]) fn(data);
    });
  }
}
onLive('audit', (r) => { if (r.pending_id) refreshPendingCount(); });

async function refreshPendingCount() {
  try {
    const p = await api('/api/v1/approvals');
    $('#pending-count').textContent = p.items.length ? String(p.items.length) : '';
  } catch (_) { /* shown on the page itself */ }
}

// ---------- routing ----------
const views = {};
function route() {
  if (!state.user) return;
  const [name, ...rest] = location.hash.replace(/^#\//, '').split('?')[0].split('/');
  const view = views[name] ? name : 'overview';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.getAttribute('href') === '#/' + view || (view === 'finding' && a.getAttribute('href') === '#/findings'));
  state.view = view;
  for (const k of Object.keys(liveHandlers)) liveHandlers[k] = liveHandlers[k].filter((f) => f.global);
  main().replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  views[view](rest.map(decodeURIComponent)).catch((err) => {
    if (err.status !== 401) main().replaceChildren(el('p', { class: 'error' }, err.message));
  });
}
window.addEventListener('hashchange', route);
function viewLive(kind, fn) { liveHandlers[kind].push(fn); }
for (const k of Object.keys(liveHandlers)) liveHandlers[k].forEach((f) => { f.global = true; });

// ---------- overview ----------
// Live updates re-render the view's content; the handler is registered once per visit (a
// handler that registered itself again on every re-render would double with each event).
views.overview = async () => {
  await renderOverview();
  viewLive('finding', () => { if (state.view === 'overview') renderOverview().catch(() => {}); });
};

async function renderOverview() {
  const o = await api('/api/v1/overview?window=24h&buckets=48');
  if (state.view !== 'overview') return;
  const f = o.findings;
  const total = f.totals.reduce((a, b) => a + b, 0);
  const card = (n, l, cls) => el('div', { class: 'card' }, el('div', { class: 'n ' + (cls || '') }, String(n)), el('div', { class: 'l' }, l));
  const hostRows = o.hosts.items.map((h) => el('tr', {},
    el('td', {}, h.host), el('td', { class: 'status-' + h.status }, h.status), el('td', {}, ago(h.last_seen)),
    el('td', {}, (h.heartbeat.events_per_sec || 0).toFixed(1)), el('td', {}, String(sum(h.heartbeat.drops))),
    el('td', {}, String(h.heartbeat.spool_depth || 0)), el('td', {}, String(h.findings_24h))));
  main().replaceChildren(
    el('h1', {}, 'Overview'),
    el('div', { class: 'cards' },
      card(`${o.hosts.total - o.hosts.silent}/${o.hosts.total}`, 'hosts reporting', o.hosts.silent ? 'status-silent' : 'status-ok'),
      card(total, 'findings (24 h)'),
      card(f.totals[4] + f.totals[3], 'high + critical (24 h)'),
      card(o.drops, 'kernel drops', o.drops ? 'status-silent' : ''),
      card(o.spool_depth, 'spooled findings'),
      el('a', { href: '#/approvals', class: 'card' }, el('div', { class: 'n' }, String(o.pending_approvals)), el('div', { class: 'l' }, 'pending approvals'))),
    el('div', { class: 'panel' }, el('h2', {}, 'Findings per severity, last 24 h'), legend(), stackedBars(f.buckets, f.bucket_nanos)),
    el('div', { class: 'grid2' },
      el('div', { class: 'panel' }, el('h2', {}, 'Top rules'), table(['rule', 'title', 'findings'],
        f.top_rules.map((r) => el('tr', {}, el('td', { class: 'mono' }, el('a', { href: '#/findings?rule=' + encodeURIComponent(r.name) }, r.name)), el('td', {}, r.title || ''), el('td', {}, String(r.count)))))),
      el('div', { class: 'panel' }, el('h2', {}, 'Top hosts'), table(['host', 'findings'],
        f.top_hosts.map((r) => el('tr', {}, el('td', {}, el('a', { href: '#/findings?host=' + encodeURIComponent(r.name) }, r.name)), el('td', {}, String(r.count))))))),
    el('div', { class: 'panel' }, el('h2', {}, 'Host health'),
      table(['host', 'status', 'last heartbeat', 'events/s', 'drops', 'spool', 'findings 24 h'], hostRows, { id: 'health' })));
}

// ---------- findings ----------
function hashParams() {
  const q = location.hash.split('?')[1] || '';
  return new URLSearchParams(q);
}

function findingRow(f, fresh) {
  const tr = el('tr', { class: 'clickable' + (fresh ? ' fresh' : ''), 'data-id': f.id, onclick: () => { location.hash = '#/finding/' + encodeURIComponent(f.id); } },
    el('td', { class: 'mono' }, fmtTime(f.time)), el('td', {}, sev(f.severity)), el('td', {}, f.host),
    el('td', { class: 'mono' }, f.rule_id), el('td', {}, f.title),
    el('td', { class: 'mono' }, `${f.process.pid} ${f.process.exe}`));
  return tr;
}

function matches(f, filter) {
  if (filter.host && f.host !== filter.host) return false;
  if (filter.severity && f.severity !== filter.severity) return false;
  if (filter.rule && !f.rule_id.includes(filter.rule)) return false;
  if (filter.q) {
    const hay = [f.title, f.rule_id, f.process.exe, (f.process.argv || []).join(' '), f.host].join('\n').toLowerCase();
    if (!hay.includes(filter.q.toLowerCase())) return false;
  }
  const since = ageToMs(filter.since);
  if (since !== null && new Date(f.time).getTime() < Date.now() - since) return false;
  return true;
}

views.findings = async () => {
  const p = hashParams();
  const filter = { host: p.get('host') || '', severity: p.get('severity') || '', rule: p.get('rule') || '', q: p.get('q') || '', since: p.get('since') || '24h' };
  const hosts = (await api('/api/v1/hosts')).items.map((h) => h.host);
  const input = (id, name, value, attrs) => el('input', { id, name, value, ...(attrs || {}) });
  const form = el('form', { class: 'filters', id: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) q.set(k, v);
    location.hash = '#/findings?' + q.toString();
  } },
  el('label', {}, 'Host', el('select', { id: 'filter-host', name: 'host' }, el('option', { value: '' }, 'all'),
    hosts.map((h) => el('option', { value: h, selected: h === filter.host }, h)))),
  el('label', {}, 'Severity', el('select', { id: 'filter-severity', name: 'severity' }, el('option', { value: '' }, 'all'),
    SEVERITIES.map((s) => el('option', { value: s, selected: s === filter.severity }, s)))),
  el('label', {}, 'Rule', input('filter-rule', 'rule', filter.rule, { placeholder: 'rule id contains' })),
  el('label', {}, 'Text', input('filter-q', 'q', filter.q, { placeholder: 'title, exe, command line' })),
  el('label', {}, 'Since', el('select', { id: 'filter-since', name: 'since' },
    ['15m', '1h', '24h', '7d', '30d'].map((s) => el('option', { value: s, selected: s === filter.since }, s)))),
  el('button', { id: 'filter-apply', type: 'submit', class: 'primary' }, 'Filter'));
  const tbody = el('tbody', {});
  const more = el('button', { id: 'more', type: 'button', hidden: true }, 'Older');
  const query = new URLSearchParams({ limit: '100' });
  for (const [k, v] of Object.entries(filter)) if (v) query.set(k, v);
  let next = null;
  const load = async () => {
    if (next) query.set('before', next);
    const page = await api('/api/v1/findings?' + query.toString());
    for (const f of page.items) tbody.append(findingRow(f));
    next = page.next;
    more.hidden = !next;
  };
  more.addEventListener('click', load);
  await load();
  const count = el('span', { class: 'muted', id: 'findings-count' });
  const recount = () => { count.textContent = `${tbody.children.length} shown`; };
  recount();
  main().replaceChildren(el('h1', {}, 'Findings ', count), form,
    el('div', { class: 'panel' }, el('table', { id: 'findings' }, el('thead', {}, el('tr', {},
      ['time', 'severity', 'host', 'rule', 'title', 'process'].map((h) => el('th', {}, h)))), tbody), more));
  viewLive('finding', (f) => {
    if (state.view !== 'findings' || !matches(f, filter)) return;
    if (tbody.querySelector(`tr[data-id="${CSS.escape(f.id)}"]`)) return;
    tbody.prepend(findingRow(f, true));
    recount();
  });
  viewLive('resync', () => { if (state.view === 'findings') route(); });
};

// ---------- finding detail ----------
function ancestryTree(f) {
  // Root first, down to the finding's process.
  const chain = [...(f.ancestry || [])].reverse();
  const node = (p, self) => {
    const cmd = (p.argv || []).join(' ');
    // Ancestors' command lines can be huge (environment dumps): shortened, full on hover.
    const shown = !self && cmd.length > 160 ? cmd.slice(0, 160) + '…' : cmd;
    return el('span', { class: 'node' + (self ? ' self' : ''), title: `${p.exec_id}\n${p.exe}\n${cmd}` },
      el('b', {}, p.name), ' ', el('span', { class: 'mono muted' }, `pid ${p.pid}`), ' ', el('span', { class: 'mono' }, shown));
  };
  let leaf = el('li', {}, node(f.process, true));
  for (let i = chain.length - 1; i >= 0; i--) leaf = el('li', {}, node(chain[i], false), el('ul', {}, leaf));
  return el('ul', { class: 'tree', id: 'ancestry' }, leaf);
}

function eventText(e) {
  switch (e.kind) {
    case 'connect': return `${e.protocol} ${e.destination_ip}:${e.destination_port} → ${e.outcome}`;
    case 'exit': return e.signal ? `killed by signal ${e.signal}` : `exit code ${e.exit_code}`;
    case 'exec': return (e.process.argv || []).join(' ');
    case 'memory_sample': return `${Math.round(e.rss_bytes / 1048576)} MiB resident`;
    default: return e.kind;
  }
}

function auditRows(items) {
  return items.map((r) => el('tr', { 'data-seq': r.seq },
    el('td', { class: 'mono' }, fmtTime(r.time)), el('td', {}, r.source), el('td', {}, r.host || '—'),
    el('td', {}, r.action), el('td', { class: 'mono' }, r.target || ''),
    el('td', { class: 'decision-' + r.decision }, r.decision), el('td', {}, r.reason), el('td', {}, r.result),
    el('td', {}, (r.actor && (r.actor.name || (r.actor.key_id && r.actor.key_id.slice(0, 10) + '…'))) || '')));
}
const AUDIT_HEADERS = ['time', 'source', 'host', 'action', 'target', 'decision', 'reason', 'result', 'by'];

async function sendAction(host, action, findingId, describe, out) {
  if (!(await confirmAction('Confirm ' + action.kind, describe, action.kind[0].toUpperCase() + action.kind.slice(1)))) {
    resultLine(out, false, 'Cancelled.');
    return null;
  }
  resultLine(out, true, 'Sending…');
  try {
    const r = await api('/api/v1/actions', { method: 'POST', body: { host, action, finding_id: findingId || undefined } });
    resultLine(out, r.result.status === 'ok', `${r.result.status}: ${r.result.reason}`);
    return r;
  } catch (err) {
    resultLine(out, false, err.message);
    return null;
  }
}

views.finding = async ([id]) => {
  const d = await api('/api/v1/findings/' + encodeURIComponent(id));
  const f = d.finding, p = f.process;
  const connect = (f.triggers || []).find((t) => t.kind === 'connect');
  const out = el('div', { id: 'action-result', class: 'result' });
  const ttl = el('input', { id: 'act-ttl', type: 'number', min: '0', value: '3600', size: 6 });
  const actionsTbody = el('tbody', {}, auditRows(d.actions));
  const procAction = (kind, label, extra) => el('button', {
    id: 'act-' + kind, type: 'button', class: kind === 'kill' ? 'danger' : '', disabled: !state.canAct,
    onclick: () => sendAction(f.host, { kind, target: p.exec_id, ...(extra ? extra() : {}) }, f.id,
      `${label} pid ${p.pid} (${p.exe}, ExecId ${p.exec_id}) on host ${f.host}?`, out),
  }, label);
  const bar = el('div', { class: 'actions-bar' },
    procAction('kill', 'Kill'), procAction('suspend', 'Suspend'), procAction('resume', 'Resume'),
    connect ? [el('label', {}, 'TTL (s, 0 = none)', ttl), el('button', {
      id: 'act-block', type: 'button', disabled: !state.canAct,
      onclick: () => {
        const t = Number(ttl.value);
        const cidr = connect.destination_ip.includes(':') ? connect.destination_ip + '/128' : connect.destination_ip + '/32';
        return sendAction(f.host, { kind: 'block', cidr, ttl_secs: t > 0 ? t : undefined }, f.id,
          `Block ${cidr} on host ${f.host}${t > 0 ? ' for ' + t + ' s' : ' until unblocked'}?`, out);
      },
    }, `Block ${connect.destination_ip}`)] : null);
  main().replaceChildren(
    el('p', {}, el('a', { href: '#/findings' }, '← Findings')),
    el('h1', { id: 'finding-title' }, sev(f.severity), ' ', f.title),
    el('div', { class: 'grid2' },
      el('div', { class: 'panel' }, el('h2', {}, 'Finding'), el('dl', { class: 'kv' },
        el('dt', {}, 'id'), el('dd', { class: 'mono' }, f.id),
        el('dt', {}, 'time'), el('dd', {}, fmtTime(f.time)),
        el('dt', {}, 'host'), el('dd', {}, f.host),
        el('dt', {}, 'rule'), el('dd', { class: 'mono' }, `${f.detector} / ${f.rule_id}`),
        f.author ? [el('dt', {}, 'author'), el('dd', {}, f.author)] : null,
        f.description ? [el('dt', {}, 'description'), el('dd', {}, f.description)] : null,
        el('dt', {}, 'tags'), el('dd', { class: 'tags' }, (f.tags || []).map((t) => el('span', {}, t))),
        el('dt', {}, 'recommends'), el('dd', {}, (f.recommended_actions || []).join(', ') || '—'))),
      el('div', { class: 'panel' }, el('h2', {}, 'Process'), el('dl', { class: 'kv', id: 'process' },
        el('dt', {}, 'executable'), el('dd', { class: 'mono' }, p.exe),
        el('dt', {}, 'pid / ppid'), el('dd', {}, `${p.pid} / ${p.ppid}`),
        el('dt', {}, 'ExecId'), el('dd', { class: 'mono' }, p.exec_id),
        el('dt', {}, 'user'), el('dd', {}, `${p.user || ''} uid ${p.uid} euid ${p.euid} gid ${p.gid}`),
        el('dt', {}, 'cwd'), el('dd', { class: 'mono' }, p.cwd || '—'),
        el('dt', {}, 'tty'), el('dd', {}, p.tty || 'none'),
        el('dt', {}, 'sha256'), el('dd', { class: 'mono', id: 'sha256' }, p.sha256 || 'not yet computed'),
        p.container_id ? [el('dt', {}, 'container'), el('dd', { class: 'mono' }, p.container_id)] : null,
        el('dt', {}, `argv (${p.argv_source}${p.argv_truncated ? ', truncated' : ''})`),
        el('dd', {}, el('ol', { class: 'argv', id: 'argv', start: '0' }, (p.argv || []).map((a) => el('li', {}, a))))))),
    el('div', { class: 'panel' }, el('h2', {}, 'Ancestry'), ancestryTree(f)),
    el('div', { class: 'panel' }, el('h2', {}, 'Act on this process'), bar, out,
      state.canAct ? null : el('p', { class: 'muted' }, 'Read-only: this user or console cannot act.')),
    el('div', { class: 'panel' }, el('h2', {}, `Events on ${p.exec_id}`),
      table(['time', 'kind', 'detail'], d.events.map((e) => el('tr', {}, el('td', { class: 'mono' }, fmtTime(e.time)), el('td', {}, e.kind), el('td', { class: 'mono' }, eventText(e)))), { id: 'events' })),
    el('div', { class: 'panel' }, el('h2', {}, 'Actions taken'),
      el('table', { id: 'finding-actions' }, el('thead', {}, el('tr', {}, AUDIT_HEADERS.map((h) => el('th', {}, h)))), actionsTbody)));
  viewLive('audit', (r) => {
    if (state.view !== 'finding') return;
    if (r.finding_id === f.id || r.target === p.exec_id) actionsTbody.append(...auditRows([r]));
  });
};

// ---------- hosts ----------
views.hosts = async () => {
  const hosts = (await api('/api/v1/hosts')).items;
  const rows = await Promise.all(hosts.map(async (h) => {
    const s = await api(`/api/v1/hosts/${encodeURIComponent(h.host)}/heartbeats?since=1h&max_points=120`);
    const col = (i) => s.points.map((pt) => Number(pt[i]));
    const drops = col(2);
    const dropDeltas = drops.map((v, i) => (i === 0 ? 0 : Math.max(0, v - drops[i - 1])));
    const hb = h.heartbeat;
    return el('tr', { 'data-host': h.host },
      el('td', {}, el('b', {}, h.host), el('div', { class: 'muted' }, `v${hb.version} · up ${Math.round((hb.uptime_secs || 0) / 60)} min`)),
      el('td', { class: 'status-' + h.status }, h.status, el('div', { class: 'muted' }, ago(h.last_seen))),
      el('td', {}, sparkline(col(1)), `${(hb.events_per_sec || 0).toFixed(1)}/s`),
      el('td', {}, sparkline(dropDeltas, 'bad'), `${sum(hb.drops)} total`),
      el('td', {}, sparkline(col(3), 'warn'), String(hb.spool_depth || 0)),
      el('td', {}, String(hb.process_table_size || 0)), el('td', {}, String(hb.active_blocks || 0)),
      el('td', {}, el('a', { href: '#/findings?host=' + encodeURIComponent(h.host) }, String(h.findings_24h))));
  }));
  main().replaceChildren(el('h1', {}, 'Hosts'),
    el('div', { class: 'panel' }, table(['host', 'status', 'events/s (1 h)', 'drops (1 h)', 'spool depth (1 h)', 'processes', 'blocks', 'findings 24 h'], rows, { id: 'hosts' })));
};

// ---------- audit ----------
views.audit = async () => {
  const p = hashParams();
  const filter = { host: p.get('host') || '', decision: p.get('decision') || '', action: p.get('action') || '' };
  const q = new URLSearchParams({ limit: '200' });
  for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
  const data = await api('/api/v1/audit?' + q.toString());
  const tbody = el('tbody', {}, auditRows(data.items));
  const decisions = ['executed', 'refused', 'dry_run', 'rate_limited', 'awaiting_approval', 'approved', 'denied', 'rolled_back', 'failed'];
  const form = el('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const q2 = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) q2.set(k, v);
    location.hash = '#/audit?' + q2.toString();
  } },
  el('label', {}, 'Host', el('input', { name: 'host', value: filter.host })),
  el('label', {}, 'Action', el('input', { name: 'action', value: filter.action })),
  el('label', {}, 'Decision', el('select', { name: 'decision' }, el('option', { value: '' }, 'all'),
    decisions.map((d) => el('option', { value: d, selected: d === filter.decision }, d)))),
  el('button', { type: 'submit', class: 'primary' }, 'Filter'));
  main().replaceChildren(el('h1', {}, 'Audit trail'), form,
    el('div', { class: 'panel' }, el('table', { id: 'audit' }, el('thead', {}, el('tr', {}, AUDIT_HEADERS.map((h) => el('th', {}, h)))), tbody)));
  viewLive('audit', (r) => {
    if (state.view !== 'audit') return;
    if ((filter.host && r.host !== filter.host) || (filter.decision && r.decision !== filter.decision) || (filter.action && r.action !== filter.action)) return;
    const [row] = auditRows([r]);
    row.classList.add('fresh');
    tbody.prepend(row);
  });
};

// ---------- approvals ----------
views.approvals = async () => {
  // The result line outlives re-renders, so an answer is not wiped by the audit it causes.
  const out = el('div', { id: 'approval-result', class: 'result' });
  await renderApprovals(out);
  viewLive('audit', (r) => { if (state.view === 'approvals' && r.pending_id) renderApprovals(out).catch(() => {}); });
};

async function renderApprovals(out) {
  const data = await api('/api/v1/approvals');
  if (state.view !== 'approvals') return;
  const decide = async (item, verdict) => {
    const r = item.record;
    const what = `${verdict === 'approve' ? 'Approve' : 'Deny'} ${r.action} of ${r.target || 'the target'} on host ${r.host}?`;
    if (!(await confirmAction(verdict === 'approve' ? 'Approve action' : 'Deny action', what, verdict === 'approve' ? 'Approve' : 'Deny'))) return;
    try {
      await api('/api/v1/approvals/' + encodeURIComponent(item.pending_id), { method: 'POST', body: { verdict } });
      resultLine(out, true, `${verdict === 'approve' ? 'Approval' : 'Denial'} sent for ${item.pending_id}; the responder audits what it does.`);
    } catch (err) { resultLine(out, false, err.message); }
  };
  const rows = data.items.map((item) => {
    const r = item.record;
    return el('tr', { 'data-pending': item.pending_id },
      el('td', { class: 'mono' }, fmtTime(r.time)), el('td', {}, r.host), el('td', {}, r.action), el('td', { class: 'mono' }, r.target || ''),
      el('td', {}, item.finding_severity ? sev(item.finding_severity) : '', ' ',
        r.finding_id ? el('a', { href: '#/finding/' + encodeURIComponent(r.finding_id) }, item.finding_title || r.finding_id) : ''),
      el('td', {}, r.reason),
      el('td', {}, el('div', { class: 'buttons' },
        el('button', { type: 'button', class: 'approve primary', disabled: !state.canAct, onclick: () => decide(item, 'approve') }, 'Approve'),
        el('button', { type: 'button', class: 'deny danger', disabled: !state.canAct, onclick: () => decide(item, 'deny') }, 'Deny'))));
  });
  main().replaceChildren(el('h1', {}, 'Pending approvals'), out,
    el('div', { class: 'panel' }, rows.length ? table(['since', 'host', 'action', 'target', 'finding', 'why', ''], rows, { id: 'approvals' })
      : el('p', { class: 'muted', id: 'approvals-empty' }, 'Nothing is waiting for an operator.')));
}

// ---------- manual actions ----------
views.actions = async () => {
  const hosts = (await api('/api/v1/hosts')).items.map((h) => h.host);
  const out = el('div', { id: 'manual-result', class: 'result' });
  const kind = el('select', { id: 'manual-kind' }, ['kill', 'suspend', 'resume', 'block', 'unblock'].map((k) => el('option', { value: k }, k)));
  const host = el('select', { id: 'manual-host' }, hosts.map((h) => el('option', { value: h }, h)));
  const target = el('input', { id: 'manual-target', placeholder: 'ExecId: bootid-pid-ticks-seq', size: 34 });
  const cidr = el('input', { id: 'manual-cidr', placeholder: '203.0.113.7/32', size: 20 });
  const port = el('input', { id: 'manual-port', type: 'number', min: '1', max: '65535', placeholder: 'any' });
  const ttl = el('input', { id: 'manual-ttl', type: 'number', min: '0', placeholder: 'none' });
  const procFields = el('label', {}, 'Target process', target);
  const netFields = [el('label', {}, 'Destination (IP or CIDR)', cidr), el('label', {}, 'Port', port)];
  const ttlField = el('label', {}, 'TTL (s)', ttl);
  const sync = () => {
    const k = kind.value;
    procFields.hidden = !['kill', 'suspend', 'resume'].includes(k);
    netFields.forEach((f) => { f.hidden = !['block', 'unblock'].includes(k); });
    ttlField.hidden = !['suspend', 'block'].includes(k);
  };
  kind.addEventListener('change', sync);
  const submit = el('button', { id: 'manual-submit', type: 'submit', class: 'danger', disabled: !state.canAct }, 'Send…');
  const form = el('form', { class: 'filters', onsubmit: async (e) => {
    e.preventDefault();
    const k = kind.value;
    const action = { kind: k };
    let what;
    if (['kill', 'suspend', 'resume'].includes(k)) {
      if (!/^[0-9a-f]{8}-\d+-\d+-\d+$/.test(target.value.trim())) { resultLine(out, false, 'Target must be an ExecId: bootid-pid-ticks-seq.'); return; }
      action.target = target.value.trim();
      what = `${k} process ${action.target}`;
    } else {
      if (!cidr.value.trim()) { resultLine(out, false, 'Give a destination address or CIDR.'); return; }
      action.cidr = cidr.value.trim();
      if (port.value) action.port = Number(port.value);
      what = `${k} ${action.cidr}${action.port ? ' port ' + action.port : ''}`;
    }
    if (ttl.value && Number(ttl.value) > 0 && ['suspend', 'block'].includes(k)) {
      action.ttl_secs = Number(ttl.value);
      what += ` for ${action.ttl_secs} s`;
    }
    await sendAction(host.value, action, null, `${what} on host ${host.value}?`, out);
  } }, el('label', {}, 'Host', host), el('label', {}, 'Action', kind), procFields, netFields, ttlField, submit);
  sync();
  main().replaceChildren(el('h1', {}, 'Manual action'),
    el('div', { class: 'panel' }, el('p', { class: 'muted' }, 'Commands are signed with the console\u2019s operator key, carry your name, and are checked and audited by the host.'), form, out));
};

// ---------- responder ----------
views.responder = async () => {
  const out = el('div', { id: 'responder-result', class: 'result' });
  const modeLine = el('div', { id: 'responder-mode', class: 'mode' }, '…');
  const toggle = el('button', { id: 'responder-toggle', type: 'button', disabled: true }, '…');
  let dry = null;
  const show = (r) => {
    dry = r.dry_run;
    modeLine.textContent = dry ? 'Dry-run ON: decisions are audited, nothing is sent to hosts' : 'Dry-run OFF: the responder acts';
    modeLine.className = 'mode ' + (dry ? 'on' : 'off');
    toggle.textContent = dry ? 'Turn dry-run off (act)' : 'Turn dry-run on';
    toggle.className = dry ? 'danger' : 'primary';
    toggle.disabled = !state.canAct;
  };
  toggle.addEventListener('click', async () => {
    const want = !dry;
    if (!(await confirmAction('Responder mode', want ? 'Switch dry-run ON? The responder will stop sending commands to hosts.' : 'Switch dry-run OFF? The responder will act on findings again.', want ? 'Dry-run on' : 'Dry-run off'))) return;
    try {
      const r = await api('/api/v1/responder', { method: 'POST', body: { dry_run: want } });
      show(r);
      resultLine(out, true, r.reason);
    } catch (err) { resultLine(out, false, err.message); }
  });
  main().replaceChildren(el('h1', {}, 'Responder'), el('div', { class: 'panel' }, modeLine, el('p', {}, toggle), out));
  try { show(await api('/api/v1/responder')); } catch (err) { resultLine(out, false, err.message); }
};

// ---------- start ----------
(async () => {
  try {
    const s = await api('/api/v1/session');
    await start(s);
  } catch (err) {
    if (err.status !== 401) showLogin(err.message);
  }
})();
