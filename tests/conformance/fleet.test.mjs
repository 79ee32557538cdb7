// Fleet management over the service API with the official Node SDKs (issue 16): whole-section
// nulls in a twin PATCH as azure-iot-sdk-node's own end-to-end test "can null out all desired
// properties" sends them, the bulk registry (`Registry.addDevices`, `updateDevices`,
// `removeDevices`, and raw `POST /devices`), and automatic device and module configurations
// (`Registry.addConfiguration` ... `removeConfiguration`) whose content reaches connected
// devices' and modules' twins. The gateway listens on 127.0.0.1:443, as in service.test.mjs.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { desiredSubscribed, nextEvent, sasToken, within } from './hub.mjs';
import {
  GATEWAY_HOST, ServiceSdk, innerError, ownerKey, rest, startGatewayHub, wsClient,
} from './service.mjs';

const T = { timeout: 60000 };
const API = 'api-version=2021-04-12';
let hub;
let sdk;

before(async () => {
  hub = await startGatewayHub();
  sdk = await ServiceSdk.start(hub);
});

after(async () => {
  if (sdk) await sdk.close();
  if (hub) await hub.stop();
});

function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

async function newDevice(prefix = 'fleet') {
  const id = unique(prefix);
  const res = await sdk.registry('create', { deviceId: id });
  return { id, key: res.body.authentication.symmetricKey.primaryKey };
}

function authHeaders() {
  return {
    Authorization: sasToken(GATEWAY_HOST, ownerKey(hub), 'iothubowner', 3600),
    'Content-Type': 'application/json',
  };
}

/** A connected SDK device (MQTT over WebSockets) with its twin subscribed to desired updates. */
async function connectedTwin(id, key, moduleId) {
  const client = await wsClient(hub, id, key, moduleId);
  await within(20000, client.open(), 'Client.open() over MqttWs');
  const twin = await client.getTwin();
  await desiredSubscribed(twin);
  return { client, twin };
}

for (const star of [false, true]) {
  test(`PATCH desired: null empties a connected device's desired copy (If-Match ${star ? '*' : 'the etag'})`, T, async () => {
    const { id, key } = await newDevice('nulldesired');
    const { client, twin } = await connectedTwin(id, key);
    const first = nextEvent(twin, 'properties.desired', (d) => d.$version === 2, 15000);
    await sdk.registry('updateTwin', id, { properties: { desired: { foo: 1, bar: { baz: 2 } } } }, '*');
    await first;
    assert.equal(twin.properties.desired.foo, 1);

    const emptied = nextEvent(twin, 'properties.desired', (d) => d.$version === 3, 15000);
    const etag = star ? '*' : (await sdk.registry('getTwin', id)).body.etag;
    const res = await sdk.registry('updateTwin', id, { properties: { desired: null } }, etag);
    assert.equal(res.body.properties.desired.$version, 3);
    await emptied;
    const left = Object.keys(twin.properties.desired).filter((k) => !k.startsWith('$')
      && typeof twin.properties.desired[k] !== 'function');
    assert.deepEqual(left, [], 'the device copy of desired has no property left');
    const svcTwin = await sdk.registry('getTwin', id);
    assert.deepEqual(Object.keys(svcTwin.body.properties.desired).filter((k) => !k.startsWith('$')), []);
    await client.close();
  });
}

test('PATCH tags: null removes every tag', T, async () => {
  const { id } = await newDevice('nulltags');
  await sdk.registry('updateTwin', id, { tags: { site: 'a', rack: { row: 1 } } }, '*');
  const res = await rest(hub, 'PATCH', `/twins/${id}?${API}`,
    { headers: authHeaders(), body: JSON.stringify({ tags: null }) });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json.tags, {});
});

