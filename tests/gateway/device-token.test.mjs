// The service REST API with tokens signed by a device's own key (docs/rest-api.md,
// "Authentication"): the clients that do this, and what stays closed to them.
// - The Azure IoT security agents in "Device" identity mode read their module's key with
//   GET /devices/{id}/modules/azureiotsecurity, sr=<host>, no skn (azure-c-shared-utility
//   HTTPAPIEX_SAS with no key name).
// - IoT Edge's identity service creates, reads, lists, updates and deletes the device's modules
//   with sr=lower-case(<host>/devices/{id}), no skn (iot-identity-service aziot-cloud-client-async).
// - Everything else (another device's modules, the device itself, the registry, twins, query,
//   statistics) is 401 IotHubUnauthorizedAccess for such a token.
// The gateway listens on a free port, so this suite needs no root.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import https from 'node:https';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { newKey, parseConnectionString, sasToken, startHub } from '../conformance/hub.mjs';

const T = { timeout: 30000 };
const API = 'api-version=2018-06-30'; // what the security agents send
const EDGE_API = 'api-version=2017-11-08-preview'; // what the IoT Edge identity service sends
const HOST = 'localhost';
const DEV = 'SecDev';
const DEV_KEY = newKey();
const DEV_KEY2 = newKey();
const OTHER = 'OtherDev';
const OTHER_KEY = newKey();
let hub;
let port;
let owner;

async function freePort() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = s.address().port;
  await new Promise((r) => s.close(r));
  return p;
}

