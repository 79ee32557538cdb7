// The HTTPS gateway (docs/rest-api.md) with the official Azure IoT Node SDKs: the service SDK
// azure-iothub (Registry, Twin, query paging, Client.invokeDeviceMethod) over the REST API,
// and azure-iot-device over MqttWs (MQTT over WebSockets), both on 127.0.0.1:443 as the SDKs
// require; plus refusals and error bodies checked with raw HTTPS requests.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import {
  Message, desiredSubscribed, methodsSubscribed, c2dSubscribed, mqtt, newKey, nextEvent,
  parseConnectionString, sasToken, within,
} from './hub.mjs';
import {
  GATEWAY_HOST, ServiceSdk, innerError, ownerKey, rest, startGatewayHub, wsClient,
} from './service.mjs';

const T = { timeout: 60000 };
const API = 'api-version=2021-04-12';
let hub;
let sdk;
let svc;

before(async () => {
  // MQTT/TLS on the SDKs' own port, as with `twinhub serve` and no options, so that the
  // printed connection strings are the default ones (no GatewayHostName).
  hub = await startGatewayHub({ mqttsPort: 8883 });
  sdk = await ServiceSdk.start(hub);
  svc = await hub.service();
});

after(async () => {
  if (sdk) await sdk.close();
  if (hub) await hub.stop();
});

function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A new device made with the service SDK; resolves to {id, key}. */
async function newDevice(prefix = 'svc') {
  const id = unique(prefix);
  const res = await sdk.registry('create', { deviceId: id });
  return { id, key: res.body.authentication.symmetricKey.primaryKey };
}

function ownerToken(ttl = 3600) {
  return sasToken(GATEWAY_HOST, ownerKey(hub), 'iothubowner', ttl);
}

async function assertRejects(promise, sdkName, status) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.sdkName, sdkName, `expected ${sdkName}, got ${err.message}`);
    if (status) assert.equal(err.status, status);
    return true;
  });
}