test('a request body holding \\u0000 in a string is refused whole with 400004 (REST)', T, async () => {
  const { id } = await newDevice('nul');
  const cases = [
    ['PATCH', `/twins/${id}?${API}`, '{"properties":{"desired":{"s":"a\\u0000b"}}}'],
    ['PATCH', `/twins/${id}?${API}`, '{"tags":{"k\\u0000":1}}'],
    ['PUT', `/devices/nul-${randomUUID().slice(0, 8)}?${API}`, '{"statusReason":"a\\u0000b"}'],
    ['POST', `/twins/${id}/methods?${API}`, '{"methodName":"m","payload":{"p":"\\u0000"}}'],
  ];
  for (const [method, path, body] of cases) {
    const res = await rest(hub, method, path, { headers: authHeaders(), body });
    assert.equal(res.status, 400, `${method} ${path}: ${res.text}`);
    assert.equal(innerError(res).errorCode, 400004);
    assert.match(innerError(res).message, /\\u0000/);
  }
  const twin = await sdk.registry('getTwin', id);
  assert.equal(twin.body.properties.desired.s, undefined);
  assert.equal(twin.body.tags.k, undefined);
});

// ---- bulk registry: Registry.addDevices / updateDevices / removeDevices ------------------------

test('Registry.addDevices creates every new device and reports the existing one', T, async () => {
  const existing = await newDevice('bulk-old');
  const fresh = [unique('bulk-a'), unique('bulk-b')];
  const all = await sdk.registry('addDevices', fresh.map((deviceId) => ({ deviceId })));
  assert.equal(all.status, 200);
  assert.equal(all.body.isSuccessful, true);
  assert.deepEqual(all.body.errors, []);
  for (const id of fresh) {
    const dev = await sdk.registry('get', id);
    assert.equal(dev.body.status, 'enabled');
    assert.equal(typeof dev.body.authentication.symmetricKey.primaryKey, 'string');
  }

  // Mixed: the hub carries out each entry on its own; the SDK reports a 400 as ArgumentError
  // with the per-device results in responseBody.
  const third = unique('bulk-c');
  await assert.rejects(sdk.registry('addDevices', [{ deviceId: third }, { deviceId: existing.id }]),
    (err) => {
      assert.equal(err.sdkName, 'ArgumentError', err.message);
      assert.equal(err.status, 400);
      const result = JSON.parse(err.body);
      assert.equal(result.isSuccessful, false);
      assert.equal(result.errors.length, 1);
      assert.equal(result.errors[0].deviceId, existing.id);
      assert.equal(result.errors[0].errorCode, 'DeviceAlreadyExists');
      assert.match(result.errors[0].errorStatus, /already/);
      return true;
    });
  assert.equal((await sdk.registry('get', third)).body.deviceId, third, 'the good entry was carried out');
});

test('Registry.updateDevices: forced, with etags, and a stale etag among good ones', T, async () => {
  const a = await newDevice('bulk-up');
  const b = await newDevice('bulk-up');
  const forced = await sdk.registry('updateDevices',
    [{ deviceId: a.id, status: 'disabled', statusReason: 'bulk' }], true);
  assert.equal(forced.body.isSuccessful, true);
  const readA = (await sdk.registry('get', a.id)).body;
  assert.equal(readA.status, 'disabled');
  assert.equal(readA.statusReason, 'bulk');

  // updateDevices(devices, false) sends importMode UpdateIfMatchETag with each device's `etag`
  // as Registry.get returned it (the export-import spelling is `eTag`; both are read).
  const readB = (await sdk.registry('get', b.id)).body;
  const stale = { ...readA, status: 'enabled' };
  stale.etag = 'bm90LXRoZS1ldGFn';
  await assert.rejects(sdk.registry('updateDevices', [{ ...readB, status: 'disabled' }, stale], false),
    (err) => {
      assert.equal(err.status, 400);
      const result = JSON.parse(err.body);
      assert.equal(result.isSuccessful, false);
      assert.deepEqual(result.errors.map((e) => [e.deviceId, e.errorCode]), [[a.id, 'PreconditionFailed']]);
      return true;
    });
  assert.equal((await sdk.registry('get', b.id)).body.status, 'disabled');
  assert.equal((await sdk.registry('get', a.id)).body.status, 'disabled', 'the stale entry changed nothing');
});

