// Device client (azure-iot-device Client + azure-iot-device-mqtt Mqtt over TLS)
// against `twinhub serve`, driven from the service side over the control API.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { after, before, test } from 'node:test';
import {
  Message, c2dSubscribed, desiredSubscribed, methodsSubscribed, nextEvent, startHub, within,
} from './hub.mjs';

const T = { timeout: 30000 };
let hub;
let svc;
let client;
let twin;
let deviceId;
// C2D messages seen by the device. The SDK unsubscribes from C2D when its last
// 'message' listener goes away, so like an application the test keeps one
// listener for good and waits on this inbox.
const inbox = new EventEmitter();

function device() {
  assert.ok(client, 'the device client did not open (see the first test)');
  return client;
}

before(async () => {
  hub = await startHub();
  deviceId = hub.info.deviceId;
  svc = await hub.service();
});

after(async () => {
  if (hub) await hub.stop();
});

test('device client opens over MQTT/TLS with the hub CA', T, async () => {
  assert.equal(deviceId, 'dev-device');
  const c = await hub.deviceClient();
  await within(20000, c.open(), 'Client.open()');
  client = c;
  const ev = await svc.waitEvent(
    (e) => e.kind === 'connected' && e.deviceId === deviceId && e.moduleId == null,
    10000, `a 'connected' event for ${deviceId}`);
  assert.equal(ev.data.clientId, deviceId);
  assert.equal(ev.data.auth, 'sas');
  assert.equal(ev.data.apiVersion, '2021-04-12');
  assert.match(ev.data.clientType, /^azure-iot-device\/1\.18\.4 /);
  assert.equal(typeof ev.seq, 'number');
  assert.match(ev.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
});

test('sendEvent with system and application properties becomes a telemetry event', T, async () => {
  const body = JSON.stringify({ temperature: 21.5, run: randomUUID() });
  const msg = new Message(body);
  msg.messageId = `mid-${randomUUID()}`;
  msg.correlationId = 'corr-42';
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('alert', 'high temp & rising=yes');
  msg.properties.add('unit', 'C/100%');
  await within(10000, device().sendEvent(msg), 'sendEvent PUBACK');

  const ev = await svc.waitEvent(
    (e) => e.kind === 'telemetry' && e.data?.systemProperties?.messageId === msg.messageId,
    10000, 'the telemetry event');
  assert.equal(ev.deviceId, deviceId);
  assert.equal(ev.moduleId, null);
  assert.ok(ev.data.topic.startsWith(`devices/${deviceId}/messages/events/`), ev.data.topic);
  assert.equal(ev.data.qos, 1);
  assert.equal(ev.data.body, body);
  assert.equal(Buffer.from(ev.data.bodyBase64, 'base64').toString('utf8'), body);
  const sp = ev.data.systemProperties;
  assert.equal(sp.correlationId, 'corr-42');
  assert.equal(sp.contentType, 'application/json');
  assert.equal(sp.contentEncoding, 'utf-8');
  assert.equal(sp['iothub-connection-device-id'], deviceId);
  assert.equal(sp['iothub-connection-module-id'], undefined);
  assert.ok(sp['iothub-enqueuedtime'], 'iothub-enqueuedtime is stamped');
  assert.deepEqual(ev.data.properties, { alert: 'high temp & rising=yes', unit: 'C/100%' });
});

test('sendEvent without properties carries just the body', T, async () => {
  const body = `plain-${randomUUID()}`;
  await within(10000, device().sendEvent(new Message(body)), 'sendEvent PUBACK');
  const ev = await svc.waitEvent((e) => e.kind === 'telemetry' && e.data?.body === body, 10000, 'the telemetry event');
  assert.equal(ev.deviceId, deviceId);
  assert.equal(ev.data.systemProperties.messageId, undefined);
  assert.deepEqual(ev.data.properties, {});
  assert.equal(ev.data.size >= body.length, true, `size ${ev.data.size} covers the body`);
});

test('getTwin returns desired and reported as the service sees them', T, async () => {
  const marker = `m-${randomUUID()}`;
  const updated = await svc.ok({
    command: 'updateTwin', deviceId,
    patch: { tags: { site: 'lab' }, properties: { desired: { marker, interval: 30 } } },
  });
  const desiredVersion = updated.properties.desired.$version;
  assert.equal(typeof desiredVersion, 'number');

  twin = await within(10000, device().getTwin(), 'getTwin');
  assert.equal(twin.properties.desired.marker, marker);
  assert.equal(twin.properties.desired.interval, 30);
  assert.equal(twin.properties.desired.$version, desiredVersion);
  assert.equal(twin.properties.desired.site, undefined, 'tags are not visible to the device');
  assert.equal(twin.properties.desired.$metadata, undefined, 'no $metadata on the device side');

  const svcTwin = await svc.ok({ command: 'getTwin', deviceId });
  assert.equal(svcTwin.deviceId, deviceId);
  assert.equal(svcTwin.tags.site, 'lab');
  assert.equal(twin.properties.reported.$version, svcTwin.properties.reported.$version);
});

test('the device twin GET is recorded as a twinGet event', T, async () => {
  assert.ok(twin, 'getTwin did not succeed');
  const ev = await svc.waitEvent((e) => e.kind === 'twinGet' && e.deviceId === deviceId,
    5000, `a 'twinGet' event for ${deviceId}`);
  assert.equal(ev.moduleId, null);
  assert.equal(ev.data.status, 200);
});

test('reported patch is stored with the next $version and merges like IoT Hub', T, async () => {
  assert.ok(twin, 'getTwin did not succeed');
  const v0 = twin.properties.reported.$version;
  const run = randomUUID();
  const patch = { firmware: '1.2.3', run, nested: { a: 1, b: 'two' } };
  await within(10000, new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  }), 'reported update');

  let svcTwin = await svc.ok({ command: 'getTwin', deviceId });
  let reported = svcTwin.properties.reported;
  assert.equal(reported.$version, v0 + 1);
  assert.equal(reported.firmware, '1.2.3');
  assert.equal(reported.run, run);
  assert.deepEqual(reported.nested, { a: 1, b: 'two' });
  const ev = await svc.waitEvent(
    (e) => e.kind === 'reported' && e.deviceId === deviceId && e.data?.patch?.run === run,
    10000, 'the reported event');
  assert.equal(ev.data.version, v0 + 1);
  assert.deepEqual(ev.data.patch, patch);

  // null deletes, other members are kept
  await within(10000, new Promise((resolve, reject) => {
    twin.properties.reported.update({ nested: { b: null } }, (err) => (err ? reject(err) : resolve()));
  }), 'second reported update');
  svcTwin = await svc.ok({ command: 'getTwin', deviceId });
  reported = svcTwin.properties.reported;
  assert.equal(reported.$version, v0 + 2);
  assert.deepEqual(reported.nested, { a: 1 });
  assert.equal(reported.firmware, '1.2.3');
});

