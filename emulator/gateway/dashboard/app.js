// twinhub dashboard (docs/dashboard.md). Plain browser JavaScript, no build step, nothing loaded
// from outside the hub: the gateway serves this file, Chart.js from Debian, a JSON API that
// forwards control commands (POST /dashboard/api/command) and the live feed (server-sent
// events at /dashboard/events, one message per 200 ms with every record of that period).
// Every text from the hub goes into the page as text (h() below), never as HTML.
'use strict';

const PAGE = 100;           // devices per page
const MAX_EVENTS = 2000;    // records kept for the live view
const SHOWN_EVENTS = 300;   // rows drawn
const MAX_POINTS = 600;     // points per plotted field

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text, error) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = error ? 'toast error' : 'toast';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, error ? 8000 : 3000);
}

async function command(cmd) {
  const res = await fetch('/dashboard/api/command', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(cmd),
    credentials: 'same-origin',
  });
  let body;
  try { body = await res.json(); } catch { body = { error: `HTTP ${res.status}` }; }
  if (!res.ok || body.error !== undefined) {
    const e = new Error(body.error || `HTTP ${res.status}`);
    e.status = body.status || res.status;
    e.errorCode = body.errorCode;
    throw e;
  }
  return body.data;
}

async function getJson(path) {
  const res = await fetch(path, { credentials: 'same-origin' });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function parseJsonOr(text, what) {
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
}

const fmtTime = (t) => (!t || t.startsWith('0001-') ? 'never' : new Date(t).toLocaleString());
const pretty = (v) => JSON.stringify(v, null, 2);
const stateClass = (s) => (s === 'Connected' || s === 'enabled' || s === 'matches' ? 'pill ok'
  : s === 'differs' || s === 'disabled' ? 'pill bad' : 'pill');

function idPath(deviceId, moduleId) {
  return '#/device/' + encodeURIComponent(deviceId) + (moduleId ? '/' + encodeURIComponent(moduleId) : '');
}

// --------------------------------------------------------------- the feed

const feed = {
  events: [],          // newest last
  paused: false,
  listeners: new Set(),
  series: new Map(),   // "device/module" -> Map(field -> [{x, y}])
};

// Numeric fields of a telemetry body: top-level numbers and one level of nested objects.
function numericFields(body) {
  const out = [];
  if (!body || typeof body !== 'object' || Array.isArray(body)) return out;
  for (const [k, v] of Object.entries(body)) {
    if (typeof v === 'number' && Number.isFinite(v)) out.push([k, v]);
    else if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) {
        if (typeof v2 === 'number' && Number.isFinite(v2)) out.push([`${k}.${k2}`, v2]);
      }
    }
  }
  return out;
}

function telemetryBody(rec) {
  const d = rec.data || {};
  if (typeof d.body !== 'string') return { text: null, json: undefined };
  try { return { text: d.body, json: JSON.parse(d.body) }; } catch { return { text: d.body, json: undefined }; }
}

const seriesKey = (rec) => rec.deviceId + (rec.moduleId ? '/' + rec.moduleId : '');

function takeBatch(msg) {
  for (const rec of msg.events) {
    if (rec.kind === 'telemetry') {
      const { json } = telemetryBody(rec);
      const fields = numericFields(json);
      if (fields.length) {
        const key = seriesKey(rec);
        if (!feed.series.has(key)) feed.series.set(key, new Map());
        const s = feed.series.get(key);
        const x = Date.parse(rec.time);
        for (const [f, v] of fields) {
          if (!s.has(f)) s.set(f, []);
          const pts = s.get(f);
          pts.push({ x, y: v });
          if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
        }
      }
    }
    feed.events.push(rec);
  }
  if (feed.events.length > MAX_EVENTS) feed.events.splice(0, feed.events.length - MAX_EVENTS);
  feed.dropped = (feed.dropped || 0) + (msg.dropped || 0);
  for (const l of feed.listeners) l(msg.events);
}

