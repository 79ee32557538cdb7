// `twinhub serve` lifecycle (ready line, info file, --registry, SIGTERM) and
// authentication as the official SDK sees it.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  Client, HERE, Mqtt, mqtt, newKey, parseConnectionString, portIsFree, sasToken, startHub, within,
} from './hub.mjs';

const T = { timeout: 30000 };
const REGISTRY = join(HERE, 'fixtures', 'registry.json');
const fixture = JSON.parse(readFileSync(REGISTRY, 'utf8'));
const d1 = fixture.devices[0];
const m1 = d1.modules[0];
let hub;
let svc;

before(async () => {
  hub = await startHub({ registry: REGISTRY });
  svc = await hub.service();
});

after(async () => {
  if (hub) await hub.stop();
});

/** Open a device/module client with `cs`; returns the client (opened) or throws the open error. */
async function openWith(cs) {
  const isModule = /(^|;)ModuleId=/.test(cs);
  const c = isModule ? await hub.moduleClient(cs) : await hub.deviceClient(cs);
  await within(20000, c.open(), 'open()');
  return c;
}

function assertUnauthorized(err) {
  assert.equal(err.name, 'UnauthorizedError', `expected UnauthorizedError, got ${err.name}: ${err.message}`);
  return true;
}

test('serve prints the ready line last and writes a complete info file', T, () => {
  const lines = hub.out.stdout.trimEnd().split('\n');
  assert.equal(lines.at(-1).trim(), 'twinhub: ready');
  const { info } = hub;
  assert.equal(typeof info.hubName, 'string');
  assert.ok(info.hubName.length > 0 && !info.hubName.includes('/'), info.hubName);
  assert.equal(info.mqttPort, hub.mqttPort);
  assert.equal(info.mqttsPort, hub.mqttsPort);
  assert.ok(existsSync(info.caFile), `caFile ${info.caFile} exists`);
  assert.match(hub.ca, /-----BEGIN CERTIFICATE-----/);
  assert.equal(info.deviceId, 'dev-device');
  assert.equal(info.moduleId, 'dev-module');
  assert.ok(Number.isInteger(info.pid) && info.pid > 0, `pid ${info.pid}`);

  const dcs = parseConnectionString(info.deviceConnectionString);
  assert.equal(dcs.HostName, '127.0.0.1', 'the address serve binds: it resolves and is dialled as is');
  assert.equal(dcs.DeviceId, 'dev-device');
  assert.equal(dcs.GatewayHostName, `127.0.0.1:${hub.mqttsPort}`);
  assert.equal(Buffer.from(dcs.SharedAccessKey, 'base64').length >= 16, true, 'device key is base64');
  const mcs = parseConnectionString(info.moduleConnectionString);
  assert.equal(mcs.DeviceId, 'dev-device');
  assert.equal(mcs.ModuleId, 'dev-module');
  assert.equal(mcs.GatewayHostName, dcs.GatewayHostName);
  const scs = parseConnectionString(info.serviceConnectionString);
  assert.equal(scs.SharedAccessKeyName, 'iothubowner');
  assert.ok(scs.SharedAccessKey && scs.HostName, info.serviceConnectionString);
});

test('--registry loads the fixture devices and modules', T, async () => {
  const devices = await svc.ok({ command: 'listDevices' });
  assert.ok(Array.isArray(devices));
  assert.ok(devices.some((d) => d.deviceId === d1.deviceId), `listDevices has ${d1.deviceId}`);
  const modules = await svc.ok({ command: 'listModules', deviceId: d1.deviceId });
  assert.ok(modules.some((m) => m.moduleId === m1.moduleId), `listModules has ${m1.moduleId}`);
});

test('registry device opens with its primary and with its secondary key', T, async () => {
  for (const key of [d1.authentication.symmetricKey.primaryKey, d1.authentication.symmetricKey.secondaryKey]) {
    const c = await openWith(hub.connectionString(d1.deviceId, key));
    await within(10000, c.close(), 'close()');
  }
});

test('registry module opens with its key', T, async () => {
  const c = await openWith(hub.connectionString(d1.deviceId, m1.authentication.symmetricKey.primaryKey, m1.moduleId));
  await within(10000, c.close(), 'close()');
});

