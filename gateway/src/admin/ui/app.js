// Skybridge's dashboard: the admin API, read every 2 s, and its event stream, live.
// Plain DOM (text nodes only: nothing from the API is ever parsed as HTML), no dependencies.
'use strict';

const TOKEN_KEY = 'skybridge-admin-token';
const REFRESH_MS = 2000;
const FEED_MAX = 200;
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
let timer = null;
let events = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (answer.status === 401) { logout('the token was refused'); throw new Error('unauthorized'); }
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
}

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function row(cells, attrs = {}) {
  const tr = el('tr', null, attrs);
  for (const c of cells) {
    if (c instanceof Node) { const td = el('td'); td.append(c); tr.append(td); }
    else tr.append(el('td', c));
  }
  return tr;
}

function fill(table, rows) {
  const body = $(table).querySelector('tbody');
  body.replaceChildren(...rows);
}

const seconds = (ms) => ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60000)} min`;
const rtt = (ms) => ms === null || ms === undefined ? '–' : `${ms.toFixed(1)} ms`;
const pct = (x) => `${(x * 100).toFixed(1)} %`;
const bytes = (n) => n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
const quality = (ms) => ms === null || ms === undefined ? 'poor' : ms < 10 ? 'good' : ms < 50 ? 'fair' : 'poor';

// ---- topology --------------------------------------------------------------------------

function layout(nodes, platforms) {
  const relays = nodes.filter((n) => n.role === 'relay').map((n) => n.name).sort();
  const pos = {};
  const [cx, cy, r] = [450, 280, 150];
  relays.forEach((name, i) => {
    const a = (2 * Math.PI * i) / Math.max(relays.length, 1) - Math.PI / 2;
    pos[name] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  // Sites sit outside their nearest relay, fanned out when several share one.
  const around = {};
  for (const p of platforms) {
    const relay = p.nearest_relay && pos[p.nearest_relay] ? p.nearest_relay : null;
    const key = relay || '';
    around[key] = (around[key] || 0) + 1;
    const k = around[key] - 1;
    if (relay) {
      const [x, y] = pos[relay];
      const a = Math.atan2(y - cy, x - cx) + (k - 0.5) * 0.5 * (around[key] > 1 ? 1 : 0);
      pos[p.name] = [cx + (r + 95) * Math.cos(a), cy + (r + 95) * Math.sin(a)];
    } else {
      pos[p.name] = [60 + 110 * k, 530];
    }
  }
  return pos;
}

function drawTopology(nodes, links, platforms, decision) {
  const svg = $('graph');
  svg.replaceChildren();
  const pos = layout(nodes, platforms);
  const state = Object.fromEntries(nodes.map((n) => [n.name, n.state]));
  const line = (a, b, cls, attrs = {}) => {
    if (!pos[a] || !pos[b]) return null;
    const l = document.createElementNS(SVG, 'line');
    l.setAttribute('x1', pos[a][0]); l.setAttribute('y1', pos[a][1]);
    l.setAttribute('x2', pos[b][0]); l.setAttribute('y2', pos[b][1]);
    l.setAttribute('class', cls);
    for (const [k, v] of Object.entries(attrs)) l.setAttribute(k, v);
    svg.append(l);
    return l;
  };
  for (const l of links) {
    const cls = l.usable ? quality(l.stats.rtt_ms) : 'unused';
    const drawn = line(l.from, l.to, cls, { 'data-link': `${l.from}-${l.to}` });
    if (!drawn) continue;
    const title = document.createElementNS(SVG, 'title');
    title.textContent = `${l.from} → ${l.to}: RTT ${rtt(l.stats.rtt_ms)}, jitter ${rtt(l.stats.jitter_ms)}, loss ${pct(l.stats.loss)}${l.silent ? ', silent' : ''}`;
    drawn.append(title);
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('class', 'loss');
    t.setAttribute('x', (pos[l.from][0] + pos[l.to][0]) / 2);
    t.setAttribute('y', (pos[l.from][1] + pos[l.to][1]) / 2 - 8);
    t.textContent = `${rtt(l.stats.rtt_ms)} · ${pct(l.stats.loss)}`;
    svg.append(t);
  }
  for (const p of platforms) {
    if (p.nearest_relay) line(p.name, p.nearest_relay, 'unused');
  }
  if (decision) {
    const path = decision.decision.candidates[decision.decision.winner].path;
    const hops = [decision.from, ...path, decision.to];
    for (let i = 0; i + 1 < hops.length; i++) {
      line(hops[i], hops[i + 1], 'path-highlight', { 'data-path': `${hops[i]}-${hops[i + 1]}` });
    }
  }
  for (const [name, [x, y]] of Object.entries(pos)) {
    const g = document.createElementNS(SVG, 'g');
    g.setAttribute('data-node', name);
    g.setAttribute('class', state[name] === 'up' ? 'up' : 'down');
    const node = nodes.find((n) => n.name === name);
    let shape;
    if (node && node.role === 'relay') {
      shape = document.createElementNS(SVG, 'circle');
      shape.setAttribute('cx', x); shape.setAttribute('cy', y); shape.setAttribute('r', 24);
      shape.setAttribute('class', 'relay');
    } else {
      shape = document.createElementNS(SVG, 'rect');
      shape.setAttribute('x', x - 34); shape.setAttribute('y', y - 16);
      shape.setAttribute('width', 68); shape.setAttribute('height', 32); shape.setAttribute('rx', 6);
      shape.setAttribute('class', 'site');
    }
    const title = document.createElementNS(SVG, 'title');
    title.textContent = node
      ? `${name} (${node.role}) ${node.state} for ${seconds(node.since_ms)}, last seen ${seconds(node.last_seen_ms)} ago`
      : name;
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', x); t.setAttribute('y', y);
    t.textContent = name;
    g.append(shape, t, title);
    svg.append(g);
  }
  fill('nodes', nodes.map((n) => row(
    [n.name, n.role, el('span', n.state, { class: n.state }), seconds(n.since_ms), `${seconds(n.last_seen_ms)} ago`],
    { 'data-node-row': n.name },
  )));
}

// ---- the other views -------------------------------------------------------------------

function drawDecisions(decisions) {
  const list = $('decision-list');
  list.replaceChildren();
  for (const d of decisions.slice(0, 10)) {
    const section = el('section', null, { 'data-decision': d.id });
    section.append(el('h2', `Decision ${d.id}: ${d.from} → ${d.to} (routing relays ${d.first_relay} → ${d.second_relay}), scorer ${d.decision.scorer}`));
    const table = el('table');
    const head = el('thead');
    head.append(row(['', 'Path', 'Hops', 'RTT', 'Loss', 'Jitter', 'Score', 'Explanation']));
    const body = el('tbody');
    d.decision.candidates.forEach((c, i) => {
      const winner = i === d.decision.winner;
      body.append(row(
        [winner ? '★' : '', c.path.join(' → '), c.hops, rtt(c.measured.rtt_ms), pct(c.measured.loss),
          rtt(c.measured.jitter_ms), c.score === null ? '–' : c.score.toFixed(2), c.explanation],
        winner ? { class: 'winner' } : {},
      ));
    });
    table.append(head, body);
    section.append(table);
    list.append(section);
  }
}

function drawBindings(bindings, sessions) {
  fill('binding-table', bindings.map((b) => row([
    b.id, `${b.from} → ${b.to}/${b.endpoint} on ${b.listen}`, b.mode, b.tunnel.hops.join(' → '),
    `${b.connections} (${b.active} now)`, `${bytes(b.bytes_up)} / ${bytes(b.bytes_down)}`,
    b.reroutes.map((r) => `${r.from_hops.join('→')} ⇒ ${r.to_hops.join('→')} (${r.reason})`).join('; ') || '–',
  ], { 'data-binding': b.id })));
  fill('session-table', sessions.slice(0, 50).map((s) => row([
    s.id, s.account, s.first.client, `${s.second.tunnel} (${s.second.hops.join(' → ')})`,
    `${s.third.platform}/${s.third.endpoint}`, s.third.principal || '–', s.outcome || 'open',
  ])));
}

function drawCatalog(entries, authorizations) {
  fill('catalog-table', entries.map((e) => row([
    e.kind, e.name, el('span', e.state, { class: e.state }),
    e.offered_by.map((o) => `${o.platform} (${o.presence}${o.path ? `, ${o.path.rtt_ms.toFixed(1)} ms over ${o.path.hops} hops` : ''})`).join(', '),
  ], { 'data-entry': `${e.kind}/${e.name}` })));
  fill('authorization-table', authorizations.map((a) => row(
    [a.platform, a.match_key, el('span', a.state, { class: a.state }), a.reason],
    { 'data-authorization': `${a.platform}/${a.match_key}` },
  )));
}

function drawPlugins(plugins) {
  fill('plugin-table', plugins.map((p) => row([
    p.name, p.world, `${p.plugin} ${p.version}`, p.calls, `${p.mean_call_us.toFixed(0)} µs`,
    Object.entries(p.failures).map(([k, n]) => `${k} ${n}`).join(', ') || '–', p.rejections,
  ])));
}

async function refresh() {
  try {
    const [nodes, links, platforms, decisions, bindings, sessions, catalog, authorizations, plugins] =
      await Promise.all(['/v1/nodes', '/v1/links', '/v1/platforms', '/v1/decisions', '/v1/bindings',
        '/v1/sessions', '/v1/catalog?limit=500', '/v1/authorizations?limit=500', '/v1/plugins'].map(api));
    const latest = decisions.length ? decisions.reduce((a, b) => (a.id > b.id ? a : b)) : null;
    drawTopology(nodes, links, platforms, latest);
    drawDecisions([...decisions].sort((a, b) => b.id - a.id));
    drawBindings(bindings, sessions);
    drawCatalog(catalog.items, authorizations.items);
    drawPlugins(plugins);
    $('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e.message !== 'unauthorized') $('status').textContent = `cannot reach the controller: ${e.message}`;
  }
}

// ---- the live feed (server-sent events over fetch: EventSource cannot send the token) ----

// The views are refreshed once for a burst of events (the recent ones arrive together).
let refreshSoon = null;

function addEvent(kind, data) {
  let detail = '';
  let at = new Date();
  try {
    const e = JSON.parse(data);
    if (e.at_unix_ms) at = new Date(e.at_unix_ms);
    detail = Object.entries(e).filter(([k]) => k !== 'type' && k !== 'at_unix_ms')
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  } catch { detail = data; }
  const li = el('li', null, { 'data-type': kind });
  li.append(el('span', at.toLocaleTimeString() + ' '), el('span', kind, { class: 'type' }), el('div', detail));
  const feed = $('feed');
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  if (['rerouted', 'node-down', 'node-up', 'decided', 'binding-opened', 'capability-granted'].includes(kind) && !refreshSoon) {
    refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 200);
  }
}

async function follow() {
  events = new AbortController();
  while (token()) {
    try {
      const answer = await fetch('/v1/events?recent=100', { headers: { Authorization: `Bearer ${token()}` }, signal: events.signal });
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      // Each connection starts with the recent events: the feed is rebuilt, not doubled.
      $('feed').replaceChildren();
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const message = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let kind = 'message'; let data = '';
          for (const l of message.split('\n')) {
            if (l.startsWith('event: ')) kind = l.slice(7);
            else if (l.startsWith('data: ')) data += l.slice(6);
          }
          if (data) addEvent(kind, data);
        }
      }
    } catch (e) {
      if (e.name === 'AbortError') return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ---- login, tabs -----------------------------------------------------------------------

function show(loggedIn) {
  $('login').hidden = loggedIn;
  $('app').hidden = !loggedIn;
  $('tabs').hidden = !loggedIn;
  $('logout').hidden = !loggedIn;
}

function start() {
  show(true);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
  follow();
}

function logout(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (timer) clearInterval(timer);
  if (events) events.abort();
  show(false);
  $('login-error').textContent = why || '';
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const given = $('token').value.trim();
  $('token').value = '';
  const answer = await fetch('/v1/nodes', { headers: { Authorization: `Bearer ${given}` } }).catch(() => null);
  if (!answer || !answer.ok) {
    $('login-error').textContent = answer && answer.status === 429
      ? 'too many failed attempts: wait a moment'
      : 'the controller refused this token';
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, given);
  $('login-error').textContent = '';
  start();
});

$('logout').addEventListener('click', () => logout());

for (const b of document.querySelectorAll('#tabs button')) {
  b.addEventListener('click', () => {
    for (const o of document.querySelectorAll('#tabs button')) o.classList.toggle('active', o === b);
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== b.dataset.view;
  });
}

if (token()) start(); else show(false);