/** The connection strings of serve's ready banner, by label (`device`, `module`, `service`). */
function printedConnectionStrings(stdout) {
  const out = {};
  for (const line of stdout.split('\n')) {
    const m = /^ {4}(\w+) +(HostName=\S+)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

const twinhub = (...args) => promisify(execFile)(process.env.TWINHUB_BIN, args);

test('the printed connection strings work as they are with the device and service SDKs', T, async () => {
  const printed = printedConnectionStrings(hub.out.stdout);
  assert.deepEqual(Object.keys(printed).sort(), ['device', 'module', 'service'], hub.out.stdout);
  for (const cs of Object.values(printed)) {
    // HostName alone reaches the hub: it resolves, it is in the server certificate, and the
    // embedded C SDK and the security agents dial HostName:8883 with nothing else to go on.
    const p = parseConnectionString(cs);
    assert.equal(p.HostName, '127.0.0.1', cs);
    assert.equal(p.GatewayHostName, undefined, cs);
  }
  assert.equal(hub.info.serviceConnectionString, printed.service);
  assert.equal(hub.info.restConnectionString, printed.service, 'the old key is the same string');

  // The device and the module with azure-iot-device over Mqtt (TLS, trusting the printed CA).
  const device = await hub.deviceClient(printed.device);
  await within(20000, device.open(), 'Client.open() with the printed device string');
  device.onDeviceMethod('ping', (req, res) => res.send(200, { pong: req.payload }, () => {}));
  await methodsSubscribed(device);
  const mod = await hub.moduleClient(printed.module);
  await within(20000, mod.open(), 'ModuleClient.open() with the printed module string');
  const modTwin = await within(10000, mod.getTwin(), 'the module twin');
  const marker = randomUUID();
  await new Promise((resolve, reject) => {
    modTwin.properties.reported.update({ printed: marker }, (e) => (e ? reject(e) : resolve()));
  });

  // The service string with azure-iothub: Registry and Client over REST on 443.
  const printedSdk = await ServiceSdk.start(hub, printed.service);
  try {
    const got = await printedSdk.registry('get', 'dev-device');
    assert.equal(got.body.connectionState, 'Connected');
    const mt = await printedSdk.registry('getModuleTwin', 'dev-device', 'dev-module');
    assert.equal(mt.body.properties.reported.printed, marker);
    const r = await printedSdk.client('invokeDeviceMethod', 'dev-device',
      { methodName: 'ping', payload: 7, responseTimeoutInSeconds: 10 });
    assert.deepEqual(r.body, { status: 200, payload: { pong: 7 } });
  } finally {
    await printedSdk.close();
  }

  // The same string with twinhub's own CLI (the control API over MQTT, dialling HostName).
  const stats = await twinhub('stats', '--json', '--connection-string', printed.service,
    '--port', String(hub.info.mqttPort));
  assert.ok(JSON.parse(stats.stdout).connectedDeviceCount >= 1, stats.stdout);

  // `twinhub device create` prints a connection string by the same rule.
  const infoFile = hub.args[hub.args.indexOf('--info-file') + 1];
  const id = unique('printed');
  const created = await twinhub('device', 'create', id, '--hub', infoFile);
  const line = created.stdout.split('\n').find((l) => /^\s*connection string\s/.test(l));
  assert.ok(line, created.stdout);
  const cs = line.replace(/^\s*connection string\s+/, '').trim();
  assert.equal(parseConnectionString(cs).HostName, '127.0.0.1', cs);
  assert.equal(parseConnectionString(cs).GatewayHostName, undefined, cs);
  const fresh = await hub.deviceClient(cs);
  await within(20000, fresh.open(), 'Client.open() with the string `device create` printed');
  const got = await sdk.registry('get', id);
  assert.equal(got.body.connectionState, 'Connected');
  await Promise.all([device.close(), mod.close(), fresh.close()]);
});

test('GET /health answers healthy without a token', T, async () => {
  const res = await rest(hub, 'GET', '/health');
  assert.equal(res.status, 200);
  assert.deepEqual(res.json, { status: 'healthy', broker: 'up', gateway: 'up' });
});

test('Registry creates, gets, lists, updates and deletes a device', T, async () => {
  const id = unique('crud');
  const created = await sdk.registry('create', { deviceId: id });
  assert.equal(created.status, 200);
  assert.equal(created.body.deviceId, id);
  assert.equal(created.body.status, 'enabled');
  const keys = created.body.authentication.symmetricKey;
  assert.ok(keys.primaryKey && keys.secondaryKey, 'the hub generates both keys');
  assert.equal(created.etag, `"${created.body.etag}"`);

  const got = await sdk.registry('get', id);
  assert.equal(got.body.deviceId, id);
  assert.deepEqual(got.body.authentication.symmetricKey, keys);

  const list = await sdk.registry('list');
  const ids = list.body.map((d) => d.deviceId);
  assert.ok(ids.includes(id) && ids.includes('dev-device'), `list has ${ids}`);

  const updated = await sdk.registry('update', { ...got.body, status: 'disabled' });
  assert.equal(updated.body.status, 'disabled');
  assert.deepEqual(updated.body.authentication.symmetricKey, keys, 'keys sent back unchanged stay');
  assert.notEqual(updated.body.etag, got.body.etag);

  await assertRejects(sdk.registry('create', { deviceId: id }), 'DeviceAlreadyExistsError', 409);

  const deleted = await sdk.registry('delete', id);
  assert.equal(deleted.status, 204);
  await assertRejects(sdk.registry('get', id), 'DeviceNotFoundError', 404);
});

test('getTwin and updateTwin with the twin etag; a stale etag is refused', T, async () => {
  const { id } = await newDevice('twin');
  const twin = await sdk.registry('getTwin', id);
  assert.equal(twin.body.deviceId, id);
  assert.equal(twin.etag, `"${twin.body.etag}"`);
  const etag = twin.body.etag;

  const patched = await sdk.registry('updateTwin', id,
    { tags: { site: 'lab' }, properties: { desired: { interval: 5 } } }, etag);
  assert.equal(patched.body.tags.site, 'lab');
  assert.equal(patched.body.properties.desired.interval, 5);
  assert.equal(patched.body.properties.desired.$version, twin.body.properties.desired.$version + 1);
  assert.notEqual(patched.body.etag, etag);

  await assertRejects(sdk.registry('updateTwin', id, { tags: { site: 'stale' } }, etag),
    'InvalidEtagError', 412);
  const after1 = await sdk.registry('getTwin', id);
  assert.equal(after1.body.tags.site, 'lab', 'the refused patch changed nothing');

  const forced = await sdk.registry('updateTwin', id, { tags: { site: 'any' } }, '*');
  assert.equal(forced.body.tags.site, 'any');
});

test('a twin read and sent back whole: reported $metadata/$version pass, a reported value is refused', T, async () => {
  // The C# SDK's UpdateTwinAsync(twin from GetTwinAsync) and the az CLI's generic update send
  // the read twin back, properties.reported included; the hub writes only tags and desired.
  const { id } = await newDevice('whole');
  const read = (await sdk.registry('getTwin', id)).body;
  assert.ok(read.properties.reported.$metadata, 'a read twin carries reported $metadata');
  const whole = {
    deviceId: id, etag: read.etag, version: read.version, tags: { site: 'back' },
    properties: { desired: { ...read.properties.desired, mode: 'whole' }, reported: read.properties.reported },
  };
  const written = await sdk.registry('updateTwin', id, whole, read.etag);
  assert.equal(written.body.tags.site, 'back');
  assert.equal(written.body.properties.desired.mode, 'whole');
  assert.equal(written.body.properties.desired.$version, read.properties.desired.$version + 1);
  assert.equal(written.body.properties.reported.$version, read.properties.reported.$version);
  assert.equal(written.body.version, read.version + 1, 'one etag step for tags and desired together');

  const value = { properties: { reported: { ...read.properties.reported, fw: '9.9' } } };
  await assertRejects(sdk.registry('updateTwin', id, value, '*'), 'ArgumentError', 400);
  const after1 = (await sdk.registry('getTwin', id)).body;
  assert.equal(after1.properties.reported.fw, undefined, 'the service wrote no reported property');
  assert.equal(after1.etag, written.body.etag, 'the refused write changed nothing');
});

test('modules: addModule, getModule, getModulesOnDevice, module twins, removeModule', T, async () => {
  const { id } = await newDevice('mod');
  const added = await sdk.registry('addModule', { deviceId: id, moduleId: 'm1' });
  assert.equal(added.body.moduleId, 'm1');
  const mod = await sdk.registry('getModule', id, 'm1');
  assert.equal(mod.body.deviceId, id);
  assert.ok(mod.body.authentication.symmetricKey.primaryKey);
  const mods = await sdk.registry('getModulesOnDevice', id);
  assert.deepEqual(mods.body.map((m) => m.moduleId), ['m1']);

  const mt = await sdk.registry('getModuleTwin', id, 'm1');
  assert.equal(mt.body.moduleId, 'm1');
  const up = await sdk.registry('updateModuleTwin', id, 'm1',
    { properties: { desired: { level: 3 } } }, mt.body.etag);
  assert.equal(up.body.properties.desired.level, 3);
  await assertRejects(sdk.registry('updateModuleTwin', id, 'm1',
    { properties: { desired: { level: 4 } } }, mt.body.etag), 'InvalidEtagError', 412);
  const dt = await sdk.registry('getTwin', id);
  assert.equal(dt.body.properties.desired.level, undefined, 'the device twin is a different twin');

  await sdk.registry('removeModule', id, 'm1');
  await assert.rejects(sdk.registry('getModule', id, 'm1'), (err) => err.status === 404);
});

test('query pages through createQuery(sql, pageSize).nextAsTwin() until done', T, async () => {
  const suite = unique('paging');
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const { id } = await newDevice('q');
    await sdk.registry('updateTwin', id, { tags: { suite } }, '*');
    ids.push(id);
  }
  const res = await sdk.query(`SELECT * FROM devices WHERE tags.suite = '${suite}'`, 2);
  const pages = res.body;
  assert.deepEqual(pages.map((p) => p.items.length), [2, 2, 1]);
  assert.ok(pages[0].continuation && pages[1].continuation, 'a token until the last page');
  assert.equal(pages[2].continuation, null, 'no token after the last page');
  assert.deepEqual(pages.map((p) => p.itemType), ['twin', 'twin', 'twin']);
  const seen = pages.flatMap((p) => p.items.map((t) => t.deviceId)).sort();
  assert.deepEqual(seen, [...ids].sort());

  const raw = await rest(hub, 'POST', `/devices/query?${API}`, {
    headers: { Authorization: ownerToken(), 'Content-Type': 'application/json; charset=utf-8' },
    body: JSON.stringify({ query: `SELECT deviceId FROM devices WHERE tags.suite = '${suite}'` }),
  });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers['x-ms-item-type'], 'raw');
  assert.equal(raw.headers['x-ms-continuation'], undefined);
  assert.equal(raw.json.length, 5);
});