function openFeed() {
  const state = document.getElementById('feed-state');
  const es = new EventSource('/dashboard/events');
  es.onopen = () => { state.textContent = 'feed: live'; state.className = 'feed-state up'; };
  es.onerror = () => { state.textContent = 'feed: reconnecting'; state.className = 'feed-state'; };
  es.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    takeBatch(msg);
  };
}

// The one chart of a view: numeric fields of `key` ("device" or "device/module") over time.
function plot(container, key) {
  const box = h('div', { class: 'chart-box', 'data-plot': key });
  const note = h('p', { class: 'muted' }, 'Numeric telemetry fields of ', key, ' appear here as they arrive.');
  container.append(note, box);
  const canvas = h('canvas');
  box.append(canvas);
  if (typeof window.Chart !== 'function') {
    box.replaceChildren(h('p', { class: 'muted' }, 'Chart.js is not installed on the hub (Debian package libjs-chart.js); latest values:'), h('pre', { class: 'latest' }));
  }
  let chart = null;
  const palette = ['#2451b3', '#b3261e', '#1d6b2c', '#7a5800', '#6b2fb3', '#0f7b8a', '#8a4b0f'];
  function update() {
    const s = feed.series.get(key);
    if (!s) return;
    box.setAttribute('data-fields', [...s.keys()].join(','));
    box.setAttribute('data-points', [...s.values()].reduce((n, p) => n + p.length, 0));
    if (typeof window.Chart !== 'function') {
      box.querySelector('.latest').textContent = [...s].map(([f, p]) => `${f}: ${p[p.length - 1].y}`).join('\n');
      return;
    }
    const t0 = Math.min(...[...s.values()].map((p) => p[0].x));
    const datasets = [...s].map(([f, p], i) => ({
      label: f,
      data: p.map((pt) => ({ x: (pt.x - t0) / 1000, y: pt.y })),
      borderColor: palette[i % palette.length],
      backgroundColor: palette[i % palette.length],
      pointRadius: 1.5,
      borderWidth: 1.5,
    }));
    if (!chart) {
      chart = new window.Chart(canvas, {
        type: 'line',
        data: { datasets },
        options: {
          animation: false,
          parsing: false,
          normalized: true,
          maintainAspectRatio: false,
          scales: { x: { type: 'linear', title: { display: true, text: 'seconds' } } },
          plugins: { legend: { position: 'bottom' } },
        },
      });
      box.chart = chart;
    } else {
      chart.data.datasets = datasets;
      chart.update('none');
    }
  }
  update();
  const l = () => update();
  feed.listeners.add(l);
  return () => { feed.listeners.delete(l); if (chart) chart.destroy(); };
}

// ------------------------------------------------------------- rendering

function summary(rec) {
  const d = rec.data || {};
  switch (rec.kind) {
    case 'telemetry': {
      const { text } = telemetryBody(rec);
      const props = Object.entries(d.properties || {}).map(([k, v]) => `${k}=${v}`).join(' ');
      return (props ? `[${props}] ` : '') + (text !== null ? text : `(${d.size} bytes, not text)`);
    }
    case 'connected': return `${d.clientId || ''} ${d.auth || ''}${d.modelId ? ' model ' + d.modelId : ''}`;
    case 'refused': return d.reason || '';
    case 'reported': return d.error ? `refused: ${d.error}` : `v${d.version} ${JSON.stringify(d.patch)}`;
    case 'desired': return `v${d.version} ${JSON.stringify(d.patch)}${d.delivered ? '' : ' (not delivered: offline)'}`;
    case 'method': return `${d.methodName} -> ${d.status !== undefined ? d.status : ''} ${d.error || JSON.stringify(d.payload === undefined ? null : d.payload)}`;
    case 'c2d': return `${d.messageId} ${d.delivered ? 'delivered' : 'queued'} (${d.queued} pending)`;
    default: return JSON.stringify(d);
  }
}

const KINDS = ['telemetry', 'connected', 'disconnected', 'reported', 'desired', 'method', 'c2d', 'refused', 'other'];