test('Registry.removeDevices deletes what exists and reports what does not', T, async () => {
  const a = await newDevice('bulk-rm');
  const b = await newDevice('bulk-rm');
  const gone = unique('bulk-none');
  await assert.rejects(sdk.registry('removeDevices', [{ deviceId: a.id }, { deviceId: gone }], true),
    (err) => {
      const result = JSON.parse(err.body);
      assert.deepEqual(result.errors.map((e) => [e.deviceId, e.errorCode]), [[gone, 'DeviceNotFound']]);
      return true;
    });
  await assert.rejects(sdk.registry('get', a.id), (err) => err.sdkName === 'DeviceNotFoundError');
  const readB = (await sdk.registry('get', b.id)).body;
  const res = await sdk.registry('removeDevices', [readB], false); // DeleteIfMatchETag
  assert.equal(res.body.isSuccessful, true);
  await assert.rejects(sdk.registry('get', b.id), (err) => err.sdkName === 'DeviceNotFoundError');
});

test('POST /devices: 413 TooManyDevices over 100, eTag spelling, modules, twin content', T, async () => {
  const many = Array.from({ length: 101 }, (_, i) => ({ id: `too-many-${i}`, importMode: 'create' }));
  let res = await rest(hub, 'POST', `/devices?${API}`, { headers: authHeaders(), body: JSON.stringify(many) });
  assert.equal(res.status, 413, res.text);
  assert.equal(innerError(res).errorCode, 413002);
  assert.equal(res.headers['iothub-errorcode'], 'TooManyDevices');
  res = await rest(hub, 'GET', `/devices/too-many-0?${API}`, { headers: authHeaders() });
  assert.equal(res.status, 404, 'nothing of a refused request is carried out');

  const id = unique('bulk-raw');
  res = await rest(hub, 'POST', `/devices?${API}`, {
    headers: authHeaders(),
    body: JSON.stringify([
      { id, importMode: 'create', tags: { fleet: 'raw' }, properties: { desired: { mode: 'eco' } } },
      { id, moduleId: 'agent', importMode: 'create', managedBy: 'me' },
    ]),
  });
  assert.equal(res.status, 200, res.text);
  const twin = await sdk.registry('getTwin', id);
  assert.equal(twin.body.tags.fleet, 'raw');
  assert.equal(twin.body.properties.desired.mode, 'eco');
  const mod = await rest(hub, 'GET', `/devices/${id}/modules/agent?${API}`, { headers: authHeaders() });
  assert.equal(mod.json.managedBy, 'me');
  const etag = (await sdk.registry('get', id)).body.etag;
  res = await rest(hub, 'POST', `/devices?${API}`, {
    headers: authHeaders(),
    body: JSON.stringify([{ id, importMode: 'updateIfMatchETag', eTag: etag, status: 'disabled' },
      { id: 'bad id with spaces', importMode: 'create' }]),
  });
  assert.equal(res.status, 400, res.text);
  assert.deepEqual(res.json.errors.map((e) => e.errorCode), ['ArgumentInvalid']);
  assert.equal((await sdk.registry('get', id)).body.status, 'disabled');
});

// ---- automatic device and module configurations ------------------------------------------------

/** The e2e test's configuration (azure-iot-sdk-node e2etests/test/configurations.js). */
function e2eConfig(entity) {
  return {
    id: `node_e2e_${entity}_${randomUUID()}`,
    content: { [`${entity}Content`]: { 'properties.desired': { prop1: 'foo' } } },
    targetCondition: '',
    priority: 20,
  };
}

