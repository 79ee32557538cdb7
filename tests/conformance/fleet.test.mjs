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