function eventRow(rec) {
  const d = rec.data || {};
  const details = rec.kind === 'telemetry'
    ? h('details', {}, h('summary', {}, summary(rec)),
      h('pre', {}, 'system properties ' + pretty(d.systemProperties || {}) + '\napplication properties ' + pretty(d.properties || {})))
    : summary(rec);
  return h('tr', { 'data-kind': rec.kind, 'data-device': rec.deviceId || '' },
    h('td', {}, rec.time ? rec.time.slice(11, 23) : ''),
    h('td', {}, h('span', { class: 'pill' }, rec.kind)),
    h('td', {}, rec.deviceId ? h('a', { href: idPath(rec.deviceId, rec.moduleId) }, seriesKey(rec)) : ''),
    h('td', {}, details));
}

// A live list of events; `filter(rec)` picks them. Returns its clean-up.
function eventList(container, filterFn, controls) {
  let paused = false;
  const body = h('tbody');
  const table = h('div', { class: 'events-table' },
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'time'), h('th', {}, 'kind'), h('th', {}, 'identity'), h('th', {}, 'what'))), body));
  const pause = h('button', { class: 'secondary', 'data-action': 'pause', onclick: () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) redraw();
  } }, 'Pause');
  const dropped = h('span', { class: 'muted' });
  container.append(h('div', { class: 'bar' }, controls || [], pause, dropped), table);
  let scheduled = false;
  function redraw() {
    scheduled = false;
    if (paused) return;
    const rows = [];
    for (let i = feed.events.length - 1; i >= 0 && rows.length < SHOWN_EVENTS; i--) {
      if (filterFn(feed.events[i])) rows.push(eventRow(feed.events[i]));
    }
    body.replaceChildren(...rows);
    dropped.textContent = feed.dropped ? `${feed.dropped} events left out to keep up` : '';
  }
  const l = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(redraw); } };
  feed.listeners.add(l);
  redraw();
  return { redraw, stop: () => feed.listeners.delete(l) };
}

// ------------------------------------------------------------------ views

let cleanup = [];
const main = () => document.getElementById('main');
let hubInfo = { hubName: '', gatewayHostName: '' };