test('desired patch from the service reaches the SDK with its $version', T, async () => {
  assert.ok(twin, 'getTwin did not succeed');
  const color = `blue-${randomUUID()}`;
  const seen = nextEvent(twin, 'properties.desired', (p) => p && p.color === color, 15000);
  await desiredSubscribed(twin);

  const updated = await svc.ok({
    command: 'updateTwin', deviceId,
    patch: { properties: { desired: { color, config: { rate: 5 }, interval: null } } },
  });
  const version = updated.properties.desired.$version;
  assert.equal(updated.properties.desired.color, color);
  assert.equal(updated.properties.desired.interval, undefined, 'null removed interval');

  const patch = await seen;
  assert.equal(patch.$version, version);
  assert.deepEqual(patch.config, { rate: 5 });
  assert.equal(twin.properties.desired.color, color);
  assert.equal(twin.properties.desired.$version, version);
  assert.equal(twin.properties.desired.interval, undefined);

  const ev = await svc.waitEvent(
    (e) => e.kind === 'desired' && e.deviceId === deviceId && e.data?.patch?.color === color,
    10000, 'the desired event');
  assert.equal(ev.data.version, version);
  assert.equal(ev.data.delivered, true);
});

test('direct method: the device status and payload come back to invokeMethod', T, async () => {
  const c = device();
  const calls = [];
  c.onDeviceMethod('reboot', (req, res) => {
    calls.push({ methodName: req.methodName, payload: req.payload, requestId: req.requestId });
    res.send(201, { rebooted: true, echo: req.payload }).catch(() => {});
  });
  await methodsSubscribed(c);

  const payload = { delay: 3, who: randomUUID(), list: [1, 'two', null] };
  const data = await svc.ok({
    command: 'invokeMethod', deviceId, methodName: 'reboot', payload, responseTimeoutInSeconds: 10,
  }, 20000);
  assert.equal(data.status, 201);
  assert.deepEqual(data.payload, { rebooted: true, echo: payload });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].methodName, 'reboot');
  assert.deepEqual(calls[0].payload, payload);

  const ev = await svc.waitEvent(
    (e) => e.kind === 'method' && e.deviceId === deviceId && e.data?.requestId === calls[0].requestId,
    10000, 'the method event');
  assert.equal(ev.data.methodName, 'reboot');
});