/** One HTTPS request to the gateway; resolves to {status, headers, body, json}. */
function request(method, path, { token, body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (token) h.Authorization = token;
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      h['Content-Length'] = Buffer.byteLength(body);
    }
    const req = https.request({
      host: '127.0.0.1', port, servername: 'localhost', ca: hub.ca, method, path, headers: h, agent: false,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.setTimeout(10000, () => req.destroy(new Error(`no answer to ${method} ${path}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The hub's message in a REST error body. */
function message(r) {
  return JSON.parse(r.json.Message).message;
}

function assertUnauthorized(r, what) {
  assert.equal(r.status, 401, `${what}: ${r.body}`);
  assert.equal(r.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess', what);
  assert.equal(JSON.parse(r.json.Message).errorCode, 401002, what);
}

function identityBody(deviceId, primaryKey, secondaryKey, moduleId) {
  const b = { deviceId, authentication: { symmetricKey: { primaryKey, secondaryKey } } };
  if (moduleId) b.moduleId = moduleId;
  return JSON.stringify(b);
}

/** The security agent's token: sr = the host name, signed with the device key, no skn. */
const agentToken = (key = DEV_KEY) => sasToken(HOST, key, null);
/** IoT Edge's token: sr = the lower-cased {host}/devices/{device}, signed with the device key. */
const edgeToken = (device = DEV, key = DEV_KEY, ttl) =>
  sasToken(`${HOST}/devices/${device}`.toLowerCase(), key, null, ttl);

before(async () => {
  port = await freePort();
  hub = await startHub({ httpsPort: port });
  const ownerKey = parseConnectionString(hub.info.serviceConnectionString).SharedAccessKey;
  owner = sasToken(HOST, ownerKey, 'iothubowner');
  for (const [path, body] of [
    [`/devices/${DEV}`, identityBody(DEV, DEV_KEY, DEV_KEY2)],
    [`/devices/${DEV}/modules/azureiotsecurity`, JSON.stringify({ deviceId: DEV, moduleId: 'azureiotsecurity' })],
    [`/devices/${OTHER}`, identityBody(OTHER, OTHER_KEY, OTHER_KEY)],
    [`/devices/${OTHER}/modules/m1`, JSON.stringify({ deviceId: OTHER, moduleId: 'm1' })],
  ]) {
    const r = await request('PUT', `${path}?${API}`, { token: owner, body });
    assert.equal(r.status, 200, `${path}: ${r.body}`);
  }
});

after(async () => {
  if (hub) await hub.stop();
});

test('the security agent reads its module key with the device key (sr=<host>, no skn)', T, async () => {
  const r = await request('GET', `/devices/${DEV}/modules/azureiotsecurity?${API}`, { token: agentToken() });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.deviceId, DEV);
  assert.equal(r.json.moduleId, 'azureiotsecurity');
  assert.match(r.json.authentication.symmetricKey.primaryKey, /^[A-Za-z0-9+/]+=*$/);
  // The secondary key signs too.
  const second = await request('GET', `/devices/${DEV}/modules/azureiotsecurity?${API}`, { token: agentToken(DEV_KEY2) });
  assert.equal(second.status, 200, second.body);
  // The same key with the service API's other form, sr=<host>/devices.
  const all = await request('GET', `/devices/${DEV}/modules/azureiotsecurity?${API}`,
    { token: sasToken(`${HOST}/devices`, DEV_KEY, null) });
  assert.equal(all.status, 200, all.body);
});

test('IoT Edge creates, reads, lists, updates and deletes its modules with a lower-cased device token', T, async () => {
  const token = edgeToken();
  assert.match(token, /sr=localhost%2Fdevices%2Fsecdev&/);
  const create = await request('PUT', `/devices/${DEV}/modules/edgeAgent?${EDGE_API}`,
    { token, body: JSON.stringify({ moduleId: 'edgeAgent', deviceId: DEV, managedBy: 'iotedge' }) });
  assert.equal(create.status, 200, create.body);
  assert.equal(create.json.moduleId, 'edgeAgent');
  const key = newKey();
  const update = await request('PUT', `/devices/${DEV}/modules/edgeAgent?${EDGE_API}`, {
    token, headers: { 'If-Match': '*' }, body: identityBody(DEV, key, key, 'edgeAgent'),
  });
  assert.equal(update.status, 200, update.body);
  assert.equal(update.json.authentication.symmetricKey.primaryKey, key);
  const get = await request('GET', `/devices/${DEV}/modules/edgeAgent?${EDGE_API}`, { token });
  assert.equal(get.status, 200, get.body);
  assert.equal(get.json.authentication.symmetricKey.primaryKey, key);
  const list = await request('GET', `/devices/${DEV}/modules?${EDGE_API}`, { token });
  assert.equal(list.status, 200, list.body);
  assert.deepEqual(list.json.map((m) => m.moduleId).sort(), ['azureiotsecurity', 'edgeAgent']);
  const del = await request('DELETE', `/devices/${DEV}/modules/edgeAgent?${EDGE_API}`, { token, headers: { 'If-Match': '*' } });
  assert.equal(del.status, 204, del.body);
  const gone = await request('GET', `/devices/${DEV}/modules/edgeAgent?${EDGE_API}`, { token });
  assert.equal(gone.status, 404, gone.body);
  assert.equal(gone.headers['iothub-errorcode'], 'ModuleNotFound');
});

test("a device token is refused on another device's modules", T, async () => {
  // Signed with SecDev's key: sr=<host> names no device, so the path's device keys decide.
  for (const path of [`/devices/${OTHER}/modules`, `/devices/${OTHER}/modules/m1`]) {
    const r = await request('GET', `${path}?${API}`, { token: agentToken() });
    assertUnauthorized(r, `GET ${path} with sr=<host>`);
    assert.match(message(r), /keys of device 'OtherDev'/);
  }
  // sr names SecDev: refused before any key is looked at.
  const scoped = await request('DELETE', `/devices/${OTHER}/modules/m1?${API}`, { token: edgeToken() });
  assertUnauthorized(scoped, 'DELETE another device\'s module');
  assert.match(message(scoped), /'secdev' cannot manage the modules of device 'OtherDev'/);
  const put = await request('PUT', `/devices/${OTHER}/modules/evil?${API}`,
    { token: edgeToken(), body: JSON.stringify({ deviceId: OTHER, moduleId: 'evil' }) });
  assertUnauthorized(put, 'PUT a module on another device');
  // The other device still has exactly its module.
  const list = await request('GET', `/devices/${OTHER}/modules?${API}`, { token: owner });
  assert.deepEqual(list.json.map((m) => m.moduleId), ['m1']);
});

test('a device token is refused everywhere outside its module registry', T, async () => {
  const query = JSON.stringify({ query: 'SELECT * FROM devices' });
  const desired = JSON.stringify({ properties: { desired: { x: 1 } } });
  for (const token of [agentToken(), edgeToken()]) {
    for (const [method, path, body] of [
      ['GET', `/devices/${DEV}`],
      ['PUT', `/devices/${DEV}`, identityBody(DEV, DEV_KEY, DEV_KEY2)],
      ['DELETE', `/devices/${DEV}`],
      ['GET', '/devices'],
      ['POST', '/devices/query', query],
      ['GET', `/twins/${DEV}`],
      ['PATCH', `/twins/${DEV}`, desired],
      ['GET', `/twins/${DEV}/modules/azureiotsecurity`],
      ['PATCH', `/twins/${DEV}/modules/azureiotsecurity`, desired],
      ['POST', `/twins/${DEV}/modules/azureiotsecurity/methods`, JSON.stringify({ methodName: 'm' })],
      ['GET', '/statistics/devices'],
      ['GET', '/statistics/service'],
    ]) {
      const r = await request(method, `${path}?${API}`, { token, body });
      assertUnauthorized(r, `${method} ${path}`);
      assert.match(message(r), /DeviceConnect only/, `${method} ${path}`);
    }
  }
  // Nothing was written: the device and its twin are as the owner left them.
  const dev = await request('GET', `/devices/${DEV}?${API}`, { token: owner });
  assert.equal(dev.status, 200);
  const twin = await request('GET', `/twins/${DEV}/modules/azureiotsecurity?${API}`, { token: owner });
  assert.equal(twin.json.properties.desired.x, undefined);
});

test('wrong keys, module tokens, unknown, disabled and expired devices get 401', T, async () => {
  const path = `/devices/${DEV}/modules/azureiotsecurity?${API}`;
  const wrong = await request('GET', path, { token: agentToken(OTHER_KEY) });
  assertUnauthorized(wrong, 'another key');
  const moduleKey = (await request('GET', path, { token: owner })).json.authentication.symmetricKey.primaryKey;
  const moduleToken = sasToken(`${HOST}/devices/${DEV}/modules/azureiotsecurity`, moduleKey, null);
  const mod = await request('GET', path, { token: moduleToken });
  assertUnauthorized(mod, 'a module token');
  assert.match(message(mod), /module token cannot manage module identities/);
  const unknown = await request('GET', `/devices/nobody/modules?${API}`, { token: edgeToken('nobody') });
  assertUnauthorized(unknown, 'an unknown device');
  assert.match(message(unknown), /not registered/);
  const expired = await request('GET', path, { token: edgeToken(DEV, DEV_KEY, -120) });
  assertUnauthorized(expired, 'an expired token');
  assert.match(message(expired), /expired/);

  const off = 'OffDev';
  const offKey = newKey();
  let r = await request('PUT', `/devices/${off}?${API}`, { token: owner, body: identityBody(off, offKey, offKey) });
  assert.equal(r.status, 200, r.body);
  r = await request('PUT', `/devices/${off}?${API}`, {
    token: owner, headers: { 'If-Match': '*' },
    body: JSON.stringify({ deviceId: off, status: 'disabled' }),
  });
  assert.equal(r.status, 200, r.body);
  const disabled = await request('GET', `/devices/${off}/modules?${API}`, { token: edgeToken(off, offKey) });
  assertUnauthorized(disabled, 'a disabled device');
  assert.match(message(disabled), /disabled/);
});

test('policy tokens are unchanged: a device-scoped sr with skn is still refused', T, async () => {
  const ownerKey = parseConnectionString(hub.info.serviceConnectionString).SharedAccessKey;
  const scoped = sasToken(`${HOST}/devices/${DEV}`, ownerKey, 'iothubowner');
  const r = await request('GET', `/devices/${DEV}/modules?${API}`, { token: scoped });
  assertUnauthorized(r, 'a device-scoped policy token');
  const ok = await request('GET', `/devices/${DEV}/modules?${API}`, { token: owner });
  assert.equal(ok.status, 200, ok.body);
});