function viewDevices(params) {
  const root = main();
  const search = h('input', { type: 'search', placeholder: 'device or module id', value: params.get('search') || '', 'data-field': 'search' });
  const status = h('select', {}, h('option', { value: '' }, 'any status'), h('option', { value: 'enabled' }, 'enabled'), h('option', { value: 'disabled' }, 'disabled'));
  const conn = h('select', {}, h('option', { value: '' }, 'any connection'), h('option', { value: 'Connected' }, 'connected'), h('option', { value: 'Disconnected' }, 'disconnected'));
  const newId = h('input', { type: 'text', placeholder: 'new device id', 'data-field': 'new-device' });
  const body = h('tbody');
  const pager = h('span', { class: 'muted', 'data-field': 'pager' });
  let skip = 0;
  const prev = h('button', { class: 'secondary', onclick: () => { skip = Math.max(0, skip - PAGE); load(); } }, 'Previous');
  const next = h('button', { class: 'secondary', onclick: () => { skip += PAGE; load(); } }, 'Next');
  async function load() {
    const cmd = { command: 'listDeviceSummaries', skip, top: PAGE };
    if (search.value) cmd.search = search.value;
    if (status.value) cmd.status = status.value;
    if (conn.value) cmd.connectionState = conn.value;
    let data;
    try { data = await command(cmd); } catch (e) { toast(e.message, true); return; }
    body.replaceChildren(...data.items.map((d) => h('tr', { 'data-device': d.deviceId },
      h('td', {}, h('a', { href: idPath(d.deviceId) }, d.deviceId)),
      h('td', {}, h('span', { class: stateClass(d.status) }, d.status)),
      h('td', {}, h('span', { class: stateClass(d.connectionState) }, d.connectionState)),
      h('td', {}, fmtTime(d.lastActivityTime)),
      h('td', {}, d.modules.map((m, i) => [i ? ', ' : '', h('a', { href: idPath(d.deviceId, m.moduleId), title: m.connectionState }, m.moduleId)])),
      h('td', { class: 'num' }, d.cloudToDeviceMessageCount))));
    const last = Math.min(data.matched, data.skip + data.items.length);
    pager.textContent = data.matched ? `${data.skip + 1}-${last} of ${data.matched} (${data.total} devices)` : `no match (${data.total} devices)`;
    prev.disabled = data.skip === 0;
    next.disabled = last >= data.matched;
  }
  let timer;
  const reload = () => { clearTimeout(timer); timer = setTimeout(() => { skip = 0; load(); }, 250); };
  search.addEventListener('input', reload);
  status.addEventListener('change', reload);
  conn.addEventListener('change', reload);
  const create = h('button', { onclick: async () => {
    try {
      await command({ command: 'createDevice', deviceId: newId.value });
      toast(`device ${newId.value} created`);
      location.hash = idPath(newId.value);
    } catch (e) { toast(e.message, true); }
  } }, 'Create device');
  root.append(h('h1', {}, 'Devices'),
    h('div', { class: 'bar' }, search, status, conn, prev, next, pager),
    h('table', { 'data-table': 'devices' }, h('thead', {}, h('tr', {}, ['device', 'status', 'connection', 'last activity', 'modules', 'pending C2D'].map((t) => h('th', {}, t)))), body),
    h('div', { class: 'bar' }, newId, create));
  // Connection changes and new identities show without a reload (at most once a second).
  let pending = false;
  const l = (events) => {
    if (pending || !events.some((r) => ['connected', 'disconnected', 'deviceCreated', 'deviceDeleted', 'moduleCreated', 'moduleDeleted', 'c2d', 'identityUpdated'].includes(r.kind))) return;
    pending = true;
    setTimeout(() => { pending = false; load(); }, 1000);
  };
  feed.listeners.add(l);
  cleanup.push(() => feed.listeners.delete(l));
  load();
}

// Desired properties the agent has not acknowledged (IoT Plug and Play writable properties:
// the agent reports {"value", "ac", "av"} with av the desired $version it applied).
function unacknowledged(desired, reported) {
  const out = [];
  const meta = desired.$metadata || {};
  const check = (name, d, r, m, path) => {
    const want = (m && m.$lastUpdatedVersion) || desired.$version;
    const ack = r && typeof r === 'object' ? r : null;
    if (!ack || typeof ack.av !== 'number' || ack.av < want) {
      out.push({ path, version: want, reported: ack ? { ac: ack.ac, av: ack.av } : null });
    }
  };
  for (const [name, d] of Object.entries(desired)) {
    if (name.startsWith('$')) continue;
    if (d && typeof d === 'object' && d.__t === 'c') {
      for (const [p, v] of Object.entries(d)) {
        if (p === '__t') continue;
        check(p, v, (reported[name] || {})[p], (meta[name] || {})[p], `${name}.${p}`);
      }
    } else {
      check(name, d, reported[name], meta[name], name);
    }
  }
  return out;
}

function connectionString(deviceId, moduleId, key) {
  let cs = `HostName=${hubInfo.hubName};DeviceId=${deviceId}`;
  if (moduleId) cs += `;ModuleId=${moduleId}`;
  cs += `;SharedAccessKey=${key}`;
  const gw = hubInfo.gatewayHostName;
  if (gw && gw.toLowerCase() !== hubInfo.hubName.toLowerCase()) cs += `;GatewayHostName=${gw}`;
  return cs;
}