test('IoT Edge identities with Registry: capabilities.iotEdge, scopes, a keyless module', T, async () => {
  // The hub's Device/Module shapes (azure-iothub pl/models: DeviceCapabilities, deviceScope,
  // parentScopes, managedBy, AuthenticationMechanism.type 'none') and IoT Edge's module flow.
  const gwId = unique('edge-gw');
  const gw = await sdk.registry('create', { deviceId: gwId, capabilities: { iotEdge: true } });
  assert.equal(gw.body.capabilities.iotEdge, true);
  const scope = `ms-azure-iot-edge://${gwId}-${gw.body.generationId}`;
  assert.equal(gw.body.deviceScope, scope);
  assert.deepEqual(gw.body.parentScopes, []);
  const got = await sdk.registry('get', gwId);
  assert.equal(got.body.capabilities.iotEdge, true, 'iotEdge is kept, not stored as false');
  assert.equal(got.body.deviceScope, scope);

  const leafId = unique('edge-leaf');
  const leaf = await sdk.registry('create', { deviceId: leafId, deviceScope: scope });
  assert.equal(leaf.body.capabilities.iotEdge, false);
  assert.equal(leaf.body.deviceScope, scope);
  assert.deepEqual(leaf.body.parentScopes, [scope], 'the hub copies a leaf\'s parent');
  await assert.rejects(sdk.registry('create', { deviceId: unique('orphan'),
    deviceScope: 'ms-azure-iot-edge://nobody-1' }), (err) => err.status === 400);

  // edgelet creates a module with type none and managedBy, then gives it keys (type sas)
  const added = await sdk.registry('addModule', { deviceId: gwId, moduleId: 'edgeMod',
    managedBy: 'IotEdge', authentication: { type: 'none' } });
  assert.equal(added.body.managedBy, 'IotEdge');
  assert.equal(added.body.authentication.type, 'none');
  assert.equal(added.body.authentication.symmetricKey.primaryKey, null);
  const mod = await sdk.registry('getModule', gwId, 'edgeMod');
  assert.equal(mod.body.managedBy, 'IotEdge', 'managedBy comes back, not null');
  const mt = await sdk.registry('getModuleTwin', gwId, 'edgeMod');
  assert.equal(mt.body.authenticationType, 'none');
  const keyed = await sdk.registry('updateModule',
    { ...mod.body, authentication: { type: 'sas' } }, true);
  assert.equal(keyed.body.authentication.type, 'sas');
  assert.ok(keyed.body.authentication.symmetricKey.primaryKey, 'type sas without keys: generated');
  assert.equal(keyed.body.managedBy, 'IotEdge');

  // an update that sends the device back as read keeps its scope
  const upd = await sdk.registry('update', { ...got.body, statusReason: 'as read' });
  assert.equal(upd.body.deviceScope, scope);
  assert.equal(upd.body.capabilities.iotEdge, true);

  // the twin and the documented query
  const twin = await sdk.registry('getTwin', gwId);
  assert.equal(twin.body.capabilities.iotEdge, true);
  assert.equal(twin.body.deviceScope, scope);
  const res = await sdk.query(
    `SELECT * FROM devices WHERE capabilities.iotEdge = true AND deviceId IN ['${gwId}', '${leafId}']`, 10);
  assert.deepEqual(res.body.flatMap((p) => p.items.map((t) => t.deviceId)), [gwId]);
});

