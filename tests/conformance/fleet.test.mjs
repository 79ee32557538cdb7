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