async function viewDevice(deviceId, moduleId) {
  const root = main();
  const key = moduleId ? `${deviceId}/${moduleId}` : deviceId;
  const ids = moduleId ? { deviceId, moduleId } : { deviceId };
  root.append(h('h1', {}, moduleId ? `Module ${moduleId} of ` : 'Device ', moduleId ? h('a', { href: idPath(deviceId) }, deviceId) : deviceId));
  const identityBox = h('div', { class: 'card', 'data-card': 'identity' });
  const twinBox = h('div', { 'data-card': 'twin' });
  const actions = h('div', { class: 'grid2' });
  const live = h('div');
  root.append(identityBox, twinBox, actions, h('h2', {}, 'Telemetry and events'), live);

  let twin = null;
  async function loadIdentity() {
    let id;
    try { id = await command({ command: 'getDevice', ...ids }); } catch (e) { identityBox.replaceChildren(h('p', { class: 'pill bad' }, e.message)); return; }
    const keyText = h('dd', { 'data-field': 'keys' }, '(hidden)');
    const csText = h('dd', { 'data-field': 'connection-string' }, '(hidden)');
    const primary = id.authentication && id.authentication.symmetricKey ? id.authentication.symmetricKey.primaryKey : null;
    const show = h('button', { class: 'secondary', onclick: () => {
      const sk = id.authentication.symmetricKey || {};
      keyText.textContent = `primary ${sk.primaryKey}\nsecondary ${sk.secondaryKey}`;
      csText.textContent = primary ? connectionString(deviceId, moduleId, primary) : 'no keys (authentication type none)';
    } }, 'Show keys and connection string');
    const del = h('button', { class: 'danger', onclick: async () => {
      if (!confirm(`Delete ${key}?`)) return;
      try {
        await command({ command: moduleId ? 'deleteModule' : 'deleteDevice', ...ids });
        toast(`${key} deleted`);
        location.hash = moduleId ? idPath(deviceId) : '#/devices';
      } catch (e) { toast(e.message, true); }
    } }, moduleId ? 'Delete module' : 'Delete device');
    const items = [['connection', h('span', { class: stateClass(id.connectionState), 'data-field': 'connection' }, id.connectionState)],
      ['last activity', fmtTime(id.lastActivityTime)], ['etag', id.etag], ['generation', id.generationId],
      ['authentication', id.authentication ? id.authentication.type : '']];
    if (!moduleId) items.splice(1, 0, ['status', h('span', { class: stateClass(id.status) }, id.status)], ['pending C2D', id.cloudToDeviceMessageCount]);
    else items.push(['managed by', id.managedBy || '']);
    identityBox.replaceChildren(h('dl', { class: 'kv' }, items.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
      h('dt', {}, 'keys'), keyText, h('dt', {}, 'connection string'), csText),
    h('div', { class: 'bar' }, show, del));
    if (!moduleId) {
      let mods = [];
      try { mods = await command({ command: 'listModules', deviceId }); } catch { /* shown empty */ }
      const newMod = h('input', { type: 'text', placeholder: 'new module id', 'data-field': 'new-module' });
      identityBox.append(h('h2', {}, 'Modules'),
        h('p', {}, mods.length ? mods.map((m, i) => [i ? ', ' : '', h('a', { href: idPath(deviceId, m.moduleId) }, m.moduleId), ' ', h('span', { class: stateClass(m.connectionState) }, m.connectionState)]) : 'none'),
        h('div', { class: 'bar' }, newMod, h('button', { onclick: async () => {
          try { await command({ command: 'createModule', deviceId, moduleId: newMod.value }); toast(`module ${newMod.value} created`); rerender(); } catch (e) { toast(e.message, true); }
        } }, 'Create module')));
    }
  }

  async function loadTwin() {
    try { twin = await command({ command: 'getTwin', ...ids }); } catch (e) { twinBox.replaceChildren(h('p', { class: 'pill bad' }, e.message)); return; }
    const props = twin.properties || {};
    const desired = props.desired || {};
    const reported = props.reported || {};
    const pending = unacknowledged(desired, reported);
    twinBox.replaceChildren(
      h('h2', {}, `Twin (etag ${twin.etag}, version ${twin.version})`),
      h('div', { class: 'grid2' },
        h('div', { class: 'card' }, h('h2', {}, `desired ($version ${desired.$version})`), h('pre', { 'data-field': 'desired' }, pretty(desired))),
        h('div', { class: 'card' }, h('h2', {}, `reported ($version ${reported.$version})`), h('pre', { 'data-field': 'reported' }, pretty(reported)))),
      h('div', { class: 'card', 'data-field': 'unacknowledged' }, h('h2', {}, 'Not acknowledged by the agent (Plug and Play ac/av)'),
        pending.length ? h('ul', {}, pending.map((p) => h('li', { class: 'pending' }, `${p.path}: desired version ${p.version}, `,
          p.reported ? `reported av ${p.reported.av}, ac ${p.reported.ac}` : 'no acknowledgement reported'))) : h('p', { class: 'muted' }, 'every desired property is acknowledged')),
      h('div', { class: 'card' }, h('h2', {}, 'Tags'), h('pre', { 'data-field': 'tags' }, pretty(twin.tags || {}))));
  }

  function form(title, fields, button, run) {
    const out = h('pre', { class: 'result' });
    const btn = h('button', { 'data-action': button.toLowerCase().replace(/ /g, '-') }, button);
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      out.textContent = '…';
      try { out.textContent = await run(); } catch (e) { out.textContent = `error: ${e.message}${e.status ? ` (status ${e.status}${e.errorCode ? ', ' + e.errorCode : ''})` : ''}`; } finally { btn.disabled = false; }
    });
    actions.append(h('div', { class: 'card' }, h('h2', {}, title), fields, h('div', { class: 'bar' }, btn), out));
  }

  const desiredPatch = h('textarea', { 'data-field': 'desired-patch', placeholder: '{"interval": 5}' });
  form('Patch desired properties (merge patch, with the etag)', desiredPatch, 'Update desired', async () => {
    const patch = parseJsonOr(desiredPatch.value, 'the patch');
    const t = await command({ command: 'updateTwin', ...ids, etag: twin.etag, patch: { properties: { desired: patch } } });
    await loadTwin();
    return `updated: desired $version ${t.properties.desired.$version}, etag ${t.etag}`;
  });
  const tagsPatch = h('textarea', { 'data-field': 'tags-patch', placeholder: '{"building": "43"}' });
  form('Patch tags (merge patch, with the etag)', tagsPatch, 'Update tags', async () => {
    const patch = parseJsonOr(tagsPatch.value, 'the patch');
    const t = await command({ command: 'updateTwin', ...ids, etag: twin.etag, patch: { tags: patch } });
    await loadTwin();
    return `updated: etag ${t.etag}`;
  });
  const mName = h('input', { type: 'text', placeholder: 'method name', 'data-field': 'method-name' });
  const mPayload = h('textarea', { 'data-field': 'method-payload', placeholder: 'payload (JSON), e.g. {"delay": 1}' });
  const mTimeout = h('input', { type: 'number', value: '30', min: '5', max: '300', title: 'response timeout, seconds' });
  form('Invoke a direct method', [h('div', { class: 'bar' }, mName, mTimeout), mPayload], 'Invoke method', async () => {
    const r = await command({ command: 'invokeMethod', ...ids, methodName: mName.value,
      payload: mPayload.value.trim() ? parseJsonOr(mPayload.value, 'the payload') : null,
      responseTimeoutInSeconds: Number(mTimeout.value) });
    return `status ${r.status}\n${pretty(r.payload !== undefined ? r.payload : r)}`;
  });
  if (!moduleId) {
    const cBody = h('textarea', { 'data-field': 'c2d-body', placeholder: 'message body' });
    const cProps = h('textarea', { 'data-field': 'c2d-properties', placeholder: 'properties, one key=value a line' });
    form('Send a cloud-to-device message', [cBody, cProps], 'Send message', async () => {
      const properties = {};
      for (const line of cProps.value.split('\n')) {
        if (!line.trim()) continue;
        const i = line.indexOf('=');
        properties[i < 0 ? line.trim() : line.slice(0, i).trim()] = i < 0 ? null : line.slice(i + 1);
      }
      const r = await command({ command: 'sendC2D', deviceId, body: cBody.value, properties });
      return `message ${r.messageId}: ${r.delivered ? 'delivered' : 'queued'}, ${r.queued} pending`;
    });
  }

  function rerender() { route(); }
  await Promise.all([loadIdentity(), loadTwin()]);
  cleanup.push(plot(live, key));
  const list = eventList(live, (r) => r.deviceId === deviceId && (moduleId ? r.moduleId === moduleId : true));
  cleanup.push(list.stop);
  // The twin and the connection state follow what happens.
  let timer = null;
  const l = (events) => {
    const mine = events.filter((r) => r.deviceId === deviceId && (r.moduleId || null) === (moduleId || null));
    if (!mine.some((r) => ['reported', 'desired', 'connected', 'disconnected', 'identityUpdated'].includes(r.kind)) || timer) return;
    timer = setTimeout(() => { timer = null; loadTwin(); loadIdentity(); }, 300);
  };
  feed.listeners.add(l);
  cleanup.push(() => { feed.listeners.delete(l); clearTimeout(timer); });
}