test('SELECT * FROM devices.jobs answers an empty page of item type deviceJob', T, async () => {
  const res = await sdk.query('SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = \'dev-device\'', 10);
  assert.deepEqual(res.body, [{ items: [], continuation: null, itemType: 'deviceJob' }]);
  await assert.rejects(sdk.query('SELECT * FROM devices.things', 10), (err) => err.status === 400);
});

test('Client.invokeDeviceMethod reaches a device of the Node device SDK (MQTT/TLS)', T, async () => {
  const { id, key } = await newDevice('method');
  const device = await hub.deviceClient(hub.connectionString(id, key));
  await within(20000, device.open(), 'Client.open()');
  device.onDeviceMethod('reboot', (req, res) => {
    res.send(201, { ok: true, got: req.payload }, () => {});
  });
  await methodsSubscribed(device);
  const r = await sdk.client('invokeDeviceMethod', id,
    { methodName: 'reboot', payload: { delay: 1 }, responseTimeoutInSeconds: 10 });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { status: 201, payload: { ok: true, got: { delay: 1 } } });

  const offline = unique('offline');
  await sdk.registry('create', { deviceId: offline });
  await assert.rejects(
    sdk.client('invokeDeviceMethod', offline, { methodName: 'x', responseTimeoutInSeconds: 5 }),
    (err) => err.status === 404 && innerError({ json: err.body && JSON.parse(err.body) }).errorCode === 404103);
  await device.close();
});