for (const entity of ['module', 'device']) {
  test(`${entity} configuration: add, get, list, update, force-update, remove (the SDK's e2e steps)`, T, async () => {
    const config = e2eConfig(entity);
    await sdk.registry('addConfiguration', config);
    const found = (await sdk.registry('getConfiguration', config.id)).body;
    assert.equal(found.id, config.id);
    assert.deepEqual(found.content, config.content);
    assert.equal(found.schemaVersion, '1.0');
    assert.equal(found.systemMetrics.results.targetedCount, 0, "'' targets nothing");
    const all = (await sdk.registry('getConfigurations')).body;
    assert.deepEqual(all.find((c) => c.id === config.id)?.content, config.content);

    found.priority = 99;
    await sdk.registry('updateConfiguration', found);
    assert.equal((await sdk.registry('getConfiguration', config.id)).body.priority, 99);
    await assert.rejects(sdk.registry('updateConfiguration', { ...found, priority: 1 }),
      (err) => err.sdkName === 'InvalidEtagError', 'the etag read before the update is stale');
    config.priority = 98;
    await sdk.registry('updateConfiguration', config, true);
    assert.equal((await sdk.registry('getConfiguration', config.id)).body.priority, 98);

    await sdk.registry('removeConfiguration', config.id);
    await assert.rejects(sdk.registry('getConfiguration', config.id));
  });
}

test('configurations reach connected devices and modules, with priority, re-evaluation and metrics', T, async () => {
  const fleet = unique('fleet');
  const a = await newDevice('cfg');
  const b = await newDevice('cfg');
  for (const d of [a, b]) await sdk.registry('updateTwin', d.id, { tags: { fleet } }, '*');
  const mod = await sdk.registry('addModule', { deviceId: a.id, moduleId: 'azureiotsecurity' });
  const modKey = mod.body.authentication.symmetricKey.primaryKey;
  const devA = await connectedTwin(a.id, a.key);
  const modA = await connectedTwin(a.id, modKey, 'azureiotsecurity');

  // A device configuration for the fleet: both devices get the content at once.
  const low = {
    id: unique('low'),
    content: { deviceContent: { 'properties.desired.telemetry': { interval: 30, mode: 'std' } } },
    targetCondition: `tags.fleet='${fleet}'`,
    priority: 1,
    metrics: { queries: { applied: `SELECT deviceId FROM devices WHERE configurations.[[${'PLACEHOLDER'}]].status = 'Applied'` } },
  };
  low.metrics.queries.applied = low.metrics.queries.applied.replace('PLACEHOLDER', low.id);
  let seen = nextEvent(devA.twin, 'properties.desired', (d) => d.telemetry?.interval === 30, 15000);
  await sdk.registry('addConfiguration', low);
  await seen;
  let cfg = (await sdk.registry('getConfiguration', low.id)).body;
  assert.deepEqual(cfg.systemMetrics.results, { targetedCount: 2, appliedCount: 2 });
  assert.equal(cfg.metrics.results.applied, 2);
  const twinB = (await sdk.registry('getTwin', b.id)).body;
  assert.deepEqual(twinB.properties.desired.telemetry, { interval: 30, mode: 'std' });
  assert.deepEqual(twinB.configurations, { [low.id]: { status: 'Applied' } });

  // A higher priority configuration for device a only: a takes it, its old settings removed.
  const high = {
    id: unique('high'),
    content: { deviceContent: { 'properties.desired.telemetry.interval': 5 } },
    targetCondition: `deviceId = '${a.id}'`,
    priority: 10,
  };
  seen = nextEvent(devA.twin, 'properties.desired', (d) => d.telemetry?.interval === 5, 15000);
  await sdk.registry('addConfiguration', high);
  await seen;
  const twinA = (await sdk.registry('getTwin', a.id)).body;
  assert.deepEqual(twinA.properties.desired.telemetry, { interval: 5 });
  assert.deepEqual(twinA.configurations, { [low.id]: { status: 'Targeted' }, [high.id]: { status: 'Applied' } });
  cfg = (await sdk.registry('getConfiguration', low.id)).body;
  assert.deepEqual(cfg.systemMetrics.results, { targetedCount: 2, appliedCount: 1 });

  // A module configuration for every azureiotsecurity module of the fleet's devices.
  const sec = {
    id: unique('sec'),
    content: { moduleContent: { 'properties.desired.ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration': { eventPriorityProcessList: { value: 'Low' } } } },
    targetCondition: "from devices.modules where moduleId = 'azureiotsecurity'",
    priority: 5,
  };
  seen = nextEvent(modA.twin, 'properties.desired',
    (d) => d['ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration']?.eventPriorityProcessList?.value === 'Low', 15000);
  await sdk.registry('addConfiguration', sec);
  await seen;
  cfg = (await sdk.registry('getConfiguration', sec.id)).body;
  assert.equal(cfg.systemMetrics.results.appliedCount, 1);
  assert.match(cfg.systemMetrics.queries.appliedCount, /FROM devices\.modules/);

  // Re-evaluated when tags change: b leaves the fleet, low's settings are removed from its twin.
  await sdk.registry('updateTwin', b.id, { tags: { fleet: 'elsewhere' } }, '*');
  const leftB = (await sdk.registry('getTwin', b.id)).body;
  assert.equal(leftB.properties.desired.telemetry, undefined);
  assert.equal(leftB.configurations, undefined);

  // Deleting high: a takes low again.
  seen = nextEvent(devA.twin, 'properties.desired', (d) => d.telemetry?.interval === 30, 15000);
  await sdk.registry('removeConfiguration', high.id);
  await seen;
  assert.equal(devA.twin.properties.desired.telemetry.mode, 'std');
  for (const id of [low.id, sec.id]) await sdk.registry('removeConfiguration', id);
  await devA.client.close();
  await modA.client.close();
});

