// The HTTPS gateway's own protocol handling (docs/rest-api.md), with raw TLS clients: HTTP/1.1
// framing (pipelining, chunked bodies, 100-continue, limits, malformed input), routing and
// errors, the WebSocket handshake and framing, and REST behaviour the SDK suite does not reach
// (percent-encoded ids, top, twin replace, C2D limits, policies added at run time, identity
// updates that keep the keys). The gateway listens on a free port, so this suite needs no root
// and runs in parallel with the others.

import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { parseConnectionString, sasToken, startHub, within } from '../conformance/hub.mjs';

const T = { timeout: 30000 };
const API = 'api-version=2021-04-12';
let hub;
let port;
let ownerKey;

async function freePort() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = s.address().port;
  await new Promise((r) => s.close(r));
  return p;
}

before(async () => {
  port = await freePort();
  hub = await startHub({ httpsPort: port });
  assert.equal(hub.info.httpsPort, port);
  ownerKey = parseConnectionString(hub.info.serviceConnectionString).SharedAccessKey;
});

after(async () => {
  if (hub) await hub.stop();
});

function token(policy = 'iothubowner', key = ownerKey) {
  return sasToken('localhost', key, policy);
}

/** A raw TLS connection to the gateway that collects everything it receives. */
async function raw() {
  const sock = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: hub.ca });
  await within(10000, once(sock, 'secureConnect'), 'the TLS handshake');
  const conn = { sock, data: Buffer.alloc(0), closed: false };
  sock.on('data', (d) => { conn.data = Buffer.concat([conn.data, d]); });
  sock.on('close', () => { conn.closed = true; });
  sock.on('error', () => {});
  conn.until = (pred, what) => within(10000, (async () => {
    while (!pred(conn)) {
      if (conn.closed && !pred(conn)) throw new Error(`connection closed before ${what}; got ${conn.data}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  })(), what);
  return conn;
}

/** Split complete HTTP responses (Content-Length framed) off the front of `buf`. */
function responses(buf) {
  const out = [];
  let text = buf.toString('latin1');
  for (;;) {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = text.slice(0, end);
    const m = /content-length: (\d+)/i.exec(head);
    const len = m ? Number(m[1]) : 0;
    if (text.length < end + 4 + len) break;
    const status = Number(head.split(' ')[1]);
    const headers = Object.fromEntries(head.split('\r\n').slice(1).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
    }));
    out.push({ status, headers, body: text.slice(end + 4, end + 4 + len) });
    text = text.slice(end + 4 + len);
  }
  return out;
}

function count(n) {
  return (c) => responses(c.data).length >= n;
}

/** One request on a fresh connection; resolves to {status, headers, body, json}. */
async function request(method, path, { headers = {}, body } = {}) {
  const c = await raw();
  let head = `${method} ${path} HTTP/1.1\r\nHost: localhost\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  if (body !== undefined) head += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  c.sock.write(head + '\r\n' + (body ?? ''));
  await c.until(count(1), `the answer to ${method} ${path}`);
  c.sock.destroy();
  const r = responses(c.data)[0];
  try { r.json = JSON.parse(r.body); } catch { r.json = undefined; }
  return r;
}

function inner(r) {
  return JSON.parse(r.json.Message);
}

// ------------------------------------------------------------------------------- HTTP framing

test('pipelined requests are answered in order; Connection: close ends the connection', T, async () => {
  const c = await raw();
  c.sock.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'
    + 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n'
    + 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await c.until(count(3), 'three answers');
  await c.until((x) => x.closed, 'the server to close');
  assert.deepEqual(responses(c.data).map((r) => r.status), [200, 404, 200]);
  assert.equal(responses(c.data)[2].headers.connection, 'close');
});

test('HTTP/1.0 gets its answer and the connection closes', T, async () => {
  const c = await raw();
  c.sock.write('GET /health HTTP/1.0\r\n\r\n');
  await c.until((x) => x.closed, 'the server to close');
  assert.equal(responses(c.data)[0].status, 200);
});

test('a chunked body with Expect: 100-continue', T, async () => {
  const c = await raw();
  const body = JSON.stringify({ properties: { desired: { chunked: 'yes' } } });
  c.sock.write(`PATCH /twins/dev-device?${API} HTTP/1.1\r\nHost: x\r\nAuthorization: ${token()}\r\n`
    + 'Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n');
  await c.until((x) => x.data.toString().startsWith('HTTP/1.1 100 Continue\r\n\r\n'), '100 Continue');
  c.data = c.data.subarray('HTTP/1.1 100 Continue\r\n\r\n'.length);
  const half = body.length >> 1;
  c.sock.write(`${half.toString(16)};ext=1\r\n${body.slice(0, half)}\r\n`);
  c.sock.write(`${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\nX-Trailer: t\r\n\r\n`);
  await c.until(count(1), 'the answer');
  const r = responses(c.data)[0];
  assert.equal(r.status, 200, r.body);
  assert.equal(JSON.parse(r.body).properties.desired.chunked, 'yes');
  c.sock.destroy();
});

test('malformed and oversized requests get 400 or 413 and a closed connection', T, async () => {
  for (const [what, bytes, status] of [
    ['a bad request line', 'GARBAGE\r\n\r\n', 400],
    ['HTTP/2.0', 'GET /health HTTP/2.0\r\n\r\n', 400],
    ['a folded header', 'GET /health HTTP/1.1\r\nA: b\r\n c\r\n\r\n', 400],
    ['a 20 KB header', `GET /health HTTP/1.1\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`, 400],
    ['two Content-Lengths', 'POST /devices/query HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400],
    ['a 300 KB body', `PUT /devices/x?${API} HTTP/1.1\r\nContent-Length: 300000\r\n\r\n`, 413],
  ]) {
    const c = await raw();
    c.sock.write(bytes);
    await c.until((x) => x.closed, `the server to close after ${what}`);
    const r = responses(c.data)[0];
    assert.equal(r?.status, status, what);
    assert.equal(r.headers.connection, 'close', what);
  }
});

// ------------------------------------------------------------------------------- routing

test('unknown paths are 404000, wrong methods 405000 with Allow', T, async () => {
  const nf = await request('GET', `/jobs?${API}`, { headers: { Authorization: token() } });
  assert.equal(nf.status, 404);
  assert.equal(nf.headers['iothub-errorcode'], 'NotFound');
  assert.equal(inner(nf).errorCode, 404000);
  const na = await request('POST', `/devices/dev-device?${API}`, { headers: { Authorization: token() } });
  assert.equal(na.status, 405);
  assert.equal(na.headers.allow, 'GET, PUT, DELETE');
  assert.equal(inner(na).errorCode, 405000);
});

test('percent-encoded ids, top, and the trailing-slash list', T, async () => {
  const auth = { Authorization: token(), 'Content-Type': 'application/json' };
  const put = await request('PUT', `/devices/enc%2Bid%3A1?${API}`, { headers: auth, body: '{}' });
  assert.equal(put.status, 200, put.body);
  assert.equal(put.json.deviceId, 'enc+id:1');
  assert.equal(put.headers.etag, `"${put.json.etag}"`);
  const get = await request('GET', `/twins/enc%2Bid%3A1?${API}`, { headers: auth });
  assert.equal(get.json.deviceId, 'enc+id:1');
  const top = await request('GET', `/devices/?top=1&${API}`, { headers: auth });
  assert.equal(top.json.length, 1);
  const bad = await request('GET', `/devices?top=zero&${API}`, { headers: auth });
  assert.equal(bad.status, 400);
  const mismatch = await request('PUT', `/devices/other?${API}`, { headers: auth, body: '{"deviceId":"enc+id:1"}' });
  assert.equal(mismatch.status, 400);
  const notJson = await request('PUT', `/devices/other?${API}`, { headers: auth, body: '{' });
  assert.equal(notJson.status, 400);
  assert.equal(notJson.headers['iothub-errorcode'], 'IotHubFormatError');
});

test('twin PUT replaces desired; reported properties are refused', T, async () => {
  const auth = { Authorization: token(), 'Content-Type': 'application/json' };
  const id = `tw-${randomUUID().slice(0, 6)}`;
  await request('PUT', `/devices/${id}?${API}`, { headers: auth, body: '{}' });
  await request('PATCH', `/twins/${id}?${API}`, { headers: auth, body: '{"properties":{"desired":{"a":1,"b":2}}}' });
  const put = await request('PUT', `/twins/${id}?${API}`, { headers: auth, body: '{"properties":{"desired":{"c":3}},"properties2":1}' });
  assert.equal(put.status, 200, put.body);
  const d = put.json.properties.desired;
  assert.equal(d.c, 3);
  assert.equal(d.a, undefined);
  const rep = await request('PATCH', `/twins/${id}?${API}`, { headers: auth, body: '{"properties":{"reported":{"x":1}}}' });
  assert.equal(rep.status, 400);
  const stale = await request('PATCH', `/twins/${id}?${API}`, {
    headers: { ...auth, 'If-Match': '"AAAAAAAAAAE="' }, body: '{"tags":{"t":1}}',
  });
  assert.equal(stale.status, 412);
  assert.equal(stale.headers['iothub-errorcode'], 'PreconditionFailed');
});

test('C2D endpoint: limits and refusals', T, async () => {
  const auth = { Authorization: token() };
  const big = await request('POST', '/twinhub/devices/dev-device/messages', { headers: auth, body: 'x'.repeat(70000) });
  assert.equal(big.status, 413);
  assert.equal(inner(big).errorCode, 413001);
  const missing = await request('POST', '/twinhub/devices/nobody/messages', { headers: auth, body: 'x' });
  assert.equal(missing.status, 404);
  const ok = await request('POST', '/twinhub/devices/dev-device/messages', { headers: auth, body: '' });
  assert.equal(ok.status, 200, ok.body);
});

test('a policy imported at run time is accepted (the hub decides every token)', T, async () => {
  const svc = await hub.service();
  const key = randomBytes(32).toString('base64');
  const name = `p${randomUUID().slice(0, 6)}`;
  await svc.ok({
    command: 'importRegistry',
    registry: { policies: [{ keyName: name, primaryKey: key, secondaryKey: key, rights: 'RegistryRead' }] },
  });
  const r = await request('GET', `/devices/dev-device?${API}`, { headers: { Authorization: token(name, key) } });
  assert.equal(r.status, 200, r.body);
  const w = await request('DELETE', `/devices/dev-device?${API}`, { headers: { Authorization: token(name, key) } });
  assert.equal(w.status, 401);
});

test('credentials are decided before the request is looked at: 401 comes before 400', T, async () => {
  const wrongKey = token('iothubowner', randomBytes(32).toString('base64'));
  const cases = [
    ['PUT', `/devices/held-1?${API}`, '{'],
    ['GET', `/devices?top=zero&${API}`, undefined],
    ['PUT', `/devices/held-2?${API}`, '{"deviceId":"other"}'],
    ['PATCH', `/twins/dev-device?${API}`, '{"properties":{"reported":{"x":1}}}'],
  ];
  for (const [method, path, body] of cases) {
    for (const [who, headers] of [['no token', {}], ['a wrong key', { Authorization: wrongKey }]]) {
      const r = await request(method, path, { headers, body });
      assert.equal(r.status, 401, `${method} ${path} with ${who}: ${r.body}`);
      assert.equal(inner(r).errorCode, 401002);
    }
    const ok = await request(method, path, { headers: { Authorization: token() }, body });
    assert.equal(ok.status, 400, `${method} ${path} with the owner's token: ${ok.body}`);
  }
  // A policy without the endpoint's right is refused before its bad body is read.
  const ro = await request('PUT', `/devices/held-3?${API}`, { headers: { Authorization: token('registryRead') }, body: '{' });
  assert.equal(ro.status, 401, ro.body);
  assert.match(inner(ro).message, /does not grant RegistryWrite, which PUT \/devices\/\{\} needs/);
  // A request held for the hub's decision keeps its place in a pipeline.
  const c = await raw();
  c.sock.write(`PUT /devices/held-4?${API} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{`
    + 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await c.until(count(2), 'two answers');
  assert.deepEqual(responses(c.data).map((r) => r.status), [401, 200]);
  c.sock.destroy();
  // A NUL byte cannot travel to the hub in the control API's JSON: refused at the gateway.
  const n = await raw();
  n.sock.write(Buffer.from(`GET /devices/dev-device?${API} HTTP/1.1\r\nHost: x\r\nAuthorization: `
    + `${token()}\u0000x\r\nConnection: close\r\n\r\n`, 'latin1'));
  await n.until(count(1), 'the answer');
  const nul = responses(n.data)[0];
  assert.equal(nul.status, 401);
  assert.match(JSON.parse(JSON.parse(nul.body).Message).message, /NUL byte/);
  n.sock.destroy();
  // Nothing was created.
  for (const id of ['held-1', 'held-2', 'held-3', 'held-4']) {
    const g = await request('GET', `/devices/${id}?${API}`, { headers: { Authorization: token() } });
    assert.equal(g.status, 404, id);
  }
});

test('an identity update with the same keys keeps the device connected', T, async () => {
  const svc = await hub.service();
  const auth = { Authorization: token(), 'Content-Type': 'application/json' };
  const id = `keep-${randomUUID().slice(0, 6)}`;
  const created = await request('PUT', `/devices/${id}?${API}`, { headers: auth, body: '{}' });
  const key = created.json.authentication.symmetricKey.primaryKey;
  const device = await hub.deviceClient(hub.connectionString(id, key));
  await within(20000, device.open(), 'Client.open()');
  await svc.waitEvent((e) => e.kind === 'connected' && e.deviceId === id);
  const same = await request('PUT', `/devices/${id}?${API}`, {
    headers: { ...auth, 'If-Match': '"*"' }, body: JSON.stringify({ ...created.json, statusReason: 'same keys' }),
  });
  assert.equal(same.status, 200, same.body);
  assert.deepEqual(same.json.authentication.symmetricKey, created.json.authentication.symmetricKey);
  const check = await svc.ok({ command: 'getDevice', deviceId: id });
  assert.equal(check.connectionState, 'Connected');
  assert.equal(svc.events.some((e) => e.kind === 'disconnected' && e.deviceId === id), false);
  const stale = await request('PUT', `/devices/${id}?${API}`, {
    headers: { ...auth, 'If-Match': '"MQ=="' }, body: '{}',
  });
  assert.equal(stale.status, 412);
  const gone = await request('PUT', `/devices/nobody-${randomUUID().slice(0, 4)}?${API}`, {
    headers: { ...auth, 'If-Match': '*' }, body: '{}',
  });
  assert.equal(gone.status, 404);
  await device.close();
});

// ------------------------------------------------------------------------------- WebSockets

function wsRequest(extra = {}) {
  const key = randomBytes(16).toString('base64');
  const headers = {
    Host: 'localhost', Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Key': key,
    'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'mqtt', ...extra,
  };
  let text = 'GET /$iothub/websocket?iothub-no-client-cert=true HTTP/1.1\r\n';
  for (const [k, v] of Object.entries(headers)) if (v !== null) text += `${k}: ${v}\r\n`;
  return { text: text + '\r\n', key };
}

function frame(opcode, payload, mask = true) {
  const len = payload.length;
  const head = [0x80 | opcode];
  if (len < 126) head.push((mask ? 0x80 : 0) | len);
  else head.push((mask ? 0x80 : 0) | 126, len >> 8, len & 0xff);
  const m = randomBytes(4);
  const body = Buffer.from(payload);
  if (mask) for (let i = 0; i < body.length; i++) body[i] ^= m[i & 3];
  return Buffer.concat([Buffer.from(head), mask ? m : Buffer.alloc(0), body]);
}

/** Server frames after the 101 head: [{opcode, payload}]. */
function frames(buf) {
  const out = [];
  let b = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
  while (b.length >= 2) {
    let len = b[1] & 0x7f;
    let at = 2;
    if (len === 126) { len = b.readUInt16BE(2); at = 4; }
    if (b.length < at + len) break;
    out.push({ opcode: b[0] & 0x0f, payload: b.subarray(at, at + len) });
    b = b.subarray(at + len);
  }
  return out;
}

async function upgraded(extra) {
  const c = await raw();
  const { text, key } = wsRequest(extra);
  c.sock.write(text);
  await c.until((x) => x.data.includes('\r\n\r\n'), 'the handshake answer');
  return { c, key, head: c.data.toString('latin1').split('\r\n\r\n')[0] };
}

test('WebSocket handshake: accept key, subprotocols, refusals', T, async () => {
  const { c, key, head } = await upgraded();
  assert.match(head, /^HTTP\/1\.1 101 /);
  const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  assert.match(head, new RegExp(`Sec-WebSocket-Accept: ${accept.replace(/[+/]/g, '\\$&')}\r?$`, 'm'));
  assert.match(head, /Sec-WebSocket-Protocol: mqtt$/m);
  c.sock.destroy();
  const v31 = await upgraded({ 'Sec-WebSocket-Protocol': 'foo, mqttv3.1' });
  assert.match(v31.head, /Sec-WebSocket-Protocol: mqttv3\.1$/m);
  v31.c.sock.destroy();
  for (const [what, extra, status] of [
    ['no subprotocol', { 'Sec-WebSocket-Protocol': null }, 400],
    ['AMQP', { 'Sec-WebSocket-Protocol': 'AMQPWSB10' }, 400],
    ['version 8', { 'Sec-WebSocket-Version': '8' }, 426],
    ['no upgrade', { Upgrade: null }, 400],
  ]) {
    const r = await upgraded(extra);
    assert.match(r.head, new RegExp(`^HTTP/1\\.1 ${status} `), what);
    r.c.sock.destroy();
  }
});

test('WebSocket framing: ping, close, unmasked frames', T, async () => {
  const a = await upgraded();
  a.c.sock.write(frame(9, Buffer.from('hi')));
  await a.c.until((x) => frames(x.data).length >= 1, 'the pong');
  assert.deepEqual(frames(a.c.data)[0], { opcode: 10, payload: Buffer.from('hi') });
  a.c.sock.write(frame(8, Buffer.from([0x03, 0xe8])));
  await a.c.until((x) => x.closed, 'the close');
  assert.deepEqual(frames(a.c.data)[1], { opcode: 8, payload: Buffer.from([0x03, 0xe8]) });

  const b = await upgraded();
  b.c.sock.write(frame(2, Buffer.from([0x10, 0]), false));
  await b.c.until((x) => x.closed, 'the close after an unmasked frame');
  const f = frames(b.c.data);
  assert.equal(f[0].opcode, 8);
  assert.equal(f[0].payload.readUInt16BE(0), 1002);
});

test('MQTT over the WebSocket: a refused CONNECT gets CONNACK 5, then a close frame', T, async () => {
  const { c } = await upgraded();
  const str = (s) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]); };
  const vh = Buffer.concat([str('MQTT'), Buffer.from([4, 0xc2, 0, 60])]);
  const pl = Buffer.concat([str('dev-device'), str(`${hub.hostName}/dev-device/?${API}`),
    str('SharedAccessSignature sr=x&sig=y&se=1')]);
  const pkt = Buffer.concat([Buffer.from([0x10, vh.length + pl.length]), vh, pl]);
  // One MQTT packet cut into many binary messages: the bridge carries a byte stream.
  for (let i = 0; i < pkt.length; i += 5) c.sock.write(frame(2, pkt.subarray(i, i + 5)));
  await c.until((x) => x.closed, 'the close');
  const f = frames(c.data);
  const mqtt = Buffer.concat(f.filter((x) => x.opcode === 2).map((x) => x.payload));
  assert.deepEqual([...mqtt], [0x20, 0x02, 0x00, 0x05]);
  assert.equal(f.at(-1).opcode, 8);
});