/** A plain MQTT device (the mqtt package) subscribed to methods; answer(name) gives [status, body]. */
async function rawMethodDevice(id, key, answer) {
  const { info } = hub;
  const dev = mqtt.connect(`mqtt://127.0.0.1:${info.mqttPort}`, {
    protocolVersion: 4,
    clientId: id,
    username: `${info.hubName}/${id}/?${API}`,
    password: sasToken(`${info.hubName}/devices/${id}`, key),
    reconnectPeriod: 0,
    clean: true,
  });
  await within(10000, new Promise((resolve, reject) => {
    dev.once('connect', resolve);
    dev.once('error', reject);
  }), 'the raw device CONNACK');
  dev.on('message', (topic) => {
    const m = /^\$iothub\/methods\/POST\/([^/]+)\/\?\$rid=(.+)$/.exec(topic);
    if (!m) return;
    const [status, body] = answer(m[1]);
    dev.publish(`$iothub/methods/res/${status}/?$rid=${m[2]}`, body, { qos: 0 });
  });
  await dev.subscribeAsync('$iothub/methods/POST/#', { qos: 0 });
  return dev;
}

test('invokeDeviceMethod: a status of -1 and a body that is not JSON, passed on as IoT Hub does', T, async () => {
  const { id, key } = await newDevice('raw');
  const dev = await rawMethodDevice(id, key, (name) => (name === 'text'
    ? [200, "{'filename': 'logs.zip'}"] // Azure/azure-iot-sdk-node#736
    : [-1, '{}']));
  // Any int32 status reaches the service SDK (the full C SDK answers unknown methods with -1).
  const r = await sdk.client('invokeDeviceMethod', id,
    { methodName: 'unknown', responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: -1, payload: {} });
  // The hub copies a body that is not JSON after "payload": as it is; the SDK cannot parse it.
  await assert.rejects(
    sdk.client('invokeDeviceMethod', id, { methodName: 'text', responseTimeoutInSeconds: 10 }),
    (err) => err.sdkName === 'SyntaxError');
  const res = await rest(hub, 'POST', `/twins/${encodeURIComponent(id)}/methods?${API}`, {
    headers: { Authorization: ownerToken(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ methodName: 'text', responseTimeoutInSeconds: 10 }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^application\/json/);
  assert.equal(res.text, `{"status":200,"payload":{'filename': 'logs.zip'}}`);
  assert.equal(res.json, undefined);
  await dev.endAsync();
});

test('Client.invokeDeviceMethod on a module (ModuleClient over MQTT/TLS)', T, async () => {
  const mod = await hub.moduleClient();
  await within(20000, mod.open(), 'ModuleClient.open()');
  mod.onMethod('status', (req, res) => res.send(200, { module: true }, () => {}));
  await methodsSubscribed(mod);
  const r = await sdk.client('invokeDeviceMethod', hub.info.deviceId, hub.info.moduleId,
    { methodName: 'status', responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: 200, payload: { module: true } });
  await mod.close();
});

test('azure-iot-device over MqttWs: telemetry, twin, desired patch, method and C2D', T, async () => {
  const { id, key } = await newDevice('ws');
  const client = await wsClient(hub, id, key);
  await within(20000, client.open(), 'Client.open() over MqttWs');
  const connected = await svc.waitEvent((e) => e.kind === 'connected' && e.deviceId === id,
    10000, 'the connected event');
  assert.equal(connected.data.auth, 'sas');

  const msg = new Message(JSON.stringify({ t: 1 }));
  msg.messageId = unique('mid');
  await client.sendEvent(msg);
  const tel = await svc.waitEvent((e) => e.kind === 'telemetry' && e.deviceId === id,
    10000, 'the telemetry event');
  assert.equal(tel.data.systemProperties.messageId, msg.messageId);

  const twin = await client.getTwin();
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ fw: '1.2' }, (err) => (err ? reject(err) : resolve()));
  });
  const reported = await sdk.registry('getTwin', id);
  assert.equal(reported.body.properties.reported.fw, '1.2');

  await desiredSubscribed(twin);
  const desired = nextEvent(twin, 'properties.desired', (d) => d.mode === 'ws', 15000);
  await sdk.registry('updateTwin', id, { properties: { desired: { mode: 'ws' } } }, '*');
  assert.equal((await desired).mode, 'ws');

  client.onDeviceMethod('ping', (req, res) => res.send(200, { pong: req.payload }, () => {}));
  await methodsSubscribed(client);
  const r = await sdk.client('invokeDeviceMethod', id,
    { methodName: 'ping', payload: 7, responseTimeoutInSeconds: 10 });
  assert.deepEqual(r.body, { status: 200, payload: { pong: 7 } });

  const inbox = [];
  client.on('message', (m) => inbox.push(m));
  await c2dSubscribed(client);
  const c2d = await rest(hub, 'POST', `/twinhub/devices/${encodeURIComponent(id)}/messages`, {
    headers: {
      Authorization: ownerToken(),
      'Content-Type': 'text/plain',
      'iothub-messageid': 'c2d-1',
      'iothub-app-color': 'red',
    },
    body: 'hello over websockets',
  });
  assert.equal(c2d.status, 200, c2d.text);
  assert.equal(c2d.json.messageId, 'c2d-1');
  await within(10000, (async () => {
    while (!inbox.length) await new Promise((r) => setTimeout(r, 20));
  })(), 'the C2D message on the device');
  const m = inbox[0];
  assert.equal(m.data.toString(), 'hello over websockets');
  assert.equal(m.messageId, 'c2d-1');
  assert.equal(m.properties.getValue('color'), 'red');

  await client.close();
  await svc.waitEvent((e) => e.kind === 'disconnected' && e.deviceId === id, 10000,
    'the disconnected event');
});