test('configuration refusals and /configurations/testQueries', T, async () => {
  const put = (id, body, headers = {}) => rest(hub, 'PUT', `/configurations/${id}?${API}`,
    { headers: { ...authHeaders(), ...headers }, body: JSON.stringify(body) });
  const ok = { content: { deviceContent: { 'properties.desired.x': 1 } }, targetCondition: '*' };
  for (const [id, body] of [
    ['UPPER', ok],
    ['c1', { ...ok, content: { moduleContent: { 'properties.desired.x': 1 } }, targetCondition: '*' }],
    ['c2', { ...ok, content: { deviceContent: { 'tags.x': 1 } } }],
    ['c3', { ...ok, content: { modulesContent: { $edgeAgent: { 'properties.desired': {} } } } }],
    ['c4', { ...ok, targetCondition: "tags.x = 'unterminated" }],
    ['c5', { ...ok, metrics: { queries: { a: 'x', b: 'x', c: 'x', d: 'x', e: 'x', f: 'x' } } }],
  ]) {
    const res = await put(id, body);
    assert.equal(res.status, 400, `${id}: ${res.text}`);
    assert.equal(innerError(res).errorCode, 400004);
  }
  const id = unique('cfg-ref');
  assert.equal((await put(id, ok)).status, 200);
  const again = await put(id, ok);
  assert.equal(again.status, 409);
  const changed = await put(id, { ...ok, content: { deviceContent: { 'properties.desired.x': 2 } } }, { 'If-Match': '*' });
  assert.equal(changed.status, 400, 'the content cannot change');
  const gone = await rest(hub, 'GET', `/configurations/none-such?${API}`, { headers: authHeaders() });
  assert.equal(gone.status, 404);
  assert.equal((await rest(hub, 'DELETE', `/configurations/${id}?${API}`, { headers: authHeaders() })).status, 204);

  const test1 = await rest(hub, 'POST', `/configurations/testQueries?${API}`, {
    headers: authHeaders(),
    body: JSON.stringify({
      targetCondition: "from devices.modules where moduleId = 'azureiotsecurity'",
      customMetricQueries: { good: 'SELECT deviceId FROM devices', bad: 'SELECT FROM' },
    }),
  });
  assert.equal(test1.status, 200, test1.text);
  assert.equal(test1.json.targetConditionError, '');
  assert.equal(test1.json.customMetricQueryErrors.good, '');
  assert.notEqual(test1.json.customMetricQueryErrors.bad, '');
});
