// Module client (azure-iot-device ModuleClient + Mqtt over TLS) against
// `twinhub serve`: telemetry, twin GET, reported, desired and a method.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  Message, desiredSubscribed, methodsSubscribed, nextEvent, startHub, within,
} from './hub.mjs';

const T = { timeout: 30000 };
let hub;
let svc;
let client;
let twin;
let deviceId;
let moduleId;

function mod() {
  assert.ok(client, 'the module client did not open (see the first test)');
  return client;
}

before(async () => {
  hub = await startHub();
  deviceId = hub.info.deviceId;
  moduleId = hub.info.moduleId;
  svc = await hub.service();
});

after(async () => {
  if (hub) await hub.stop();
});

test('module client opens over MQTT/TLS with the hub CA', T, async () => {
  assert.equal(moduleId, 'dev-module');
  assert.match(hub.info.moduleConnectionString, /(^|;)ModuleId=dev-module(;|$)/);
  const c = await hub.moduleClient();
  await within(20000, c.open(), 'ModuleClient.open()');
  client = c;
  const ev = await svc.waitEvent(
    (e) => e.kind === 'connected' && e.deviceId === deviceId && e.moduleId === moduleId,
    10000, `a 'connected' event for ${deviceId}/${moduleId}`);
  assert.equal(ev.data.clientId, `${deviceId}/${moduleId}`);
  assert.equal(ev.data.auth, 'sas');
});

test('module sendEvent becomes telemetry stamped with the module id', T, async () => {
  const body = JSON.stringify({ pressure: 1013, run: randomUUID() });
  const msg = new Message(body);
  msg.messageId = `mmid-${randomUUID()}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('source', 'module test');
  await within(10000, mod().sendEvent(msg), 'sendEvent PUBACK');

  const ev = await svc.waitEvent(
    (e) => e.kind === 'telemetry' && e.data?.systemProperties?.messageId === msg.messageId,
    10000, 'the module telemetry event');
  assert.equal(ev.deviceId, deviceId);
  assert.equal(ev.moduleId, moduleId);
  assert.ok(ev.data.topic.startsWith(`devices/${deviceId}/modules/${moduleId}/messages/events/`), ev.data.topic);
  assert.equal(ev.data.body, body);
  const sp = ev.data.systemProperties;
  assert.equal(sp.contentType, 'application/json');
  assert.equal(sp.contentEncoding, 'utf-8');
  assert.equal(sp['iothub-connection-device-id'], deviceId);
  assert.equal(sp['iothub-connection-module-id'], moduleId);
  assert.deepEqual(ev.data.properties, { source: 'module test' });
});

test('module sendOutputEvent carries the output name', T, async () => {
  const msg = new Message(`out-${randomUUID()}`);
  msg.messageId = `omid-${randomUUID()}`;
  await within(10000, mod().sendOutputEvent('out1', msg), 'sendOutputEvent PUBACK');
  const ev = await svc.waitEvent(
    (e) => e.kind === 'telemetry' && e.data?.systemProperties?.messageId === msg.messageId,
    10000, 'the output telemetry event');
  assert.equal(ev.moduleId, moduleId);
  assert.equal(ev.data.systemProperties.outputName, 'out1');
  assert.equal(ev.data.body, msg.data);
});

test('module getTwin returns the module twin, not the device twin', T, async () => {
  const marker = `mod-${randomUUID()}`;
  const updated = await svc.ok({
    command: 'updateTwin', deviceId, moduleId, patch: { properties: { desired: { marker } } },
  });
  twin = await within(10000, mod().getTwin(), 'module getTwin');
  assert.equal(twin.properties.desired.marker, marker);
  assert.equal(twin.properties.desired.$version, updated.properties.desired.$version);

  const svcTwin = await svc.ok({ command: 'getTwin', deviceId, moduleId });
  assert.equal(svcTwin.moduleId, moduleId);
  assert.equal(twin.properties.reported.$version, svcTwin.properties.reported.$version);
  const deviceTwin = await svc.ok({ command: 'getTwin', deviceId });
  assert.equal(deviceTwin.properties.desired.marker, undefined, 'device twin untouched');
});

test('module reported patch lands in the module twin with the next $version', T, async () => {
  assert.ok(twin, 'module getTwin did not succeed');
  const v0 = twin.properties.reported.$version;
  const run = randomUUID();
  await within(10000, new Promise((resolve, reject) => {
    twin.properties.reported.update({ moduleState: 'running', run }, (err) => (err ? reject(err) : resolve()));
  }), 'module reported update');

  const svcTwin = await svc.ok({ command: 'getTwin', deviceId, moduleId });
  assert.equal(svcTwin.properties.reported.$version, v0 + 1);
  assert.equal(svcTwin.properties.reported.moduleState, 'running');
  assert.equal(svcTwin.properties.reported.run, run);
  const ev = await svc.waitEvent(
    (e) => e.kind === 'reported' && e.moduleId === moduleId && e.data?.patch?.run === run,
    10000, 'the module reported event');
  assert.equal(ev.deviceId, deviceId);
  assert.equal(ev.data.version, v0 + 1);
  const deviceTwin = await svc.ok({ command: 'getTwin', deviceId });
  assert.equal(deviceTwin.properties.reported.run, undefined, 'device twin untouched');
});

test('module desired patch reaches the ModuleClient twin', T, async () => {
  assert.ok(twin, 'module getTwin did not succeed');
  const level = `lvl-${randomUUID()}`;
  const seen = nextEvent(twin, 'properties.desired', (p) => p && p.level === level, 15000);
  await desiredSubscribed(twin);
  const updated = await svc.ok({
    command: 'updateTwin', deviceId, moduleId, patch: { properties: { desired: { level } } },
  });
  const patch = await seen;
  assert.equal(patch.$version, updated.properties.desired.$version);
  assert.equal(twin.properties.desired.level, level);
});

test('module direct method via onMethod answers invokeMethod', T, async () => {
  const c = mod();
  let request;
  c.onMethod('getStatus', (req, res) => {
    request = req;
    res.send(200, { status: 'ok', module: true, got: req.payload }).catch(() => {});
  });
  await methodsSubscribed(c);
  const payload = { verbose: true, id: randomUUID() };
  const data = await svc.ok({
    command: 'invokeMethod', deviceId, moduleId, methodName: 'getStatus', payload, responseTimeoutInSeconds: 10,
  }, 20000);
  assert.equal(data.status, 200);
  assert.deepEqual(data.payload, { status: 'ok', module: true, got: payload });
  assert.equal(request.methodName, 'getStatus');
  assert.deepEqual(request.payload, payload);
});

test('a method for the module is not offered to the (offline) device', T, async () => {
  const r = await svc.command({ command: 'invokeMethod', deviceId, methodName: 'getStatus', responseTimeoutInSeconds: 5 }, 20000);
  assert.ok(r.error, `expected an error, got ${JSON.stringify(r)}`);
  assert.equal(r.errorCode, 404103);
});

test('C2D cannot be addressed to a module', T, async () => {
  const r = await svc.command({ command: 'sendC2D', deviceId, moduleId, body: 'nope' });
  assert.ok(r.error, `expected an error, got ${JSON.stringify(r)}`);
  assert.equal(r.errorCode, 400004);
});