test('refusals: no token, malformed, wrong key, expired, a device key, a missing right', T, async () => {
  const path = `/devices/dev-device?${API}`;
  const devKey = parseDevKey();
  const cases = [
    ['no token', undefined],
    ['malformed', 'Bearer abc'],
    ['wrong key', sasToken(GATEWAY_HOST, newKey(), 'iothubowner')],
    ['unknown policy', sasToken(GATEWAY_HOST, ownerKey(hub), 'nosuchpolicy')],
    ['expired', ownerToken(-60)],
    ['device key', sasToken(`${hub.hostName}/devices/dev-device`, devKey)],
  ];
  for (const [what, token] of cases) {
    const res = await rest(hub, 'GET', path, { headers: token ? { Authorization: token } : {} });
    assert.equal(res.status, 401, `${what}: ${res.text}`);
    assert.equal(res.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess', what);
    assert.equal(innerError(res).errorCode, 401002, what);
  }
  // registryRead may read the registry but not write it.
  const readOnly = sasToken(GATEWAY_HOST, ownerKey(hub), 'registryRead');
  assert.equal((await rest(hub, 'GET', path, { headers: { Authorization: readOnly } })).status, 200);
  const put = await rest(hub, 'PUT', `/devices/ro-${randomUUID().slice(0, 6)}?${API}`, {
    headers: { Authorization: readOnly, 'Content-Type': 'application/json' },
    body: '{}',
  });
  assert.equal(put.status, 401);
  assert.match(innerError(put).message, /RegistryWrite/);

  const noVersion = await rest(hub, 'GET', '/devices/dev-device', { headers: { Authorization: ownerToken() } });
  assert.equal(noVersion.status, 400);
  assert.equal(noVersion.headers['iothub-errorcode'], 'InvalidProtocolVersion');
  assert.equal(innerError(noVersion).errorCode, 400001);
});

function parseDevKey() {
  const m = /SharedAccessKey=([^;]+)/.exec(hub.info.deviceConnectionString);
  return m[1];
}

test('error bodies: the current format, and the legacy ErrorCode:<Name>;<text> form', T, async () => {
  const res = await rest(hub, 'GET', `/devices/${unique('nope')}?${API}`, {
    headers: { Authorization: ownerToken() },
  });
  assert.equal(res.status, 404);
  assert.match(res.headers['content-type'], /^application\/json; charset=utf-8$/);
  assert.equal(res.headers['iothub-errorcode'], 'DeviceNotFound');
  assert.equal(res.json.ExceptionMessage, '');
  const inner = innerError(res);
  assert.equal(inner.errorCode, 404001);
  assert.match(inner.trackingId, /^[0-9a-f]{32}-G:0-TimeStamp:\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d$/);
  assert.match(inner.timestampUtc, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  assert.match(inner.message, /is not registered/);
  // What azure-iot-http-base's Http.parseErrorBody does with Message:
  const parts = res.json.Message.split(';');
  assert.equal(parts[0].split(':')[1], 'DeviceNotFound');
  assert.equal(parts[1], inner.message);
});

test('statistics: getRegistryStatistics and GET /statistics/service', T, async () => {
  const stats = await sdk.registry('getRegistryStatistics');
  assert.ok(stats.body.totalDeviceCount >= 1);
  assert.equal(stats.body.totalDeviceCount,
    stats.body.enabledDeviceCount + stats.body.disabledDeviceCount);
  const svcStats = await rest(hub, 'GET', `/statistics/service?${API}`, {
    headers: { Authorization: ownerToken() },
  });
  assert.equal(svcStats.status, 200);
  assert.equal(typeof svcStats.json.connectedDeviceCount, 'number');
});

test('without the plain MQTT listener the gateway uses an internal unix socket', T, async () => {
  await sdk.close();
  sdk = null;
  await hub.stop();
  hub = await startGatewayHub({ mqttPort: 0 });
  assert.equal(hub.info.mqttPort, 0);
  const health = await rest(hub, 'GET', '/health');
  assert.equal(health.status, 200);
  const got = await rest(hub, 'GET', `/twins/dev-device?${API}`, {
    headers: { Authorization: ownerToken() },
  });
  assert.equal(got.status, 200, got.text);
  const client = await wsClient(hub, 'dev-device', parseDevKey());
  await within(20000, client.open(), 'Client.open() over MqttWs');
  const twin = await client.getTwin();
  assert.equal(typeof twin.properties.desired.$version, 'number');
  await client.close();
});
