// Dashboard benchmark (docs/performance.md "Dashboard"): run by scripts/bench.sh --only dashboard
// or directly: node tests/bench/dashboard_bench.mjs TWINHUB_BIN [DEVICES] [RATE] [SECONDS].
// Node built-ins only. Not a test: it prints numbers, with a baseline measured in the same run.
//
// 1. Device list: a registry of DEVICES (10,000) imported with `twinhub import`; the dashboard's
//    page of 100 (first, middle, a search) against the REST API's largest page
//    (GET /devices?top=1000, what a client that pages by itself would fetch ten times).
// 2. Event feed: DEVICES/1000 devices... (10) send RATE telemetry messages per second in total
//    over plain MQTT for SECONDS; one feed (/dashboard/events) counts what it gets, how many
//    messages (batches) that took, and the delay from publish to arrival.

import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [bin, devicesArg, rateArg, secondsArg] = process.argv.slice(2);
if (!bin) { console.error('usage: dashboard_bench.mjs TWINHUB_BIN [DEVICES] [RATE] [SECONDS]'); process.exit(2); }
const DEVICES = Number(devicesArg || 10000);
const RATE = Number(rateArg || 1000);
const SECONDS = Number(secondsArg || 5);
const SENDERS = 10;

async function freePort() {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = s.address().port;
  await new Promise((r) => s.close(r));
  return p;
}

const dir = mkdtempSync(join(tmpdir(), 'twinhub-dash-bench-'));
const [mqttPort, mqttsPort, httpsPort] = [await freePort(), await freePort(), await freePort()];
const info = join(dir, 'info.json');
const serve = spawn(bin, ['serve', '--mqtt-port', mqttPort, '--mqtts-port', mqttsPort, '--https-port', httpsPort,
  '--cert-dir', join(dir, 'certs'), '--info-file', info].map(String), { stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
serve.stdout.on('data', (d) => { out += d; });
while (!out.includes('twinhub: ready')) await once(serve.stdout, 'data');
const hub = JSON.parse(readFileSync(info, 'utf8'));
const ca = readFileSync(hub.caFile);
const token = new URL(hub.dashboardUrl).searchParams.get('token');
const cookie = `twinhub-dashboard-${httpsPort}=${token}`;
const cs = Object.fromEntries(hub.serviceConnectionString.split(';').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
const se = Math.floor(Date.now() / 1000) + 3600;
const sr = encodeURIComponent(hub.hubName);
const sig = createHmac('sha256', Buffer.from(cs.SharedAccessKey, 'base64')).update(`${sr}\n${se}`).digest('base64');
const sas = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${cs.SharedAccessKeyName}`;

function http(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const h = body ? { ...headers, 'Content-Length': Buffer.byteLength(body) } : headers;
    const req = request(`https://127.0.0.1:${httpsPort}${path}`, { method, ca, headers: h, agent: keepAlive }, (res) => {
      let n = 0;
      res.on('data', (d) => { n += d.length; });
      res.on('end', () => resolve({ status: res.statusCode, bytes: n }));
    });
    req.on('error', reject);
    req.setNoDelay(true);
    req.end(body);
  });
}
import { Agent } from 'node:https';
// One connection, as a browser keeps it; noDelay so that a POST's head and body are not held
// back by Nagle's algorithm waiting for the server's delayed ACK.
const keepAlive = new Agent({ keepAlive: true, maxSockets: 1, ca, noDelay: true });

async function timeIt(label, n, fn) {
  const ms = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const r = await fn(i);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== 200) throw new Error(`${label}: HTTP ${r.status}`);
    bytes = r.bytes;
  }
  ms.sort((a, b) => a - b);
  const med = ms[Math.floor(n / 2)];
  console.log(`${label.padEnd(58)} median ${med.toFixed(1).padStart(7)} ms  p90 ${ms[Math.floor(n * 0.9)].toFixed(1).padStart(7)} ms  ${bytes} bytes`);
  return med;
}

// ---- 1. the device list
const doc = { devices: [] };
for (let i = 0; i < DEVICES; i++) doc.devices.push({ deviceId: `bench-${String(i).padStart(5, '0')}` });
writeFileSync(join(dir, 'registry.json'), JSON.stringify(doc));
let t0 = Date.now();
const imp = spawnSync(bin, ['import', join(dir, 'registry.json'), `--cert-dir=${join(dir, 'certs')}`, '--timeout', '120'], { encoding: 'utf8' });
if (imp.status !== 0) throw new Error(`twinhub import failed: ${imp.stderr}`);
console.log(`imported ${DEVICES} devices in ${Date.now() - t0} ms`);
const cmd = (c) => http('POST', '/dashboard/api/command', { Cookie: cookie, 'Content-Type': 'application/json' }, JSON.stringify(c));
const N = 30;
const base = await timeIt('baseline: REST GET /devices?top=1000 (1,000 identities)', N,
  () => http('GET', '/devices?top=1000&api-version=2021-04-12', { Authorization: sas }));
const first = await timeIt(`dashboard: first page of 100 of ${DEVICES}`, N, () => cmd({ command: 'listDeviceSummaries', top: 100 }));
const middle = await timeIt(`dashboard: page of 100 at ${DEVICES / 2}`, N, () => cmd({ command: 'listDeviceSummaries', top: 100, skip: DEVICES / 2 }));
const search = await timeIt(`dashboard: search '0042' over ${DEVICES}`, N, () => cmd({ command: 'listDeviceSummaries', top: 100, search: '0042' }));
await timeIt('reference: REST GET /statistics/devices (one control command)', N,
  () => http('GET', '/statistics/devices?api-version=2021-04-12', { Authorization: sas }));