function viewEvents() {
  const root = main();
  root.append(h('h1', {}, 'Live events'));
  const device = h('input', { type: 'search', placeholder: 'device or module id', 'data-field': 'event-filter' });
  const kinds = new Set(KINDS);
  const boxes = KINDS.map((k) => h('label', {}, h('input', { type: 'checkbox', checked: true, onchange: (e) => { if (e.target.checked) kinds.add(k); else kinds.delete(k); list.redraw(); } }), ' ', k));
  const known = new Set(KINDS.slice(0, -1));
  const list = eventList(root, (r) => (kinds.has(known.has(r.kind) ? r.kind : 'other'))
    && (!device.value || seriesKey(r).toLowerCase().includes(device.value.toLowerCase())), [device, ...boxes]);
  device.addEventListener('input', () => list.redraw());
  cleanup.push(list.stop);
  // One chart per device (or module) that sent numeric telemetry.
  const charts = h('div');
  root.append(h('h2', {}, 'Numeric telemetry per device'), charts);
  const plotted = new Set();
  const addPlots = () => {
    for (const key of feed.series.keys()) {
      if (plotted.has(key) || plotted.size >= 12) continue;
      plotted.add(key);
      const box = h('div');
      charts.append(h('h2', {}, h('a', { href: idPath(...key.split('/')) }, key)), box);
      cleanup.push(plot(box, key));
    }
  };
  addPlots();
  feed.listeners.add(addPlots);
  cleanup.push(() => feed.listeners.delete(addPlots));
}