test('wrong device key: open fails with UnauthorizedError and a refused event', T, async () => {
  const mark = svc.events.length;
  await assert.rejects(openWith(hub.connectionString(d1.deviceId, newKey())), assertUnauthorized);
  const ev = await svc.waitEvent(
    (e) => svc.events.indexOf(e) >= mark && e.kind === 'refused' && e.data?.clientId === d1.deviceId,
    10000, `a 'refused' event for ${d1.deviceId}`);
  assert.equal(ev.deviceId, d1.deviceId);
  assert.equal(typeof ev.data.reason, 'string');
});

test('the dev device with a wrong key is refused too', T, async () => {
  await assert.rejects(openWith(hub.connectionString(hub.info.deviceId, newKey())), assertUnauthorized);
});

test('unregistered device id: open fails with UnauthorizedError', T, async () => {
  await assert.rejects(openWith(hub.connectionString(`ghost-${randomUUID().slice(0, 8)}`, newKey())), assertUnauthorized);
});

test("module presenting its device's key: open fails with UnauthorizedError", T, async () => {
  const cs = hub.connectionString(d1.deviceId, d1.authentication.symmetricKey.primaryKey, m1.moduleId);
  await assert.rejects(openWith(cs), assertUnauthorized);
});

test('the TLS listener is not trusted without the hub CA', T, async () => {
  const c = Client.fromConnectionString(hub.connectionString(d1.deviceId, d1.authentication.symmetricKey.primaryKey), Mqtt);
  hub.clients.push(c);
  await assert.rejects(within(20000, c.open(), 'open() without CA'), (err) => {
    assert.match(`${err.message} ${err.transportError?.message ?? ''}`, /certificate/i);
    return true;
  });
});

test('a device trusting the CA through NODE_EXTRA_CA_CERTS connects and sends', T, async () => {
  const messageId = `extra-ca-${randomUUID()}`;
  const cs = hub.connectionString(d1.deviceId, d1.authentication.symmetricKey.primaryKey);
  const { stdout } = await within(20000, new Promise((resolve, reject) => {
    execFile(process.execPath, [join(HERE, 'fixtures', 'extra-ca-client.mjs'), cs, messageId], {
      cwd: HERE, env: { ...process.env, NODE_EXTRA_CA_CERTS: hub.info.caFile }, timeout: 19000,
    }, (err, out, errOut) => (err ? reject(new Error(`client failed: ${errOut || err.message}`)) : resolve({ stdout: out })));
  }), 'the NODE_EXTRA_CA_CERTS client');
  assert.match(stdout, /sent/);
  const ev = await svc.waitEvent(
    (e) => e.kind === 'telemetry' && e.data?.systemProperties?.messageId === messageId, 10000, 'its telemetry event');
  assert.equal(ev.deviceId, d1.deviceId);
});

test('a service principal with a wrong key is refused', T, async () => {
  const conn = mqtt.connect(`mqtt://127.0.0.1:${hub.mqttPort}`, {
    protocolVersion: 4,
    clientId: `svc-bad-${randomUUID().slice(0, 8)}`,
    username: hub.info.hubName,
    password: sasToken(hub.info.hubName, newKey(), 'iothubowner'),
    reconnectPeriod: 0,
    connectTimeout: 10000,
  });
  try {
    const outcome = await within(10000, new Promise((resolve) => {
      conn.once('connect', () => resolve('connected'));
      conn.once('error', (err) => resolve(err));
    }), 'CONNACK for a bad service token');
    assert.notEqual(outcome, 'connected');
    assert.ok([4, 5].includes(outcome.code), `CONNACK code ${outcome.code}: ${outcome.message}`);
  } finally {
    conn.end(true);
  }
});

test('SIGTERM stops the hub and frees both ports', T, async () => {
  const { code, signal } = await hub.stop();
  assert.ok(code === 0 || signal === 'SIGTERM', `exit code ${code}, signal ${signal}`);
  for (const port of [hub.mqttPort, hub.mqttsPort]) {
    let free = false;
    const deadline = Date.now() + 5000;
    while (!(free = await portIsFree(port)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(free, `port ${port} is free after SIGTERM`);
  }
});