await timeIt('reference: dashboard getStatistics (one control command)', N, () => cmd({ command: 'getStatistics' }));
const health = await timeIt('baseline: GET /health (the smallest HTTPS request)', N, () => http('GET', '/health', {}));
console.log(`ratios: a dashboard page costs ${(first / base).toFixed(4)} of REST top=1000 and ${(first / health).toFixed(1)}x a /health request`);

// ---- 2. the event feed under telemetry load
function mqttString(s) { const b = Buffer.from(s); return Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), b]); }
function remaining(n) { const out = []; do { let d = n % 128; n = Math.floor(n / 128); if (n) d |= 128; out.push(d); } while (n); return Buffer.from(out); }
function packet(type, body) { return Buffer.concat([Buffer.from([type]), remaining(body.length), body]); }
async function mqttDevice(id) {
  // Devices imported without keys got generated ones: read them with the CLI.
  const show = spawnSync(bin, ['device', 'show', id, '--json', `--cert-dir=${join(dir, 'certs')}`], { encoding: 'utf8' });
  const k = JSON.parse(show.stdout).authentication.symmetricKey.primaryKey;
  const res = encodeURIComponent(`${hub.hubName}/devices/${id}`);
  const dse = Math.floor(Date.now() / 1000) + 3600;
  const dsig = createHmac('sha256', Buffer.from(k, 'base64')).update(`${res}\n${dse}`).digest('base64');
  const pw = `SharedAccessSignature sr=${res}&sig=${encodeURIComponent(dsig)}&se=${dse}`;
  const sock = connect(mqttPort, '127.0.0.1');
  await once(sock, 'connect');
  const vh = Buffer.concat([mqttString('MQTT'), Buffer.from([4, 0xC2, 0, 60])]);
  sock.write(packet(0x10, Buffer.concat([vh, mqttString(id), mqttString(`${hub.hubName}/${id}/?api-version=2021-04-12`), mqttString(pw)])));
  const [ack] = await once(sock, 'data');
  if (ack[0] !== 0x20 || ack[3] !== 0) throw new Error(`${id}: CONNACK ${ack.toString('hex')}`);
  return { sock, topic: mqttString(`devices/${id}/messages/events/`) };
}
const senders = [];
for (let i = 0; i < SENDERS; i++) senders.push(await mqttDevice(`bench-${String(i).padStart(5, '0')}`));

const feed = { events: 0, batches: 0, dropped: 0, delays: [] };
const es = request(`https://127.0.0.1:${httpsPort}/dashboard/events`, { ca, headers: { Cookie: cookie } });
es.end();
const [res] = await once(es, 'response');
let pending = '';
res.setEncoding('utf8').on('data', (d) => {
  pending += d;
  let i;
  while ((i = pending.indexOf('\n\n')) >= 0) {
    const block = pending.slice(0, i);
    pending = pending.slice(i + 2);
    if (!block.startsWith('data: ')) continue;
    const msg = JSON.parse(block.slice(6));
    const now = Date.now();
    feed.batches++;
    feed.dropped += msg.dropped;
    for (const r of msg.events) {
      if (r.kind !== 'telemetry') continue;
      feed.events++;
      feed.delays.push(now - JSON.parse(r.data.body).t);
    }
  }
});
await new Promise((r) => setTimeout(r, 500)); // the feed's subscription is made when it opens

const total = RATE * SECONDS;
t0 = Date.now();
let sent = 0;
await new Promise((resolve) => {
  const tick = setInterval(() => {
    const due = Math.min(total, Math.floor(((Date.now() - t0) / 1000) * RATE));
    while (sent < due) {
      const s = senders[sent % SENDERS];
      const payload = Buffer.from(JSON.stringify({ t: Date.now(), temperature: 20 + (sent % 10), n: sent }));
      s.sock.write(packet(0x30, Buffer.concat([s.topic, payload])));
      sent++;
    }
    if (sent >= total) { clearInterval(tick); resolve(); }
  }, 10);
});
const sendSeconds = (Date.now() - t0) / 1000;
const deadline = Date.now() + 5000;
while (feed.events + feed.dropped < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
feed.delays.sort((a, b) => a - b);
const q = (p) => feed.delays[Math.min(feed.delays.length - 1, Math.floor(feed.delays.length * p))];
console.log(`feed: ${sent} telemetry messages in ${sendSeconds.toFixed(1)} s (${(sent / sendSeconds).toFixed(0)}/s) from ${SENDERS} devices`);
console.log(`feed: received ${feed.events}, dropped ${feed.dropped}, in ${feed.batches} messages (${(feed.batches / sendSeconds).toFixed(1)}/s, ${(feed.events / Math.max(1, feed.batches)).toFixed(0)} events each)`);
console.log(`feed: publish-to-browser delay median ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${feed.delays[feed.delays.length - 1]} ms`);

for (const s of senders) s.sock.destroy();
res.destroy();
keepAlive.destroy();
serve.kill('SIGTERM');
await once(serve, 'exit');
rmSync(dir, { recursive: true, force: true });