function viewQuery() {
  const root = main();
  const q = h('textarea', { 'data-field': 'query' }, "SELECT * FROM devices WHERE connectionState = 'Connected'");
  const table = h('div');
  const more = h('button', { class: 'secondary', hidden: true }, 'Next page');
  let continuation = null;
  async function run(next) {
    try {
      const cmd = { command: 'query', query: q.value, pageSize: 100 };
      if (next && continuation) cmd.continuation = continuation;
      const r = await command(cmd);
      continuation = r.continuation || null;
      more.hidden = !continuation;
      const items = r.items || [];
      const cols = [];
      for (const it of items) for (const k of Object.keys(typeof it === 'object' && it ? it : { value: it })) if (!cols.includes(k)) cols.push(k);
      table.replaceChildren(h('p', { class: 'muted' }, `${items.length} item(s) (${r.itemType})`),
        h('table', { 'data-table': 'query' }, h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))),
          h('tbody', {}, items.map((it) => h('tr', {}, cols.map((c) => {
            const v = typeof it === 'object' && it ? it[c] : it;
            return h('td', {}, v === undefined ? '' : typeof v === 'object' ? h('pre', {}, pretty(v)) : String(v));
          }))))));
    } catch (e) { table.replaceChildren(h('p', { class: 'pill bad' }, e.message)); }
  }
  more.addEventListener('click', () => run(true));
  root.append(h('h1', {}, 'Query'), q, h('div', { class: 'bar' }, h('button', { 'data-action': 'run-query', onclick: () => run(false) }, 'Run'), more), table);
}