test('direct method: a negative status (the C SDK answers -1) comes back and the device stays', T, async () => {
  const c = device();
  c.onDeviceMethod('unknownToDevice', (req, res) => {
    res.send(-1, { error: 'unknown method' }).catch(() => {});
  });
  c.onDeviceMethod('maxStatus', (req, res) => res.send(2147483647, null).catch(() => {}));
  await methodsSubscribed(c);
  const data = await svc.ok({
    command: 'invokeMethod', deviceId, methodName: 'unknownToDevice', responseTimeoutInSeconds: 10,
  }, 20000);
  assert.equal(data.status, -1);
  assert.deepEqual(data.payload, { error: 'unknown method' });
  // The same connection answers the next call: it was not closed for the status.
  const next = await svc.ok({
    command: 'invokeMethod', deviceId, methodName: 'maxStatus', responseTimeoutInSeconds: 10,
  }, 20000);
  assert.equal(next.status, 2147483647);
  assert.equal(next.payload, null);
  const closed = svc.events.find((e) => e.kind === 'protocolError' && e.deviceId === deviceId);
  assert.equal(closed, undefined, `no protocolError: ${JSON.stringify(closed)}`);
});

test('component telemetry (message property dt-subject, sent as $.sub) shows dt-subject', T, async () => {
  const msg = new Message(JSON.stringify({ temperature: 20 }));
  msg.messageId = `mid-${randomUUID()}`;
  // azure-iot-device-mqtt writes the property dt-subject as $.sub on the topic.
  msg.properties.add('dt-subject', 'thermostat1');
  await within(10000, device().sendEvent(msg), 'sendEvent PUBACK');
  const ev = await svc.waitEvent(
    (e) => e.kind === 'telemetry' && e.data?.systemProperties?.messageId === msg.messageId,
    10000, 'the telemetry event');
  assert.match(ev.data.topic, /%24\.sub=thermostat1/);
  assert.equal(ev.data.systemProperties['dt-subject'], 'thermostat1');
  assert.equal(ev.data.properties['dt-subject'], undefined);
});

test('direct method nobody answers times out with 504101', T, async () => {
  device();
  const r = await svc.command({
    command: 'invokeMethod', deviceId, methodName: 'noHandler', payload: null, responseTimeoutInSeconds: 5,
  }, 20000);
  assert.ok(r.error, `expected an error, got ${JSON.stringify(r)}`);
  assert.equal(r.status, 504);
  assert.equal(r.errorCode, 504101);
});

test('C2D sent before the device listens is queued, then delivered on subscribe', T, async () => {
  const c = device();
  const body = `queued-${randomUUID()}`;
  const data = await svc.ok({ command: 'sendC2D', deviceId, body, messageId: `q-${randomUUID()}` });
  assert.equal(data.delivered, false);
  assert.ok(data.queued >= 1, `queued=${data.queued}`);

  const got = nextEvent(inbox, 'message', (m) => m.data.toString('utf8') === body, 15000);
  c.on('message', (m) => inbox.emit('message', m));
  const msg = await got;
  assert.equal(msg.messageId, data.messageId);
  await svc.waitEvent((e) => e.kind === 'c2d' && e.data?.messageId === data.messageId && e.data.delivered === true,
    10000, 'a c2d event with delivered=true');
});

test('C2D with properties reaches the client message event', T, async () => {
  const c = device();
  const got = nextEvent(inbox, 'message', (m) => m.messageId?.startsWith('c2d-'), 15000);
  await c2dSubscribed(c);
  const body = `hello ${randomUUID()}`;
  const messageId = `c2d-${randomUUID()}`;
  const data = await svc.ok({
    command: 'sendC2D', deviceId, body, messageId,
    correlationId: 'corr-c2d', userId: 'svc-user', contentType: 'text/plain', contentEncoding: 'utf-8',
    properties: { 'app-prop': 'value with spaces & more=yes', plain: 'x' },
  });
  assert.equal(data.messageId, messageId);
  assert.equal(data.delivered, true);

  const msg = await got;
  assert.equal(msg.data.toString('utf8'), body);
  assert.equal(msg.messageId, messageId);
  assert.equal(msg.correlationId, 'corr-c2d');
  assert.equal(msg.userId, 'svc-user');
  assert.equal(msg.contentType, 'text/plain');
  assert.equal(msg.contentEncoding, 'utf-8');
  assert.equal(msg.to?.toLowerCase(), `/devices/${deviceId}/messages/devicebound`);
  assert.equal(msg.properties.getValue('app-prop'), 'value with spaces & more=yes');
  assert.equal(msg.properties.getValue('plain'), 'x');
  await c.complete(msg);
});

test('closing the client is seen as a disconnected event', T, async () => {
  const c = device();
  await within(10000, c.close(), 'Client.close()');
  await svc.waitEvent((e) => e.kind === 'disconnected' && e.deviceId === deviceId && e.moduleId == null,
    10000, `a 'disconnected' event for ${deviceId}`);
});