function viewSecurity() {
  const root = main();
  const body = h('tbody');
  const pager = h('span', { class: 'muted' });
  let skip = 0;
  async function load() {
    let data, msgs;
    try {
      data = await command({ command: 'listDeviceSummaries', security: true, skip, top: PAGE });
      msgs = await getJson('/dashboard/api/security-messages?deviceIds=' + encodeURIComponent(data.items.map((d) => d.deviceId).join(',')));
    } catch (e) { toast(e.message, true); return; }
    body.replaceChildren(...data.items.map((d) => {
      const s = d.security || {};
      const m = msgs[d.deviceId];
      return h('tr', { 'data-device': d.deviceId },
        h('td', {}, h('a', { href: idPath(d.deviceId) }, d.deviceId)),
        h('td', {}, s.module ? h('a', { href: idPath(d.deviceId, 'azureiotsecurity') }, 'yes') : h('span', { class: 'pill warn' }, 'no')),
        h('td', {}, s.module ? h('span', { class: stateClass(s.connectionState) }, s.connectionState) : ''),
        h('td', {}, s.module ? [h('span', { class: stateClass(s.configuration) }, s.configuration),
          s.configuration === 'differs' ? h('ul', {}, (s.differences || []).map((x) => h('li', {}, `${x.key}: desired ${JSON.stringify(x.desired)}, ${x.reported === undefined ? 'not reported' : 'reported ' + JSON.stringify(x.reported)}`))) : null] : ''),
        h('td', {}, m ? [fmtTime(m.time), h('ul', {}, Object.entries(m.events).map(([n, c]) => h('li', {}, `${n}${c > 1 ? ' ×' + c : ''}`)))] : h('span', { class: 'muted' }, 'none since the hub started')));
    }));
    pager.textContent = `${data.matched ? data.skip + 1 : 0}-${data.skip + data.items.length} of ${data.matched}`;
  }
  const ensure = h('button', { 'data-action': 'ensure-security', onclick: async () => {
    try {
      const r = await command({ command: 'ensureSecurityModule' });
      toast(`azureiotsecurity created on ${r.created} device(s), ${r.skipped} already had it`);
      load();
    } catch (e) { toast(e.message, true); }
  } }, 'Create the security module on every device that lacks it');
  root.append(h('h1', {}, 'Security modules (azureiotsecurity)'),
    h('div', { class: 'bar' }, ensure,
      h('button', { class: 'secondary', onclick: () => { skip = Math.max(0, skip - PAGE); load(); } }, 'Previous'),
      h('button', { class: 'secondary', onclick: () => { skip += PAGE; load(); } }, 'Next'), pager),
    h('table', { 'data-table': 'security' }, h('thead', {}, h('tr', {}, ['device', 'module', 'connection', 'configuration (reported vs desired)', 'last security message'].map((t) => h('th', {}, t)))), body));
  load();
}

// ------------------------------------------------------------------ routing

function route() {
  for (const c of cleanup) c();
  cleanup = [];
  main().replaceChildren();
  const hash = location.hash || '#/devices';
  const [path, query] = hash.slice(1).split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === (parts[0] === 'device' ? 'devices' : parts[0]));
  if (parts[0] === 'device' && parts[1]) viewDevice(parts[1], parts[2]);
  else if (parts[0] === 'events') viewEvents();
  else if (parts[0] === 'query') viewQuery();
  else if (parts[0] === 'security') viewSecurity();
  else viewDevices(params);
}

async function start() {
  try {
    hubInfo = await getJson('/dashboard/api/info');
    document.getElementById('hub-name').textContent = hubInfo.hubName;
  } catch (e) { toast(e.message, true); }
  openFeed();
  window.addEventListener('hashchange', route);
  route();
}

// For tests and the curious: the feed's state.
window.twinhubDashboard = { feed };
start();
